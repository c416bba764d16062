"""Rate limits any service can use: a token bucket (no clock of its own: callers pass the time)."""

from __future__ import annotations


class TokenBucket:
    """Flood control: ``burst`` lines at once, refilled at ``rate`` lines a second."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.last) * self.rate
        self.last = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1:
            self.tokens = tokens - 1
            return True
        self.tokens = tokens
        return False
