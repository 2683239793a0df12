"""Embedding fixtures: apps that are not Keyrack's, behind ``KeyrackMiddleware``, served
on a loopback socket (startup and shutdown through their lifespan)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from keyrack.embed import KeyrackMiddleware, KeyrackPrincipal
from tests.live import serve_in_thread


def principal_body(principal: KeyrackPrincipal) -> dict[str, object]:
    return {
        "ref": principal.ref,
        "organization": principal.organization_slug,
        "organization_id": principal.organization_id,
        "location_id": principal.location_id,
        "permissions": sorted(principal.permissions),
    }


async def accounts(request: Request) -> JSONResponse:
    """A CRM route: what the key it was called with may see."""
    return JSONResponse(principal_body(request.state.keyrack))


async def status(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "keyrack": hasattr(request.state, "keyrack")})


def starlette_crm(**options: object) -> Starlette:
    """A plain Starlette app with Keyrack's gateway in front (``/status`` exempt)."""
    return Starlette(
        routes=[Route("/accounts", accounts), Route("/status", status)],
        middleware=[Middleware(KeyrackMiddleware, exempt=["/status"], **options)],
    )


Serve = Callable[[ASGIApp], AbstractContextManager[httpx.Client]]


@pytest.fixture
def serve() -> Serve:
    @contextmanager
    def run(app: ASGIApp) -> Iterator[httpx.Client]:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client

    return run


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"]
    code: str = body["type"].removeprefix("https://keyrack.dev/problems/")
    return code
