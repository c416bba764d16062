# -*- test-case-name: tests.test_shutdown -*-
"""A latency histogram cheap enough for a per-request hot path.

``prometheus_client.Histogram.observe`` takes a lock and walks label
dictionaries on every call; here an observation is one ``bisect`` and two
additions, and the metrics endpoint reads the buckets when it is scraped.
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds of the buckets, in seconds (Prometheus ``le``); one more bucket holds the rest.
BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)


class LatencyHistogram:
    """Seconds per request in Prometheus's buckets (:data:`BOUNDS`): counts per bucket and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    def observeMany(self, seconds: float, times: int) -> None:
        """``times`` observations of ``seconds`` (requests answered together)."""
        self.counts[bisect_left(BOUNDS, seconds)] += times
        self.sum += seconds * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Buckets as Prometheus wants them: (upper bound, observations at or under it), ending with +Inf."""
        total = 0
        buckets = []
        for bound, count in zip((*(repr(b) for b in BOUNDS), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
