"""The integrations routes on a live server, with the HubSpot fake on a real socket, on
SQLite and PostgreSQL: connections, the write-only credential, syncs, change history,
runs and their records, one run at a time, and the refusals as problem documents."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from keyrack.services import jobs
from keyrack.services.context import Context
from keyrack.storage.tables import Base
from tests.conftest import Seeded, seed_org
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.conftest import hubspot_stage  # noqa: F401 (a fixture)
from tests.integrations.peers import HubSpotPeer, Stage, hubspot_peer

BASE = "/api/v2/integrations"


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:  # noqa: F811
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


def seed(ctx: Context, slug: str, *permissions: str) -> Seeded:
    """An organization whose key is not paced (these tests make many calls at once)."""
    org = seed_org(ctx, slug)
    org.key, org.secret = org.new_key(permissions=permissions, rate_per_second=10_000)
    return org


@pytest.fixture
def org(ctx: Context) -> Seeded:
    return seed(ctx, "acme", "integrations:manage", "clients:read")


def problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["type"] == f"https://keyrack.dev/problems/{code}", body
    return body


def test_a_connection_syncs_and_never_shows_its_credential(
    ctx: Context, org: Seeded, api: httpx.Client, hub: HubSpotPeer, caplog: pytest.LogCaptureFixture
) -> None:
    token = hub.credential["api_key"]
    h = org.headers()
    answers: list[str] = []

    def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        response = api.request(method, path, headers=h, **kwargs)  # type: ignore[arg-type]
        answers.append(response.text)
        return response

    created = call(
        "POST",
        BASE,
        json={
            "provider": "hubspot",
            "name": "HubSpot",
            "base_url": hub.base_url,
            "credential": {"api_key": token},
        },
    )
    assert created.status_code == 201, created.text
    connection = created.json()
    ref = connection["id"]
    assert ref.startswith("int_") and connection["status"] == "active"
    assert connection["has_credential"] is True and "credential" not in connection

    hub.fake.seed("companies", [{"name": "Acme", "annualrevenue": "12"}, {"name": "Small"}])
    sync = call(
        "PUT",
        f"{BASE}/{ref}/syncs/clients/inbound",
        json={"enabled": True, "filters": [{"field": "annualrevenue", "op": "exists"}]},
    )
    assert sync.status_code == 200, sync.text
    assert sync.json()["filters"] == [{"field": "annualrevenue", "op": "exists", "value": True}]
    outbound = call("GET", f"{BASE}/{ref}/syncs/clients/outbound").json()
    assert outbound["enabled"] is False and outbound["field_mappings"][0]["remote"] == "name"

    queued = call("POST", f"{BASE}/{ref}/runs")
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    run_id = queued.json()["id"]
    second = problem(call("POST", f"{BASE}/{ref}/runs"), 409, "conflict")
    assert second["run_id"] == run_id
    jobs.worker(ctx).drain()
    run = call("GET", f"{BASE}/{ref}/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    assert run["counts"] == {"clients": {"inbound": {"synced": 1, "created": 1, "skipped": 1}}}
    listed = call("GET", f"{BASE}/{ref}/runs").json()
    assert "data" in listed, listed
    assert [r["id"] for r in listed["data"]] == [run_id]
    skipped = call("GET", f"{BASE}/{ref}/runs/{run_id}/records", params={"outcome": "skipped"})
    [record] = skipped.json()["data"]
    assert record["name"] == "Small" and record["skip"]["tested"] is None
    found = call("GET", f"{BASE}/{ref}/runs/{run_id}/records", params={"q": "Acme"}).json()
    assert [r["outcome"] for r in found["data"]] == ["synced"]
    clients = call("GET", "/api/v2/clients").json()
    assert "data" in clients, clients
    clients = clients["data"]
    assert [c["name"] for c in clients] == ["Acme"]

    hub.fake.revoke(token)
    refused = call("PUT", f"{BASE}/{ref}/credential", json={"credential": {"api_key": token}})
    assert refused.status_code == 200
    assert refused.json()["status"] == "unauthorized"
    assert refused.json()["last_error"]["message"] == INVALID_AUTHENTICATION
    fresh = hub.fake.private_app_token()
    again = call("PUT", f"{BASE}/{ref}/credential", json={"credential": {"api_key": fresh}})
    assert again.json()["status"] == "active"

    renamed = call("PATCH", f"{BASE}/{ref}", json={"name": "Sales HubSpot"})
    assert renamed.json()["name"] == "Sales HubSpot"
    changes = call("GET", f"{BASE}/{ref}/changes").json()["data"]
    assert changes[0]["what"] == "connection" and changes[0]["after"] == {"name": "Sales HubSpot"}
    assert (
        next(c["after"] for c in changes if c["what"] == "credential")["credential"] == "replaced"
    )
    assert [c["id"] for c in call("GET", BASE).json()["data"]] == [ref]

    for secret in (token, fresh):
        assert all(secret not in answer for answer in answers)
        assert secret not in caplog.text
        with ctx.db.engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                for row in conn.execute(text(f"SELECT * FROM {table.name}")):
                    assert secret not in str(tuple(row)), table.name

    assert call("DELETE", f"{BASE}/{ref}").status_code == 200
    problem(call("GET", f"{BASE}/{ref}"), 404, "not-found")


def test_bad_inputs_are_problems(
    ctx: Context, org: Seeded, api: httpx.Client, hub: HubSpotPeer
) -> None:
    h = org.headers()
    body = {"provider": "hubspot", "name": "H", "base_url": hub.base_url}
    ref = api.post(BASE, headers=h, json=body).json()["id"]
    stripe = api.post(BASE, headers=h, json={"provider": "stripe", "name": "S"}).json()["id"]
    oauth = {
        "access_token": "a",
        "refresh_token": "r",
        "token_url": "https://example.com/token",
        "client_id": "c",
        "client_secret": "s",
    }
    bad = [
        ("PUT", f"{BASE}/{stripe}/credential", {"credential": oauth}, 400, "validation-error"),
        ("POST", BASE, {**body, "provider": "myspace"}, 400, "validation-error"),
        ("POST", BASE, {**body, "base_url": "ftp://example.com"}, 400, "validation-error"),
        ("POST", BASE, {**body, "credential": {"password": "x"}}, 400, "validation-error"),
        ("POST", BASE, {**body, "credential": {"api_key": ""}}, 400, "validation-error"),
        ("POST", BASE, {**body, "secret": 1}, 400, "validation-error"),
        ("PATCH", f"{BASE}/{ref}", {"name": None}, 400, "validation-error"),
        ("PUT", f"{BASE}/{ref}/credential", {"credential": "pat"}, 400, "validation-error"),
        (
            "PUT",
            f"{BASE}/{ref}/credential",
            {"credential": {"refresh_token": "r", "token_url": "https://x", "client_id": "c"}},
            400,
            "validation-error",
        ),
        (
            "PUT",
            f"{BASE}/{ref}/syncs/clients/inbound",
            {"filters": [{"field": "a", "op": "like"}]},
            400,
            "validation-error",
        ),
        (
            "PUT",
            f"{BASE}/{ref}/syncs/clients/inbound",
            {"filters": [{"field": "a", "op": "in", "value": 3}]},
            400,
            "validation-error",
        ),
        (
            "PUT",
            f"{BASE}/{ref}/syncs/clients/inbound",
            {"field_mappings": [{"local": "a", "remote": "b", "transform": "rot13"}]},
            400,
            "validation-error",
        ),
        (
            "PUT",
            f"{BASE}/{ref}/syncs/clients/inbound",
            {"schedule_seconds": -1},
            400,
            "validation-error",
        ),
        ("PUT", f"{BASE}/{ref}/syncs/widgets/inbound", {}, 400, "validation-error"),
        ("GET", f"{BASE}/{ref}/syncs/clients/sideways", None, 400, "validation-error"),
        ("POST", f"{BASE}/{ref}/runs", None, 400, "validation-error"),  # no credential yet
        ("GET", f"{BASE}/int_nope", None, 404, "not-found"),
        ("GET", f"{BASE}/{ref}/runs/run_nope", None, 404, "not-found"),
        ("POST", f"{BASE}/{ref}/runs/run_nope/retry", None, 404, "not-found"),
        ("GET", f"{BASE}/{ref}/runs/run_nope/records?outcome=lost", None, 400, "validation-error"),
    ]
    for method, path, payload, status, code in bad:
        response = api.request(method, path, headers=h, json=payload)
        assert response.status_code == status, (method, path, payload, response.text)
        problem(response, status, code)

    other = seed(ctx, "other", "integrations:manage")
    problem(api.get(f"{BASE}/{ref}", headers=other.headers()), 404, "not-found")
    reader = seed(ctx, "reader", "clients:read")
    problem(api.get(BASE, headers=reader.headers()), 403, "insufficient-permission")
