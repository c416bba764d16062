# -*- test-case-name: tests.test_chat,tests.test_connections -*-
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


class Episodes:
    """
    Says when to log a recurring condition: the first time in ``quiet``
    seconds for each kind, then not again until it has been quiet that long,
    with how many went unsaid meanwhile.  Bounded: at most ``kinds`` kinds are
    remembered (the oldest forgotten first).
    """

    def __init__(self, quiet: float = 60.0, kinds: int = 256) -> None:
        self.quiet = quiet
        self.kinds = kinds
        self._last: dict[object, float] = {}
        self._unsaid: dict[object, int] = {}

    @staticmethod
    def unsaidNote(unsaid: int) -> str:
        """What a log line adds about the ones left unsaid: nothing for none."""
        if not unsaid:
            return ""
        return f" ({unsaid} more like it since the last report)"

    def due(self, kind: object, now: float) -> int | None:
        """
        None if this occurrence of ``kind`` is not to be logged; else how many
        occurrences went unlogged since the last one that was (0 the first time).
        """
        last = self._last.get(kind)
        if last is not None and now - last < self.quiet:
            self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
            return None
        if last is None and len(self._last) >= self.kinds:
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._unsaid.pop(oldest, None)
        self._last.pop(kind, None)
        self._last[kind] = now
        return self._unsaid.pop(kind, 0)
