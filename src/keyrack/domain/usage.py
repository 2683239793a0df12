"""Usage analytics per key (SPEC §6.3): what one minute of a key's traffic is counted as.

Each instance tallies, per key and minute, requests, successes (below 400), 429s, 4xx
by problem code and a fixed latency histogram; tallies from any number of instances
add up exactly (the histogram too), so p50/p99 of a merged minute are those of its
requests, to the histogram's resolution: a quantile is reported as the upper bound of
the bucket it falls in. Minutes are kept 7 days, then rolled up to hours; everything
goes after 90 days.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 60000)
"""Upper bounds (milliseconds) of the latency buckets; slower requests count in the last."""
BUCKETS = len(LATENCY_BOUNDS_MS)
_BOUNDS_SECONDS = tuple(bound / 1000 for bound in LATENCY_BOUNDS_MS)

REQUESTS, SUCCESSES, RATE_LIMITED, FIRST_BUCKET = 0, 1, 2, 3
"""Positions in a tally: three counters, then the histogram."""
TALLY_LENGTH = FIRST_BUCKET + BUCKETS

MINUTES_KEPT = timedelta(days=7)
KEPT = timedelta(days=90)
MAX_POINTS = 2000
"""The longest series one request may ask for."""


class Granularity(enum.StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def step(self) -> timedelta:
        return _STEPS[self]

    def floor(self, moment: datetime) -> datetime:
        """The start of the bucket ``moment`` falls in (UTC)."""
        moment = moment.astimezone(UTC)
        if self is Granularity.MINUTE:
            return moment.replace(second=0, microsecond=0)
        if self is Granularity.HOUR:
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)


_STEPS = {
    Granularity.MINUTE: timedelta(minutes=1),
    Granularity.HOUR: timedelta(hours=1),
    Granularity.DAY: timedelta(days=1),
}


def new_tally() -> list[int]:
    return [0] * TALLY_LENGTH


def tally(counts: list[int], status: int, seconds: float) -> None:
    """Count one request (its response status and how long it took) into ``counts``."""
    counts[REQUESTS] += 1
    if status < 400:
        counts[SUCCESSES] += 1
    elif status == 429:
        counts[RATE_LIMITED] += 1
    counts[FIRST_BUCKET + min(bisect_left(_BOUNDS_SECONDS, seconds), BUCKETS - 1)] += 1


def add(into: list[int], more: Sequence[int]) -> None:
    for i, value in enumerate(more):
        into[i] += value


def quantile_ms(histogram: Sequence[int], q: float) -> int | None:
    """The upper bound of the bucket holding the ``q`` quantile; None without requests."""
    total = sum(histogram)
    if not total:
        return None
    wanted = q * total
    seen = 0
    for bound, count in zip(LATENCY_BOUNDS_MS, histogram, strict=True):
        seen += count
        if seen >= wanted:
            return bound
    return LATENCY_BOUNDS_MS[-1]
