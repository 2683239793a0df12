"""FailoverLimiter: per-process limits while the shared backend is down, and back after."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from keyrack.domain.limits import Admission, Decision, RateLimitPolicy
from keyrack.ratelimit.failover import FailoverLimiter
from keyrack.ratelimit.memory import MemoryLimiter

pytestmark = pytest.mark.anyio

POLICY = RateLimitPolicy(rate_per_second=100, concurrency=1)


class FlakyLimiter(MemoryLimiter):
    """A stand-in for the shared backend that can be switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.released: list[str] = []

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        if not self.up:
            raise RedisConnectionError("connection refused")
        return await super().acquire(bucket, policy)

    def release(self, bucket: str, lease: str) -> None:
        self.released.append(lease)
        super().release(bucket, lease)


async def test_leases_go_back_to_the_limiter_that_issued_them() -> None:
    primary, fallback = FlakyLimiter(), MemoryLimiter()
    limiter = FailoverLimiter(primary, fallback)
    shared = await limiter.acquire("k", POLICY)

    primary.up = False
    local = await limiter.acquire("k", POLICY)
    assert limiter.down and local.allowed and local.lease is not None
    refused = await limiter.acquire("k", POLICY)  # the fallback holds its own in-flight slot
    assert refused.decision is Decision.CONCURRENCY_LIMITED

    limiter.release("k", local.lease)
    assert primary.released == []
    assert (await fallback.acquire("k", POLICY)).allowed  # the local slot was freed

    primary.up = True
    assert shared.lease is not None
    limiter.release("k", shared.lease)
    assert primary.released == [shared.lease]
    assert (await limiter.acquire("k", POLICY)).allowed and not limiter.down
