"""The HTTP API as a FastAPI app: its OpenAPI document (``keyrack.http.openapi``), problem
handlers and routers.

``create_api`` builds it; the composition root (``keyrack.server``) adds the console,
the gateway and the runtime around it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import StatelessLifespan

from keyrack import __version__, routing
from keyrack.http import docs, metrics, openapi, problems
from keyrack.http.routes import (
    apps,
    clients,
    contacts,
    contracts,
    diagnosis,
    engagements,
    exports,
    handoffs,
    health,
    imports,
    integrations,
    introspection,
    key_import,
    keys,
    leaks,
    notifications,
    pulse,
    requests,
    staff,
    usage,
    verify,
    webhooks,
)

API_DOCUMENT = "/api/v2/openapi.json"
"""The OpenAPI document: public, like the routes declared so."""

HOT_ENDPOINTS = (
    ("/healthz", health.get_liveness),  # first: the benchmark's baseline gets no head start
    ("/api/v2/health", introspection.get_health),
    ("/api/v2/keys/self", introspection.get_key_self),
)

ROUTERS = (
    introspection.router,  # first: the hot path; and before keys (/keys/self ≠ /keys/{ref})
    health.router,
    metrics.router,
    verify.router,  # before keys: POST /keys/verify is not a key ref
    key_import.router,
    keys.router,
    apps.router,
    requests.router,
    handoffs.router,
    leaks.router,
    staff.router,
    clients.router,
    contacts.router,
    contracts.router,
    engagements.router,
    usage.router,
    pulse.router,
    exports.router,
    imports.router,
    notifications.router,
    webhooks.router,
    integrations.router,
    diagnosis.router,
    integrations.inbound_router,
)
"""Every router of the API; a new resource adds its router here."""


def create_api(lifespan: StatelessLifespan[FastAPI]) -> FastAPI:
    """The API's app: every error answered as a problem document, every router included."""
    app = FastAPI(
        title="Keyrack",
        version=__version__,
        summary="API keys, throttling and the CRM API behind them",
        openapi_url=API_DOCUMENT,
        docs_url=None,  # keyrack.http.docs serves /docs without a CDN
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        # Keyrack's own Prometheus metrics and access log observe every request; FastAPI's
        # OpenTelemetry hooks would look up three providers on each (~5 % of a request)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(docs.router)
    # The hot endpoints take only the request: serve them as plain routes at the front of
    # the table, past FastAPI's per-route matching and dependency work (their FastAPI
    # declarations above stay, and document them in the OpenAPI schema).
    app.router.routes[:0] = [Route(path, fn, methods=["GET"]) for path, fn in HOT_ENDPOINTS]
    openapi.install(app, public_paths())
    return app


def public_paths() -> frozenset[str]:
    """The API paths that take no key: its document, and the routes declared public."""
    return routing.public_paths(ROUTERS) | {API_DOCUMENT}
