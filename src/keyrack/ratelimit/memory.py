"""Throttling for a single process: plain dictionaries, no locks (one event loop)."""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from keyrack.domain.limits import Admission, Decision, RateLimitPolicy
from keyrack.ratelimit.base import CONCURRENCY_RETRY_SECONDS, DEFAULT_LEASE_SECONDS, MICRO


@dataclass(slots=True)
class _Bucket:
    tokens: int
    """Millionths of a token, as of ``stamp``."""
    stamp: int
    """Microsecond of the last acquire; also orders buckets for idle eviction."""
    leases: dict[str, int] = field(default_factory=dict)
    """Lease id -> expiry microsecond."""


class MemoryLimiter:
    """Per-process limiter (see ``keyrack.ratelimit.base`` for the semantics).

    A bucket untouched for ``max(1 s, lease_seconds)`` is full with no live lease,
    i.e. indistinguishable from a new one, so it is dropped: memory is bounded by
    the number of buckets active within that window.
    """

    def __init__(
        self,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._lease_us = math.ceil(lease_seconds * MICRO)
        self._idle_us = max(MICRO, self._lease_us)
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lease_ids = itertools.count(1)
        self._evict_at = 0
        """No bucket can be idle long enough before this microsecond."""

    def __len__(self) -> int:
        """Number of buckets currently remembered."""
        return len(self._buckets)

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        now = round(self._clock() * MICRO)
        if now >= self._evict_at:
            self._evict_idle(now)
        rate = policy.rate_per_second
        capacity = rate * MICRO
        buckets = self._buckets
        state = buckets.get(bucket)
        if state is None:
            state = buckets[bucket] = _Bucket(tokens=capacity, stamp=now)
        else:
            buckets.move_to_end(bucket)
            elapsed = now - state.stamp
            if elapsed > 0:
                state.stamp = now
                # clamped: a bucket is full one second after its last admission anyway
                tokens = state.tokens + min(elapsed, MICRO) * rate
                state.tokens = tokens if tokens < capacity else capacity

        leases = state.leases
        if len(leases) >= policy.concurrency:
            for dead in [lease for lease, expiry in leases.items() if expiry <= now]:
                del leases[dead]
            if len(leases) >= policy.concurrency:
                return Admission(
                    Decision.CONCURRENCY_LIMITED,
                    state.tokens // MICRO,
                    CONCURRENCY_RETRY_SECONDS,
                    policy,
                )
        if state.tokens < MICRO:
            wait_us = -(-(MICRO - state.tokens) // rate)
            return Admission(Decision.RATE_LIMITED, 0, wait_us / MICRO, policy)

        tokens = state.tokens = state.tokens - MICRO
        lease = str(next(self._lease_ids))
        leases[lease] = now + self._lease_us
        full_us = -(-(capacity - tokens) // rate)
        return Admission(Decision.ALLOWED, tokens // MICRO, full_us / MICRO, policy, lease)

    def release(self, bucket: str, lease: str) -> None:
        state = self._buckets.get(bucket)
        if state is not None:
            state.leases.pop(lease, None)

    async def aclose(self) -> None:
        self._buckets.clear()

    def _evict_idle(self, now: int) -> None:
        """Drop buckets idle long enough to be full with only dead leases (oldest first);
        note when the next one may be due."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest.stamp < self._idle_us:
                self._evict_at = oldest.stamp + self._idle_us
                return
            buckets.popitem(last=False)
        self._evict_at = now + self._idle_us
