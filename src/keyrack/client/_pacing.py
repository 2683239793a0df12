"""Client-side pacing: stay under the key's limits instead of bouncing off them.

A ``Pacer`` is shared by every thread using one ``Client``. Each request first
takes a slot of the concurrency gate (at most ``concurrency`` in flight), then a
start time from a token bucket refilled at ``rate_per_second`` and holding one
token, i.e. starts are spaced ``1 / rate_per_second`` apart. The server's bucket
holds ``rate_per_second`` tokens, so evenly spaced starts never drain it, even
when network jitter bunches a few requests together on arrival.

After a 429 the client calls ``hold(retry_after)``: no thread starts a request
before that moment has passed.
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
        self._interval = 1 / rate_per_second if rate_per_second else 0.0
        self._gate = threading.BoundedSemaphore(concurrency) if concurrency else None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = -math.inf
        """Earliest start the bucket grants to the next request."""
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
            if self._gate is not None:
                self._gate.release()

    def hold(self, seconds: float) -> None:
        """Let no request start for ``seconds`` (the server's ``Retry-After``)."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)

    def _reserve(self) -> float:
        """Book the next start time; returns how long to wait for it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start, self._not_before)
            self._next_start = start + self._interval
            return start - now

    def _held_for(self) -> float:
        with self._lock:
            return self._not_before - self._clock()


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
