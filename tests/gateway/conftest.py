"""Gateway fixtures: the real app on a socket, with an injectable limiter clock.

The cache lives long and the last-used flusher sleeps, so a test sees exactly the
database traffic it causes; tests that need other values build their own app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest
from fastapi import FastAPI

from keyrack.config import Settings
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.server import create_app
from keyrack.services.context import Context
from tests.conftest import make_settings
from tests.live import serve_in_thread


class FakeMonotonic:
    """The limiter's clock (seconds), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, key_cache_ttl_seconds=300, last_used_flush_seconds=3600)


@pytest.fixture
def limiter_clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def app(ctx: Context, limiter_clock: FakeMonotonic) -> FastAPI:
    app = create_app(ctx=ctx)
    app.state.limiter = MemoryLimiter(clock=limiter_clock)
    return app


Serve = Callable[[FastAPI], AbstractContextManager[httpx.Client]]


@pytest.fixture
def serve() -> Serve:
    """Serve an app on a loopback socket; the client closes and the app shuts down after."""

    @contextmanager
    def run(app: FastAPI) -> Iterator[httpx.Client]:
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client

    return run


@pytest.fixture
def api(app: FastAPI, serve: Serve) -> Iterator[httpx.Client]:
    with serve(app) as client:
        yield client


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["x-request-id"]
    code: str = body["type"].removeprefix("https://keyrack.dev/problems/")
    return code
