"""The composition root: ``create_app(settings)`` builds one Keyrack ASGI app.

It puts the parts together, and nothing else: the HTTP API (``keyrack.http.api``) and
the console (``keyrack.console``) as one app behind the gateway, the gateway's runtime
(``keyrack.http.runtime``: key cache, verifier, limiter, relay, write-behind), the job
worker (unless ``KEYRACK_IN_PROCESS_WORKER=false``) and the jobs' wake-ups. What
``keyrack serve`` runs is this factory under uvicorn (``keyrack.http.protocol``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event

from keyrack import console
from keyrack import logging as keyrack_logging
from keyrack.config import Settings
from keyrack.http import api
from keyrack.http.gateway import Gateway
from keyrack.http.metrics import Metrics
from keyrack.http.routes.introspection import RenderedSelf, render_self
from keyrack.http.runtime import GatewayRuntime
from keyrack.jobs import Worker, wakeup
from keyrack.services import jobs
from keyrack.services.context import Context
from keyrack.services.introspection import load_self


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
    metrics = Metrics()
    runtime: GatewayRuntime[RenderedSelf] = GatewayRuntime(
        ctx,
        lambda identity: render_self(load_self(ctx, identity)),
        on_miss=metrics.cache_misses.inc,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(app, runtime, jobs.worker(ctx) if worker else None):
            yield

    app = api.create_api(lifespan)
    app.state.ctx = ctx
    console.install(app)
    app.state.key_cache = runtime.key_cache
    app.state.last_used = runtime.last_used
    app.state.metrics = metrics
    event.listen(ctx.db.engine, "before_cursor_execute", lambda *_: metrics.db_statements.inc())
    # the active limiter; the runtime's Redis one takes its place at startup with Redis
    app.state.limiter = runtime.limiter
    app.state.imported = runtime.imported
    app.state.verifier = runtime.verifier
    app.add_middleware(
        Gateway,
        ctx=ctx,
        verifier=runtime.verifier,
        last_used=runtime.last_used,
        metrics=metrics,
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
async def _running(
    app: FastAPI, runtime: GatewayRuntime[Any], worker: Worker | None
) -> AsyncIterator[None]:
    """Start the gateway's runtime and the job worker, with the jobs' wake-ups through
    Redis when configured; stop them, flushing what is pending, at shutdown."""
    settings = runtime.ctx.settings
    engine_url = runtime.ctx.db.engine.url
    await runtime.start()
    wakeups: wakeup.RedisPublisher | None = None
    if settings.redis_url:
        app.state.limiter = runtime.limiter
        app.state.relay = runtime.relay
        # jobs enqueued here wake workers in other processes (PostgreSQL's NOTIFY does
        # too; through Redis, so do those on one SQLite file)
        wakeups = wakeup.RedisPublisher(settings.redis_url)
        wakeup.add_publisher(engine_url, wakeups)
    if worker is not None:
        worker.start()  # on SQLite it is woken directly by this process's commits
    try:
        yield
    finally:
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        if wakeups is not None:
            wakeup.remove_publisher(engine_url, wakeups)
            wakeups.close()
        await runtime.aclose()
