"""A shared limiter that falls back to per-process limits while its backend is down.

When Redis cannot be reached, refusing every request would turn a cache outage
into an API outage, and admitting everything would drop the limits; limiting per
process keeps them per instance until Redis answers again. Leases handed out by
the fallback carry a marker, so each release goes back to the limiter that
issued it.
"""

from __future__ import annotations

import logging

from redis import RedisError

from keyrack.domain.limits import Admission, RateLimitPolicy
from keyrack.ratelimit.base import Limiter
from keyrack.ratelimit.memory import MemoryLimiter

log = logging.getLogger(__name__)

_LOCAL = "local:"


class FailoverLimiter:
    def __init__(self, primary: Limiter, fallback: MemoryLimiter) -> None:
        self.primary = primary
        self.fallback = fallback
        self.down = False
        """True while the primary is failing (logged once per outage)."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        try:
            admission = await self.primary.acquire(bucket, policy)
        except (RedisError, OSError) as exc:
            if not self.down:
                log.error("limiter unavailable, limiting per process until it is back: %r", exc)
                self.down = True
        else:
            if self.down:
                log.warning("limiter is back")
                self.down = False
            return admission
        admission = await self.fallback.acquire(bucket, policy)
        if admission.lease is None:
            return admission
        return admission._replace(lease=_LOCAL + admission.lease)

    def release(self, bucket: str, lease: str) -> None:
        if lease.startswith(_LOCAL):
            self.fallback.release(bucket, lease.removeprefix(_LOCAL))
        else:
            self.primary.release(bucket, lease)

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()
