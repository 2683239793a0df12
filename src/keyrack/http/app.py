"""The application factory: ``create_app(settings)`` builds one Keyrack ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from keyrack import __version__, console
from keyrack.config import Settings
from keyrack.domain.verification import KeyVerifier
from keyrack.http import problems
from keyrack.http.gateway import Gateway
from keyrack.http.routes import apps, handoffs, health, keys, leaks, requests, staff
from keyrack.http.routes import clients, contacts, contracts, pulse, usage
from keyrack.services.context import Context
from keyrack.services.keys import find_identity

ROUTERS = (
    health.router,
    keys.router,
    apps.router,
    requests.router,
    handoffs.router,
    leaks.router,
    staff.router,
    clients.router,
    contacts.router,
    contracts.router,
    usage.router,
    pulse.router,
)
"""Every router of the app; a new resource adds its router here."""


def create_app(settings: Settings | None = None, *, ctx: Context | None = None) -> FastAPI:
    """Build the app for ``settings`` (or a ready ``ctx``, as tests do)."""
    if ctx is None:
        ctx = Context.from_settings(settings or Settings())
    ctx.settings.check_deployable()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="Keyrack",
        version=__version__,
        summary="API keys, throttling and the CRM API behind them",
        openapi_url="/api/v2/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    console.install(app)
    verifier = KeyVerifier(lambda digest: find_identity(ctx, digest), ctx.clock)
    app.add_middleware(Gateway, verify=verifier.verify)
    return app
