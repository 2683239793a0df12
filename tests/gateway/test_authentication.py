"""Who may pass the gateway: key sources, key states, tenants, origins and addresses."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from keyrack.domain.keys import Environment, generate
from keyrack.services import audit, keys, tenancy
from keyrack.storage.tables.keys import ApiKey
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.gateway.conftest import problem_code


def basic(user: str, password: str = "x") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "source",
    [
        lambda s: {"X-API-Key": s},
        lambda s: {"Authorization": f"Bearer {s}"},
        lambda s: {"Authorization": f"bearer   {s}"},
        lambda s: basic(s),
        lambda s: basic(s, ""),
    ],
    ids=["x-api-key", "bearer", "bearer-lowercase", "basic", "basic-no-password"],
)
def test_a_valid_key_is_accepted_from_every_supported_header(
    api: httpx.Client, seeded: Seeded, source: object
) -> None:
    response = api.get("/api/v2/health", headers=source(seeded.secret))  # type: ignore[operator]
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "organization": "Acme", "key": seeded.key.ref}
    assert response.headers["ratelimit-policy"] == '"key";q=5;w=1, "inflight";q=1'
    assert response.headers["ratelimit"].startswith('"key";r=4;')


def test_no_key_is_401_missing_key_with_a_challenge(api: httpx.Client, seeded: Seeded) -> None:
    response = api.get("/api/v2/health")
    assert response.status_code == 401 and problem_code(response) == "missing-key"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "kr_live_tooshort"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic %%%notbase64"},
        {"Authorization": "Digest username=x"},
        {"Authorization": "Basic " + base64.b64encode(b":only-a-password").decode()},
    ],
    ids=["short", "bearer-garbage", "basic-not-base64", "unknown-scheme", "basic-no-user"],
)
def test_unusable_credentials_are_401_malformed_key(
    api: httpx.Client, seeded: Seeded, headers: dict[str, str]
) -> None:
    response = api.get("/api/v2/health", headers=headers)
    assert response.status_code == 401 and problem_code(response) == "malformed-key"


def test_a_typo_in_a_key_is_malformed_not_invalid(api: httpx.Client, seeded: Seeded) -> None:
    typo = seeded.secret[:-7] + ("a" if seeded.secret[-7] != "a" else "b") + seeded.secret[-6:]
    response = api.get("/api/v2/health", headers=seeded.headers(typo))
    assert response.status_code == 401 and problem_code(response) == "malformed-key"


def test_an_unknown_well_formed_key_is_401_invalid_key(api: httpx.Client, seeded: Seeded) -> None:
    response = api.get(
        "/api/v2/health", headers=seeded.headers(generate(Environment.SANDBOX).secret)
    )
    assert response.status_code == 401 and problem_code(response) == "invalid-key"


def test_a_revoked_key_is_401_revoked_key(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200
    keys.revoke_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, reason="offboarding")
    response = api.get("/api/v2/health", headers=seeded.headers())
    assert response.status_code == 401 and problem_code(response) == "revoked-key"


def test_an_expired_key_is_401_expired_key(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    _, secret = seeded.new_key(expires_at=clock.now + timedelta(hours=1))
    assert api.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
    clock.advance(timedelta(hours=1))
    response = api.get("/api/v2/health", headers=seeded.headers(secret))
    assert response.status_code == 401 and problem_code(response) == "expired-key"


def test_a_disabled_organization_is_403_api_disabled(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200
    tenancy.update_org(seeded.ctx, OPERATOR, "acme", api_enabled=False)
    response = api.get("/api/v2/health", headers=seeded.headers())
    assert response.status_code == 403 and problem_code(response) == "api-disabled"


@pytest.mark.parametrize("name", ["api_key", "key", "token", "access_token", "anything"])
def test_a_key_in_the_url_is_400_and_revoked_as_leaked(
    api: httpx.Client, seeded: Seeded, name: str
) -> None:
    response = api.get("/api/v2/health", params={name: seeded.secret})
    assert response.status_code == 400 and problem_code(response) == "key-in-url"
    assert seeded.secret not in response.text
    after = api.get("/api/v2/health", headers=seeded.headers())
    assert after.status_code == 401 and problem_code(after) == "revoked-key"
    event = audit.list_events(seeded.ctx, seeded.org_id, audit.AuditFilter(action="key.leaked"))
    assert [e.target_ref for e in event.data] == [seeded.key.ref]
    assert event.data[0].after and "URL query string" in event.data[0].after["reason"]


def test_a_key_in_the_url_is_refused_even_with_a_valid_header(
    api: httpx.Client, seeded: Seeded
) -> None:
    other, other_secret = seeded.new_key()
    response = api.get("/api/v2/health", params={"token": other_secret}, headers=seeded.headers())
    assert response.status_code == 400 and problem_code(response) == "key-in-url"
    with seeded.ctx.db.session() as session:
        statuses = dict(session.execute(select(ApiKey.ref, ApiKey.status)).all())
    assert statuses == {seeded.key.ref: "active", other.ref: "revoked"}


def test_a_browser_origin_is_refused_unless_the_org_allows_it(
    api: httpx.Client, seeded: Seeded
) -> None:
    headers = {**seeded.headers(), "Origin": "https://app.acme.test"}
    refused = api.get("/api/v2/health", headers=headers)
    assert refused.status_code == 403 and problem_code(refused) == "browser-origin"
    tenancy.update_org(seeded.ctx, OPERATOR, "acme", allowed_origins=["https://APP.acme.test/"])
    assert api.get("/api/v2/health", headers=headers).status_code == 200
    other = api.get("/api/v2/health", headers={**headers, "Origin": "https://evil.test"})
    assert other.status_code == 403 and problem_code(other) == "browser-origin"


def test_an_instance_host_accepts_only_its_own_organizations_keys(
    api: httpx.Client, seeded: Seeded
) -> None:
    other = tenancy.create_org(seeded.ctx, OPERATOR, name="Globex", slug="globex")
    assert other.slug == "globex"
    own = api.get("/api/v2/health", headers={**seeded.headers(), "Host": "acme.localhost:8000"})
    assert own.status_code == 200
    foreign = api.get("/api/v2/health", headers={**seeded.headers(), "Host": "globex.localhost"})
    assert foreign.status_code == 403 and problem_code(foreign) == "wrong-tenant"
    plain = api.get("/api/v2/health", headers={**seeded.headers(), "Host": "localhost"})
    assert plain.status_code == 200


def test_a_key_with_an_ip_allow_list_is_refused_from_elsewhere(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, fenced = seeded.new_key(allowed_cidrs=["10.0.0.0/8"])
    refused = api.get("/api/v2/health", headers=seeded.headers(fenced))
    assert refused.status_code == 403 and problem_code(refused) == "ip-not-allowed"
    _, local = seeded.new_key(allowed_cidrs=["127.0.0.0/8", "::1/128"])
    assert api.get("/api/v2/health", headers=seeded.headers(local)).status_code == 200


def test_public_paths_need_no_key(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/healthz").status_code == 200
    assert api.get("/api/v2/openapi.json").status_code == 200


def test_every_response_has_a_request_id_and_a_given_one_is_kept(
    api: httpx.Client, seeded: Seeded
) -> None:
    assert len(api.get("/healthz").headers["x-request-id"]) == 32
    kept = api.get("/api/v2/health", headers={"X-Request-ID": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42" and kept.json()["request_id"] == "trace-42"
    replaced = api.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"


def test_a_body_over_the_limit_is_413_before_authentication(
    api: httpx.Client, seeded: Seeded
) -> None:
    too_big = b"x" * (seeded.ctx.settings.max_body_bytes + 1)
    response = api.post("/api/v2/keys", content=too_big)
    assert response.status_code == 413 and problem_code(response) == "payload-too-large"


def test_a_streamed_body_over_the_limit_is_413(api: httpx.Client, seeded: Seeded) -> None:
    chunk = b"x" * 65536
    count = seeded.ctx.settings.max_body_bytes // len(chunk) + 2
    response = api.post(
        "/api/v2/keys",
        headers={**seeded.headers(), "Content-Type": "application/json"},
        content=iter([chunk] * count),
    )
    assert response.status_code == 413 and problem_code(response) == "payload-too-large"
