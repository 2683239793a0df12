"""``KeyrackMiddleware`` on Keyrack's database (and Redis): a plain Starlette app and a
FastAPI app that are not Keyrack's, with the gateway's answers."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select

from keyrack.cache.relay import RedisPublisher
from keyrack.embed import KeyrackMiddleware, KeyrackPrincipal
from keyrack.services import keys
from keyrack.storage.tables.keys import ApiKey
from tests.conftest import OPERATOR, REDIS_SKIP, REDIS_URL, Seeded
from tests.embed.conftest import Serve, principal_body, problem_code, starlette_crm

needs_redis = pytest.mark.skipif(REDIS_URL is None, reason=REDIS_SKIP)


def test_a_valid_key_reaches_the_route_with_its_identity_and_limit_headers(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    view, secret = seeded.new_key(permissions=("clients:read",), location_id=seeded.location_id)
    app = starlette_crm(database_url=database_url, require=["clients:read"])
    with serve(app) as crm:
        response = crm.get("/accounts", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    assert response.json() == {
        "ref": view.ref,
        "organization": "acme",
        "organization_id": seeded.org_id,
        "location_id": seeded.location_id,
        "permissions": ["clients:read"],
    }
    assert response.headers["ratelimit-policy"] == '"key";q=5;w=1, "inflight";q=1'
    assert response.headers["ratelimit"].startswith('"key";r=4;')


def test_no_key_and_garbage_are_401_problems_and_exempt_paths_take_none(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    with serve(starlette_crm(database_url=database_url)) as crm:
        missing = crm.get("/accounts")
        garbage = crm.get("/accounts", headers={"X-API-Key": "kr_live_" + "x" * 38})
        typo = seeded.secret[:-1] + ("A" if seeded.secret[-1] != "A" else "B")  # never the key
        wrong = crm.get("/accounts", headers={"X-API-Key": typo})
        exempt = crm.get("/status")
    assert missing.status_code == 401 and problem_code(missing) == "missing-key"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert garbage.status_code == 401 and problem_code(garbage) == "malformed-key"
    assert wrong.status_code == 401 and problem_code(wrong) in {"malformed-key", "invalid-key"}
    assert exempt.status_code == 200 and exempt.json() == {"status": "ok", "keyrack": False}


def test_a_key_lacking_a_required_permission_is_403(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    _, secret = seeded.new_key(permissions=("contacts:read",))
    with serve(starlette_crm(database_url=database_url, require=["clients:read"])) as crm:
        response = crm.get("/accounts", headers={"X-API-Key": secret})
    assert response.status_code == 403 and problem_code(response) == "insufficient-permission"
    assert "clients:read" in response.json()["detail"]


def test_a_revoked_key_is_refused_and_a_key_in_the_url_is_revoked(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    view, secret = seeded.new_key()
    with serve(starlette_crm(database_url=database_url)) as crm:
        leaked = crm.get("/accounts", params={"api_key": secret})
        after = crm.get("/accounts", headers={"X-API-Key": secret})
    assert leaked.status_code == 400 and problem_code(leaked) == "key-in-url"
    assert keys.get_key(seeded.ctx, seeded.scope, view.ref).status.value == "revoked"
    assert after.status_code == 401 and problem_code(after) == "revoked-key"


def test_use_is_recorded_behind_and_written_at_shutdown(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    view, secret = seeded.new_key()
    with serve(starlette_crm(database_url=database_url)) as crm:
        assert crm.get("/accounts", headers={"X-API-Key": secret}).status_code == 200
    with seeded.ctx.db.session() as session:
        used = session.execute(
            select(ApiKey.last_used_at, ApiKey.last_used_ip).where(ApiKey.id == view.id)
        ).one()
    assert used.last_used_at is not None and used.last_used_ip == "127.0.0.1"


@needs_redis
def test_limits_hold_through_redis_and_a_revocation_arrives_through_the_relay(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    assert REDIS_URL is not None
    view, secret = seeded.new_key(rate_per_second=1)
    publisher = RedisPublisher(REDIS_URL)
    seeded.ctx.bus.subscribe(publisher)
    options = {"database_url": database_url, "redis_url": REDIS_URL}
    try:
        with serve(starlette_crm(**options)) as one, serve(starlette_crm(**options)) as two:
            assert one.get("/accounts", headers={"X-API-Key": secret}).status_code == 200
            throttled = two.get("/accounts", headers={"X-API-Key": secret})
            assert throttled.status_code == 429 and problem_code(throttled) == "rate-limited"
            assert int(throttled.headers["retry-after"]) >= 1
            keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, view.ref, reason="rotated out")
            # the cached entry would answer for up to 1 s; the relay drops it at once
            deadline = time.monotonic() + 0.5
            while (revoked := one.get("/accounts", headers={"X-API-Key": secret})).status_code in (
                200,
                429,
            ) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert revoked.status_code == 401 and problem_code(revoked) == "revoked-key"
    finally:
        publisher.close()


def test_on_a_fastapi_app_the_route_reads_request_state_keyrack(
    database_url: str, seeded: Seeded, serve: Serve
) -> None:
    app = FastAPI()
    app.add_middleware(KeyrackMiddleware, database_url=database_url, require=["keys:manage"])

    @app.get("/me")
    async def me(request: Request) -> dict[str, object]:
        principal: KeyrackPrincipal = request.state.keyrack
        return principal_body(principal)

    _, weak = seeded.new_key(permissions=("clients:read",))
    with serve(app) as crm:
        ok = crm.get("/me", headers={"X-API-Key": seeded.secret})
        refused = crm.get("/me", headers={"X-API-Key": weak})
        missing = crm.get("/me")
    assert ok.status_code == 200 and ok.json()["ref"] == seeded.key.ref
    assert ok.json()["permissions"] == ["keys:manage"]
    assert refused.status_code == 403 and problem_code(refused) == "insufficient-permission"
    assert missing.status_code == 401 and problem_code(missing) == "missing-key"
