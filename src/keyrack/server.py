"""The composition root: ``create_app(settings)`` builds one Keyrack ASGI app.

It puts the parts together, and nothing else: the HTTP API (``keyrack.http.api``) and
the console (``keyrack.console``) as one app behind the gateway, and the runtime they
share: the key cache and its verifier, the limiter (in-process, or through Redis with
per-process failover), the cache-invalidation relay, the last-used write-behind, the
job worker (unless ``KEYRACK_IN_PROCESS_WORKER=false``) and the jobs' wake-ups. What
``keyrack serve`` runs is this factory under uvicorn (``keyrack.http.protocol``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import ConnectionPool
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import event

from keyrack import console
from keyrack import logging as keyrack_logging
from keyrack.cache.imported import ImportedDigests
from keyrack.cache.keycache import CachedVerifier, KeyCache
from keyrack.cache.relay import RedisListener, RedisPublisher
from keyrack.config import Settings
from keyrack.domain.events import Event
from keyrack.http import api
from keyrack.http.gateway import Gateway
from keyrack.http.metrics import Metrics
from keyrack.http.routes.introspection import RenderedSelf, render_self
from keyrack.jobs import Worker, wakeup
from keyrack.ratelimit.failover import FailoverLimiter
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.ratelimit.redis import RedisLimiter
from keyrack.services import jobs
from keyrack.services.context import Context
from keyrack.services.introspection import load_self
from keyrack.services.key_import import imported_since
from keyrack.services.keys import find_identity
from keyrack.services.last_used import LastUsedBuffer

_SUBSCRIBE_WAIT_SECONDS = 2.0
_REDIS_CONNECTIONS = 128
log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, ctx: Context | None = None, worker: bool | None = None
) -> FastAPI:
    """Build the app for ``settings`` (or a ready ``ctx``, as tests do).

    ``worker``: run the job queue in this process; by default a real server does (unless
    ``KEYRACK_IN_PROCESS_WORKER=false``) and an app built on a test's ``ctx`` does not.
    """
    server = ctx is None  # a real server, not a test
    if ctx is None:
        ctx = Context.from_settings(settings or Settings())
        keyrack_logging.configure(ctx.settings.log_level)
    ctx.settings.check_deployable()
    if worker is None:
        worker = server and ctx.settings.in_process_worker
    key_cache: KeyCache[RenderedSelf] = KeyCache(
        lambda digest: find_identity(ctx, digest),
        lambda identity: render_self(load_self(ctx, identity)),
        ttl=ctx.settings.key_cache_ttl_seconds,
        max_entries=ctx.settings.key_cache_max_entries,
    )
    ctx.bus.subscribe(key_cache.invalidate)
    last_used = LastUsedBuffer(ctx)
    imported = ImportedDigests(
        lambda after: imported_since(ctx, after), interval=lambda: key_cache.ttl
    )
    ctx.bus.subscribe(imported.poke)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            _imported_digests(imported),
            _runtime(
                app,
                ctx,
                key_cache,
                last_used,
                jobs.worker(ctx) if worker else None,
                also=imported.poke,
            ),
        ):
            yield

    app = api.create_api(lifespan)
    app.state.ctx = ctx
    console.install(app)
    app.state.key_cache = key_cache
    app.state.last_used = last_used
    app.state.metrics = Metrics()
    count_statement = app.state.metrics.db_statements.inc
    event.listen(ctx.db.engine, "before_cursor_execute", lambda *_: count_statement())
    # the active limiter; replaced by a RedisLimiter at startup when Redis is configured
    app.state.limiter = MemoryLimiter(lease_seconds=ctx.settings.concurrency_lease_seconds)
    app.state.imported = imported
    app.state.verifier = CachedVerifier(
        key_cache, ctx.clock, on_miss=app.state.metrics.cache_misses.inc, imported=imported
    )
    app.add_middleware(
        Gateway,
        ctx=ctx,
        verifier=app.state.verifier,
        last_used=last_used,
        metrics=app.state.metrics,
        public_paths=api.public_paths(),
        trust_forwarded_for=ctx.settings.trust_forwarded_for,
    )
    if server:
        # What is built so far lives as long as the process: keep it out of the cyclic
        # collector's sight, so full collections stay short (a p99 matter under load).
        gc.collect()
        gc.freeze()
    return app


@asynccontextmanager
async def _imported_digests(imported: ImportedDigests) -> AsyncIterator[None]:
    """Read the imported keys' digests before serving, then keep them in step."""
    await imported.start()
    task = asyncio.create_task(imported.run(), name="keyrack-imported-digests")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def _runtime(
    app: FastAPI,
    ctx: Context,
    key_cache: KeyCache[Any],
    last_used: LastUsedBuffer,
    worker: Worker | None,
    *,
    also: Callable[[Event | None], None] | None = None,
) -> AsyncIterator[None]:
    """Start the limiter, the last-used flusher, the invalidation listener and the job
    worker; stop them, flushing what is pending, at shutdown."""
    settings = ctx.settings
    tasks = [asyncio.create_task(last_used.run(), name="keyrack-last-used")]
    redis: AsyncRedis | None = None
    relay: AsyncRedis | None = None
    publisher: RedisPublisher | None = None
    wakeups: wakeup.RedisPublisher | None = None
    if settings.redis_url:
        # The limiter sends each event-loop tick's calls as one pipeline under one timeout
        # of its own (per-command socket timeouts would arm a timer per call), so a
        # handful of connections are busy at once. A plain pool (a blocking one arms a
        # timer per checkout) refusing past the cap only sends the limiter to its
        # per-process fallback. The invalidation listener blocks on its reads by design.
        redis = AsyncRedis.from_pool(
            ConnectionPool.from_url(
                settings.redis_url, max_connections=_REDIS_CONNECTIONS, socket_timeout=None
            )
        )
        app.state.limiter = FailoverLimiter(
            RedisLimiter(redis, lease_seconds=settings.concurrency_lease_seconds),
            MemoryLimiter(lease_seconds=settings.concurrency_lease_seconds),
        )
        publisher = RedisPublisher(settings.redis_url)
        ctx.bus.subscribe(publisher)
        # the listener has a connection of its own, named so operators can tell it apart
        relay = AsyncRedis.from_url(
            settings.redis_url, client_name=f"keyrack-relay-{publisher.origin}"
        )
        listener = RedisListener(
            relay,
            key_cache,
            origin=publisher.origin,
            live_ttl=settings.key_cache_safety_ttl_minutes * 60,
            fallback_ttl=settings.key_cache_ttl_seconds,
            also=also,
        )
        app.state.relay = listener
        tasks.append(asyncio.create_task(listener.run(), name="keyrack-invalidation"))
        try:
            await asyncio.wait_for(listener.subscribed.wait(), timeout=_SUBSCRIBE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("serving before the cache invalidation channel is up")
        # jobs enqueued here wake workers in other processes (PostgreSQL's NOTIFY does
        # too; through Redis, so do those on one SQLite file)
        wakeups = wakeup.RedisPublisher(settings.redis_url)
        wakeup.add_publisher(ctx.db.engine.url, wakeups)
    if worker is not None:
        worker.start()  # on SQLite it is woken directly by this process's commits
    try:
        yield
    finally:
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        if wakeups is not None:
            wakeup.remove_publisher(ctx.db.engine.url, wakeups)
            wakeups.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await key_cache.aclose()
        await last_used.aclose()
        await app.state.limiter.aclose()
        if publisher is not None:
            publisher.close()
        if redis is not None:
            await redis.aclose()
        if relay is not None:
            await relay.aclose()
