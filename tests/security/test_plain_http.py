"""In production a key sent over plain HTTP has been seen on the wire: refused and revoked.

The server runs in production mode on a real socket, which speaks plain HTTP. Only
a proxy the operator trusts (``KEYRACK_TRUST_FORWARDED_FOR``) may say, with
``X-Forwarded-Proto: https``, that the client used HTTPS; anyone else saying so is
not believed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from keyrack.domain.verification import KeyStatus
from keyrack.http.protocol import uvicorn_options
from keyrack.server import create_app
from keyrack.services import keys
from keyrack.services.context import Context
from tests.conftest import Seeded
from tests.live import serve_in_thread


@contextmanager
def _production(seeded: Seeded, *, trust_proxy: bool) -> Iterator[httpx.Client]:
    """The app in production mode, served with ``keyrack serve``'s options."""
    settings = seeded.ctx.settings.model_copy(
        update={"environment": "production", "trust_forwarded_for": trust_proxy}
    )
    ctx = Context(settings=settings, db=seeded.ctx.db, clock=seeded.ctx.clock, bus=seeded.ctx.bus)
    with (
        serve_in_thread(create_app(ctx=ctx), **uvicorn_options(settings)) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client


@pytest.fixture
def production(seeded: Seeded) -> Iterator[httpx.Client]:
    with _production(seeded, trust_proxy=False) as client:
        yield client


@pytest.fixture
def behind_a_trusted_proxy(seeded: Seeded) -> Iterator[httpx.Client]:
    with _production(seeded, trust_proxy=True) as client:
        yield client


def _status(seeded: Seeded) -> str:
    return keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref).status


@pytest.mark.parametrize(
    "headers",
    [
        lambda secret: {"X-API-Key": secret},
        lambda secret: {"Authorization": f"Bearer {secret}"},
        lambda secret: {"X-API-Key": secret, "X-Forwarded-Proto": "https"},  # not a trusted proxy
    ],
    ids=["x-api-key", "bearer", "forged x-forwarded-proto"],
)
def test_in_production_a_key_sent_over_plain_http_is_refused_and_revoked(
    production: httpx.Client, seeded: Seeded, headers: object
) -> None:
    response = production.get("/api/v2/keys/self", headers=headers(seeded.secret))  # type: ignore[operator]
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/tls-required")
    assert seeded.secret not in response.text
    assert _status(seeded) == KeyStatus.REVOKED.value


def test_in_production_a_trusted_proxy_that_says_https_lets_the_key_through(
    behind_a_trusted_proxy: httpx.Client, seeded: Seeded
) -> None:
    over_tls = {**seeded.headers(), "X-Forwarded-Proto": "https"}
    assert behind_a_trusted_proxy.get("/api/v2/keys/self", headers=over_tls).status_code == 200
    # what the proxy says counts (the last entry), not what the client wrote before it
    said_http = {**seeded.headers(), "X-Forwarded-Proto": "https, http"}
    response = behind_a_trusted_proxy.get("/api/v2/keys/self", headers=said_http)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/tls-required")
    assert _status(seeded) == KeyStatus.REVOKED.value


def test_outside_production_plain_http_is_allowed(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/api/v2/keys/self", headers=seeded.headers()).status_code == 200
    assert _status(seeded) == KeyStatus.ACTIVE.value
