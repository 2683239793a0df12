"""Client-side pacing: stay under the key's limits instead of bouncing off them.

A ``Pacer`` is shared by every thread using one ``Client``. Each request first
takes a slot of the concurrency gate (at most ``concurrency`` in flight), then a
start time from a token bucket holding one token and refilled at ``HEADROOM``
times ``rate_per_second``: starts are evenly spaced, 5% wider than the limit
allows. The server's bucket holds ``rate_per_second`` tokens, so evenly spaced
starts never drain it while it holds two or more: an early arrival spends a token
saved up.

A key below 2 requests/second has a one-token bucket, and no spacing of *starts*
can be wide enough for it: the server counts from when the previous request
reached it, and a request can take longer to get there than the next one (the
first on a connection, a key not yet in the server's cache). So at such a rate a
request also starts no sooner than one interval after the previous one *ended*,
when the server had certainly counted it; with ``concurrency=1`` this holds
whatever the network does, and costs a round trip per interval.

After a 429 the client calls ``hold(retry_after)``: no thread starts a request
before that moment has passed. When the server's ``RateLimit-Policy`` header
shows the key allows fewer requests per second than the pacer's rate, the client
calls ``tighten`` so a stricter key costs no 429s; the pacer never speeds up
beyond the rate it was given.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_RETRY_AFTER = 1.0
HEADROOM = 0.95
"""Fraction of the configured rate actually used, for arrival jitter."""
ONE_TOKEN_BELOW = 2
"""Rates (per second) below this have a one-token bucket on the server: paced from each
request's end too."""


class Pacer:
    """Token bucket plus concurrency gate; ``None`` turns either off."""

    def __init__(
        self,
        rate_per_second: float | None = 5,
        concurrency: int | None = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second is not None and not rate_per_second > 0:
            raise ValueError("rate_per_second must be positive (or None for no pacing)")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1 (or None for no limit)")
        self.rate_per_second = rate_per_second
        self.concurrency = concurrency
        self._interval = 1 / (rate_per_second * HEADROOM) if rate_per_second else 0.0
        self._gate = threading.BoundedSemaphore(concurrency) if concurrency else None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_start = -math.inf
        """Start time granted to the latest request."""
        self._last_end = -math.inf
        """When the latest request ended."""
        self._not_before = -math.inf
        """Set by ``hold``: nothing starts earlier."""

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a free in-flight slot and for the request's turn, then hold the slot."""
        if self._gate is not None:
            self._gate.acquire()
        try:
            wait = self._reserve()
            while wait > 0:
                self._sleep(wait)
                wait = self._held_for()
            yield
        finally:
            with self._lock:
                self._last_end = max(self._last_end, self._clock())
            if self._gate is not None:
                self._gate.release()

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` (the server's ``Retry-After``)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def tighten(self, rate_per_second: float) -> None:
        """Slow down to ``rate_per_second`` if that is stricter (no effect when pacing is off)."""
        with self._lock:
            if self.rate_per_second is not None and 0 < rate_per_second < self.rate_per_second:
                self.rate_per_second = rate_per_second
                self._interval = 1 / (rate_per_second * HEADROOM)

    def _reserve(self) -> float:
        """Book the next start time; returns how long to wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._last_start + self._interval, self._not_before)
            if self.rate_per_second is not None and self.rate_per_second < ONE_TOKEN_BELOW:
                start = max(start, self._last_end + self._interval)
            self._last_start = start
            return start - now

    def _held_for(self) -> float:
        with self._lock:
            return self._not_before - self._clock()


def policy_rate(header: str) -> float | None:
    """Requests per second of the strictest windowed quota in a ``RateLimit-Policy`` header.

    ``"key";q=5;w=1, "inflight";q=1`` gives 5.0: only items with both a quota
    ``q`` and a window ``w`` (seconds) are rates; anything unreadable is ignored.
    """
    rates = []
    for item in header.split(","):
        params = dict(part.strip().partition("=")[::2] for part in item.split(";")[1:])
        try:
            quota, window = float(params["q"]), float(params["w"])
        except (KeyError, ValueError):
            continue
        if quota > 0 and window > 0 and math.isfinite(quota / window):
            rates.append(quota / window)
    return min(rates, default=None)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER
    return max(0.0, seconds)
