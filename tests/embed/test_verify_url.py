"""``KeyrackMiddleware(verify_url=…)``: a CRM that does not share Keyrack's database
asks a real Keyrack server, on a socket, about each request's key."""

from __future__ import annotations

import pytest

from keyrack.services import keys
from tests.conftest import OPERATOR, Seeded
from tests.embed.conftest import Serve, problem_code, starlette_crm


@pytest.fixture
def verify_key(seeded: Seeded) -> str:
    _, secret = seeded.new_key(name="CRM backend", permissions=("keys:verify",))
    return secret


def test_a_valid_key_is_admitted_with_its_identity(
    live_url: str, seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    view, secret = seeded.new_key(permissions=("clients:read",), location_id=seeded.location_id)
    app = starlette_crm(verify_url=live_url, verify_key=verify_key, require=["clients:read"])
    with serve(app) as crm:
        response = crm.get("/accounts", headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.json() == {
        "ref": view.ref,
        "organization": "acme",
        "organization_id": seeded.org_id,
        "location_id": seeded.location_id,
        "permissions": ["clients:read"],
    }
    assert response.headers["ratelimit-policy"] == '"key";q=5;w=1, "inflight";q=1'


def test_refusals_are_the_gateways_problems(
    live_url: str, seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    _, weak = seeded.new_key(permissions=("contacts:read",))
    revoked_view, revoked = seeded.new_key(permissions=("clients:read",))
    keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, revoked_view.ref, reason="gone")
    app = starlette_crm(verify_url=live_url, verify_key=verify_key, require=["clients:read"])
    with serve(app) as crm:
        missing = crm.get("/accounts")
        unknown = crm.get("/accounts", headers={"X-API-Key": "not-a-key-at-all"})
        lacking = crm.get("/accounts", headers={"X-API-Key": weak})
        gone = crm.get("/accounts", headers={"X-API-Key": revoked})
    assert missing.status_code == 401 and problem_code(missing) == "missing-key"
    assert unknown.status_code == 401 and problem_code(unknown) == "invalid-key"
    assert lacking.status_code == 403 and problem_code(lacking) == "insufficient-permission"
    assert "clients:read" in lacking.json()["detail"]
    assert gone.status_code == 401 and problem_code(gone) == "revoked-key"


def test_the_servers_limiter_throttles_with_retry_after(
    live_url: str, seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    _, secret = seeded.new_key(rate_per_second=1)
    with serve(starlette_crm(verify_url=live_url, verify_key=verify_key)) as crm:
        first = crm.get("/accounts", headers={"X-API-Key": secret})
        second = crm.get("/accounts", headers={"X-API-Key": secret})
    assert first.status_code == 200
    assert second.status_code == 429 and problem_code(second) == "rate-limited"
    assert int(second.headers["retry-after"]) >= 1


def test_a_key_in_the_url_is_refused_and_reported_as_a_leak(
    live_url: str, seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    view, secret = seeded.new_key()
    with serve(starlette_crm(verify_url=live_url, verify_key=verify_key)) as crm:
        response = crm.get("/accounts", params={"token": secret})
    assert response.status_code == 400 and problem_code(response) == "key-in-url"
    assert keys.get_key(seeded.ctx, seeded.scope, view.ref).status.value == "revoked"


def test_an_unreachable_keyrack_is_503_not_a_500(
    seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    app = starlette_crm(verify_url="http://127.0.0.1:9", verify_key=verify_key)
    with serve(app) as crm:
        response = crm.get("/accounts", headers={"X-API-Key": seeded.secret})
    assert response.status_code == 503 and problem_code(response) == "unavailable"


def test_an_expired_key_says_when_and_why_through_the_verify_endpoint(
    live_url: str, seeded: Seeded, verify_key: str, serve: Serve
) -> None:
    from datetime import timedelta

    from keyrack.services import jobs

    view, secret = seeded.new_key(expires_at=seeded.key.created_at + timedelta(days=3))
    assert jobs.sweep(seeded.ctx, view.created_at + timedelta(days=3)).expired == 1
    with serve(starlette_crm(verify_url=live_url, verify_key=verify_key)) as crm:
        response = crm.get("/accounts", headers={"X-API-Key": secret})
    assert response.status_code == 401 and problem_code(response) == "expired-key"
    assert response.json()["detail"].startswith("the API key expired on 2026-01-08")
