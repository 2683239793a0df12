"""The gateway's runtime: what admits a request, built and run the same way by
``keyrack serve`` (``keyrack.server``) and by an app embedding the gateway
(``keyrack.embed``).

The key cache (misses read from the database; ``view`` renders what the cache keeps
beside each identity), the imported keys' digests it checks, the verifier over both,
the last-use and usage write-behind, and the limiter: in-process, or through Redis
with per-process failover. With Redis, ``start`` also subscribes the relay that keeps
every instance's cache in step (waiting up to ``SUBSCRIBE_WAIT_SECONDS`` for it) and
publishes this process's own key changes to the others. ``aclose`` stops it all,
flushing what is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from redis.asyncio import ConnectionPool
from redis.asyncio import Redis as AsyncRedis

from keyrack.cache.imported import ImportedDigests
from keyrack.cache.keycache import CachedVerifier, KeyCache
from keyrack.cache.relay import RedisListener, RedisPublisher
from keyrack.domain.verification import KeyIdentity
from keyrack.ratelimit.base import Limiter
from keyrack.ratelimit.failover import FailoverLimiter
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.ratelimit.redis import RedisLimiter
from keyrack.services.context import Context
from keyrack.services.key_import import imported_since
from keyrack.services.keys import find_identity
from keyrack.services.last_used import LastUsedBuffer

SUBSCRIBE_WAIT_SECONDS = 2.0
REDIS_CONNECTIONS = 128
"""The limiter's Redis pool: it sends each event-loop turn's calls as one pipeline on a
connection of its own, so only a few are busy at once; a plain pool (a blocking one
arms a timer per checkout) refusing past the cap only sends it to its fallback."""

log = logging.getLogger(__name__)

View = TypeVar("View")


class GatewayRuntime(Generic[View]):
    def __init__(
        self,
        ctx: Context,
        view: Callable[[KeyIdentity], View],
        *,
        on_miss: Callable[[], None] | None = None,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.key_cache: KeyCache[View] = KeyCache(
            lambda digest: find_identity(ctx, digest),
            view,
            ttl=settings.key_cache_ttl_seconds,
            max_entries=settings.key_cache_max_entries,
        )
        ctx.bus.subscribe(self.key_cache.invalidate)
        self.imported = ImportedDigests(
            lambda after: imported_since(ctx, after), interval=lambda: self.key_cache.ttl
        )
        ctx.bus.subscribe(self.imported.poke)
        self.verifier = CachedVerifier(
            self.key_cache, ctx.clock, on_miss=on_miss, imported=self.imported
        )
        self.last_used = LastUsedBuffer(ctx)
        self.limiter: Limiter = MemoryLimiter(lease_seconds=settings.concurrency_lease_seconds)
        """In-process until ``start`` puts the Redis one (with its fallback) in its place."""
        self.relay: RedisListener | None = None
        """The invalidation relay, once started with Redis."""
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None] | None]] = []

    async def start(self) -> None:
        """Read the imported digests, start the write-behind, and with Redis the shared
        limiter, the publisher and the relay."""
        settings = self.ctx.settings
        await self.imported.start()
        self._tasks += [
            asyncio.create_task(self.imported.run(), name="keyrack-imported-digests"),
            asyncio.create_task(self.last_used.run(), name="keyrack-last-used"),
        ]
        if not settings.redis_url:
            return
        redis = AsyncRedis.from_pool(
            ConnectionPool.from_url(
                settings.redis_url, max_connections=REDIS_CONNECTIONS, socket_timeout=None
            )
        )
        lease = settings.concurrency_lease_seconds
        self.limiter = FailoverLimiter(
            RedisLimiter(redis, lease_seconds=lease), MemoryLimiter(lease_seconds=lease)
        )
        publisher = RedisPublisher(settings.redis_url)
        self.ctx.bus.subscribe(publisher)  # a key changed here reaches every instance
        # the relay has a connection of its own, named so operators can tell it apart
        relay = AsyncRedis.from_url(
            settings.redis_url, client_name=f"keyrack-relay-{publisher.origin}"
        )
        self._closers += [publisher.close, redis.aclose, relay.aclose]
        self.relay = RedisListener(
            relay,
            self.key_cache,
            origin=publisher.origin,
            live_ttl=settings.key_cache_safety_ttl_minutes * 60,
            fallback_ttl=settings.key_cache_ttl_seconds,
            also=self.imported.poke,
        )
        self._tasks.append(asyncio.create_task(self.relay.run(), name="keyrack-invalidation"))
        try:
            await asyncio.wait_for(self.relay.subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("admitting requests before the cache invalidation channel is up")

    async def aclose(self) -> None:
        """Stop what ``start`` started; the pending last uses and usage are written."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.key_cache.aclose()
        await self.last_used.aclose()
        await self.limiter.aclose()
        for close in self._closers:
            result = close()
            if result is not None:
                await result
        self._closers.clear()
