"""Key management over HTTP: one test per rule, per status."""

from __future__ import annotations

import base64

import httpx
import pytest

from keyrack.domain.keys import Environment, generate
from tests.conftest import Seeded


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "request_id"} <= body.keys()
    assert body["status"] == response.status_code
    code: str = body["type"].removeprefix("https://keyrack.dev/problems/")
    return code


def test_create_returns_the_secret_once_and_lists_it_masked(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, manager = seeded.new_key(
        name="Manager",
        environment=Environment.PRODUCTION,
        permissions=["keys:manage", "clients:read"],
    )
    created = api.post(
        "/api/v2/keys",
        headers=seeded.headers(manager),
        json={
            "name": "Nexla Integration",
            "environment": "production",
            "permissions": ["clients:read"],
        },
    )
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("kr_live_") and body["masked"].endswith(body["key"][-4:])
    listed = api.get("/api/v2/keys", headers=seeded.headers())
    assert listed.status_code == 200
    assert body["key"] not in listed.text
    names = [k["name"] for k in listed.json()["data"]]
    assert names == ["Nexla Integration", "Manager", "Seed key"]
    fetched = api.get(f"/api/v2/keys/{body['ref']}", headers=seeded.headers()).json()
    assert "key" not in fetched and fetched["masked"] == f"kr_live_••••••••{body['key'][-4:]}"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"name": ""},
        {"name": "x", "environment": "staging"},
        {"name": "x", "permissions": ["root"]},
        {"name": "x", "rate_per_second": 0},
        {"name": "x", "allowed_cidrs": ["999.1.1.1"]},
        {"name": "x", "unexpected": True},
        {"name": "x", "expires_at": "2020-01-01T00:00:00Z"},
    ],
)
def test_bad_create_bodies_are_validation_problems(
    api: httpx.Client, seeded: Seeded, payload: dict[str, object]
) -> None:
    response = api.post("/api/v2/keys", headers=seeded.headers(), json=payload)
    assert response.status_code == 400
    assert problem_code(response) == "validation-error"


def test_invalid_json_is_a_validation_problem(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post(
        "/api/v2/keys",
        headers={**seeded.headers(), "content-type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400 and problem_code(response) == "validation-error"


def test_all_three_header_forms_authenticate(api: httpx.Client, seeded: Seeded) -> None:
    basic = base64.b64encode(f"{seeded.secret}:".encode()).decode()
    for headers in (
        {"X-API-Key": seeded.secret},
        {"Authorization": f"Bearer {seeded.secret}"},
        {"Authorization": f"Basic {basic}"},
    ):
        assert api.get("/api/v2/keys", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing-key"),
        ({"X-API-Key": "kr_live_garbage"}, "malformed-key"),
        ({"X-API-Key": generate(Environment.SANDBOX).secret}, "invalid-key"),
    ],
)
def test_requests_without_a_valid_key_are_401(
    api: httpx.Client, seeded: Seeded, headers: dict[str, str], code: str
) -> None:
    response = api.get("/api/v2/keys", headers=headers)
    assert response.status_code == 401 and problem_code(response) == code
    assert seeded.secret not in response.text


def test_a_key_without_keys_manage_is_403(api: httpx.Client, seeded: Seeded) -> None:
    _, secret = seeded.new_key(permissions=["clients:read"])
    response = api.get("/api/v2/keys", headers=seeded.headers(secret))
    assert response.status_code == 403 and problem_code(response) == "insufficient-permission"


def test_another_orgs_key_is_404(api: httpx.Client, seeded: Seeded) -> None:
    from tests.conftest import seed_org

    other = seed_org(seeded.ctx, "globex")
    response = api.get(f"/api/v2/keys/{other.key.ref}", headers=seeded.headers())
    assert response.status_code == 404 and problem_code(response) == "not-found"


def test_roll_returns_a_new_secret_and_the_old_one_is_refused(
    api: httpx.Client, seeded: Seeded
) -> None:
    victim, old_secret = seeded.new_key(permissions=["keys:manage"], name="Victim")
    rolled = api.post(f"/api/v2/keys/{victim.ref}/roll", headers=seeded.headers())
    assert rolled.status_code == 200
    new_secret = rolled.json()["key"]
    assert new_secret != old_secret and rolled.json()["ref"] == victim.ref
    assert api.get("/api/v2/keys", headers=seeded.headers(new_secret)).status_code == 200
    assert api.get("/api/v2/keys", headers=seeded.headers(old_secret)).status_code == 401


def test_roll_grace_over_seven_days_is_refused(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post(
        f"/api/v2/keys/{seeded.key.ref}/roll",
        headers=seeded.headers(),
        json={"grace_seconds": 8 * 86400},
    )
    assert response.status_code == 400


def test_revoke_then_the_key_is_refused_as_revoked(api: httpx.Client, seeded: Seeded) -> None:
    victim, secret = seeded.new_key(permissions=["keys:manage"], name="Victim")
    revoked = api.post(
        f"/api/v2/keys/{victim.ref}/revoke", headers=seeded.headers(), json={"reason": "rotated"}
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    response = api.get("/api/v2/keys", headers=seeded.headers(secret))
    assert response.status_code == 401 and problem_code(response) == "revoked-key"


def test_patch_changes_name_and_permissions(api: httpx.Client, seeded: Seeded) -> None:
    victim, _ = seeded.new_key(name="Old name")
    _, manager = seeded.new_key(permissions=["keys:manage", "usage:read", "usage:write"])
    response = api.patch(
        f"/api/v2/keys/{victim.ref}",
        headers=seeded.headers(manager),
        json={"name": "New name", "permissions": ["usage:read", "usage:write"]},
    )
    assert response.status_code == 200
    assert response.json()["name"] == "New name"
    assert response.json()["permissions"] == ["usage:read", "usage:write"]


def test_delete_revokes_and_keeps_the_row(api: httpx.Client, seeded: Seeded) -> None:
    victim, _ = seeded.new_key()
    assert api.delete(f"/api/v2/keys/{victim.ref}", headers=seeded.headers()).status_code == 200
    assert api.get(f"/api/v2/keys/{victim.ref}", headers=seeded.headers()).json()["status"] == (
        "revoked"
    )


def test_list_pages_with_cursor_and_link_header(api: httpx.Client, seeded: Seeded) -> None:
    for i in range(4):
        seeded.new_key(name=f"k{i}")
    first = api.get("/api/v2/keys?limit=2", headers=seeded.headers())
    assert len(first.json()["data"]) == 2 and first.json()["next_cursor"]
    assert 'rel="next"' in first.headers["link"]
    seen = [k["name"] for k in first.json()["data"]]
    cursor = first.json()["next_cursor"]
    while cursor:
        page = api.get(
            "/api/v2/keys", params={"limit": 2, "cursor": cursor}, headers=seeded.headers()
        ).json()
        seen += [k["name"] for k in page["data"]]
        cursor = page["next_cursor"]
    assert seen == ["k3", "k2", "k1", "k0", "Seed key"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"cursor": "%%%"}])
def test_bad_paging_parameters_are_400(
    api: httpx.Client, seeded: Seeded, params: dict[str, object]
) -> None:
    response = api.get("/api/v2/keys", params=params, headers=seeded.headers())
    assert response.status_code == 400 and problem_code(response) == "validation-error"


def test_unknown_ref_is_404_not_500(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post(
        "/api/v2/keys/key_nope/revoke", headers=seeded.headers(), json={"reason": "x"}
    )
    assert response.status_code == 404 and problem_code(response) == "not-found"


def test_health_endpoints_answer_without_a_key(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
