"""Fixtures for the limiter contract: every contract test runs on both backends."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pytest
from redis.asyncio import Redis

from keyrack.ratelimit.base import DEFAULT_LEASE_SECONDS, Limiter
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.ratelimit.redis import RedisLimiter
from tests.conftest import REDIS_SKIP, REDIS_URL


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MakeLimiter(Protocol):
    def __call__(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> Limiter: ...


class Connect(Protocol):
    def __call__(self) -> Redis: ...


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip(REDIS_SKIP)
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix owned by this test; its keys are deleted afterwards."""
    prefix = f"keyrack-test:{uuid.uuid4().hex}:"
    yield prefix
    admin = Redis.from_url(redis_url)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


@pytest.fixture
async def connect(redis_url: str) -> AsyncIterator[Connect]:
    """Open Redis clients (each its own connection pool, like separate instances)."""
    clients: list[Redis] = []

    def open_client() -> Redis:
        client = Redis.from_url(redis_url)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.aclose()


@pytest.fixture
def make_memory_limiter() -> MakeLimiter:
    def make(
        *, lease_seconds: float = DEFAULT_LEASE_SECONDS, clock: Callable[[], float] | None = None
    ) -> Limiter:
        return MemoryLimiter(lease_seconds=lease_seconds, clock=clock or time.monotonic)

    return make


@pytest.fixture
async def make_redis_limiter(connect: Connect, redis_prefix: str) -> AsyncIterator[MakeLimiter]:
    """RedisLimiters on separate connections sharing one prefix; clock None = Redis TIME."""
    limiters: list[RedisLimiter] = []

    def make(
        *, lease_seconds: float = DEFAULT_LEASE_SECONDS, clock: Callable[[], float] | None = None
    ) -> Limiter:
        limiter = RedisLimiter(
            connect(), lease_seconds=lease_seconds, prefix=redis_prefix, clock=clock
        )
        limiters.append(limiter)
        return limiter

    yield make
    for limiter in limiters:
        await limiter.aclose()


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> MakeLimiter:
    factory: MakeLimiter = request.getfixturevalue(f"make_{request.param}_limiter")
    return factory


@pytest.fixture
def limiter(make_limiter: MakeLimiter, clock: FakeClock) -> Limiter:
    """A limiter with default lease_seconds on the fake ``clock``."""
    return make_limiter(clock=clock)
