"""Sync diagnostics through the API on a live server, with the HubSpot fake on a real
socket, on SQLite and PostgreSQL: the troubleshooting article's four cases end to end
(a revoked key, a direction turned off while editing another, a filter that skips, a
field renamed on the far side), test with one record, diagnose and its support bundle,
issues that open and resolve themselves; no bundle ever holds a secret.

The bundles of the first two cases are written to ``docs/examples/`` (ids and the
fake's port normalized) and compared, so the committed examples stay true: set
``KEYRACK_WRITE_EXAMPLES=1`` to rewrite them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keyrack.domain.crm import EngagementKind
from keyrack.services import jobs
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, engagements
from keyrack.services.integrations import syncs
from keyrack.storage.tables.notices import Notification
from tests.conftest import MutableClock, Seeded, seed_org
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.conftest import hubspot_stage  # noqa: F401 (a fixture)
from tests.integrations.peers import HubSpotPeer, Stage, hubspot_peer

BASE = "/api/v2/integrations"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
DANA = Actor(label="dana@acme.test")
SECRET_SHAPES = re.compile(
    r"pat-na1-[0-9a-f]{8}|kr_[a-z]+_[A-Za-z0-9]{10,}|Bearer [A-Za-z0-9]|password|whsec_[A-Za-z0-9]",
    re.IGNORECASE,
)


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:  # noqa: F811
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


@pytest.fixture
def org(ctx: Context) -> Seeded:
    found = seed_org(ctx, "acme")
    found.key, found.secret = found.new_key(
        permissions=("integrations:manage", "clients:read", "clients:write"),
        rate_per_second=10_000,
    )
    return found


class Api:
    """The org's calls, each answer kept (every one is grepped for secrets)."""

    def __init__(self, client: httpx.Client, org: Seeded, ctx: Context, clock: MutableClock):
        self.client, self.org, self.ctx, self.clock = client, org, ctx, clock
        self.answers: list[str] = []

    def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=self.org.headers(), **kwargs)
        self.answers.append(response.text)
        assert response.status_code == status, response.text
        return response.json()

    def connect(self, hub: HubSpotPeer) -> str:
        body = {
            "provider": "hubspot",
            "name": "Sales HubSpot",
            "base_url": hub.base_url,
            "credential": hub.credential,
        }
        created = self.call("POST", BASE, 201, json=body)
        assert created["status"] == "active"
        ref: str = created["id"]
        return ref

    def run(self, ref: str) -> dict[str, Any]:
        self.clock.advance(timedelta(minutes=5))
        queued = self.call("POST", f"{BASE}/{ref}/runs", 202)
        jobs.worker(self.ctx).drain()
        self.clock.advance(timedelta(minutes=1))
        run: dict[str, Any] = self.call("GET", f"{BASE}/{ref}/runs/{queued['id']}")
        return run

    def diagnose(self, ref: str, **body: Any) -> dict[str, Any]:
        found: dict[str, Any] = self.call("POST", f"{BASE}/{ref}/diagnose", json=body)
        assert [c["name"] for c in found["checks"]] == [
            "credentials",
            "direction-and-filters",
            "recent-changes",
            "single-record",
        ]
        return found

    def issues(self, ref: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"{BASE}/{ref}/issues", params=params)[
            "data"
        ]
        return found


@pytest.fixture
def api_(api: httpx.Client, org: Seeded, ctx: Context, clock: MutableClock) -> Api:
    return Api(api, org, ctx, clock)


def check(found: dict[str, Any], name: str) -> dict[str, Any]:
    picked: dict[str, Any] = next(c for c in found["checks"] if c["name"] == name)
    return picked


def assert_no_secret(texts: list[str], *secrets: str) -> None:
    for text in texts:
        assert not SECRET_SHAPES.search(text), SECRET_SHAPES.search(text)
        for secret in secrets:
            assert secret not in text


def normalized(value: Any, hub: HubSpotPeer) -> Any:
    """The bundle with what changes from run to run (ids, the fake's port) made stable."""
    text = json.dumps(value, indent=2, sort_keys=True)
    text = text.replace(hub.base_url, "https://api.hubapi.com")
    seen: dict[str, str] = {}

    def stable(match: re.Match[str]) -> str:
        kind = match.group(1)
        return seen.setdefault(
            match.group(0), f"{kind}_{sum(k.startswith(kind) for k in seen) + 1:026d}"
        )

    text = re.sub(r"\b(int|run|cli|con|eng|iss|key)_[0-9A-HJKMNP-TV-Z]{26}\b", stable, text)
    remote: dict[str, str] = {}
    text = re.sub(
        r'("remote_id": ")(\d+)(")',
        lambda m: m.group(1) + remote.setdefault(m.group(2), f"{9001 + len(remote)}") + m.group(3),
        text,
    )
    return json.loads(text)


def compare_example(name: str, found: dict[str, Any], hub: HubSpotPeer) -> None:
    """Write the example (when asked, or when missing) and check it says what we found."""
    from keyrack.domain.diagnosis import markdown

    bundle = normalized(found["bundle"], hub)
    json_path, md_path = EXAMPLES / f"{name}.json", EXAMPLES / f"{name}.md"
    if os.environ.get("KEYRACK_WRITE_EXAMPLES") or not json_path.exists():
        EXAMPLES.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(bundle, indent=2, sort_keys=True) + "\n")
        md_path.write_text(markdown(bundle))
    assert json.loads(json_path.read_text()) == bundle
    assert md_path.read_text() == markdown(bundle)


def test_a_revoked_key_is_named_by_diagnose_and_the_issue_resolves_after_reauthorizing(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    """Case 1: the far side revoked the key."""
    ref = api_.connect(hub)
    scope = api_.org.scope
    made = [
        clients.create_client(ctx, DANA, scope, name=f"Client {n}", arr_cents=120_000 * n)
        for n in (1, 2, 3)
    ]
    api_.call("PUT", f"{BASE}/{ref}/syncs/clients/outbound", json={"enabled": True})
    assert api_.run(ref)["status"] == "succeeded"

    hub.fake.revoke(hub.credential["api_key"])
    for client in made[:2]:
        clients.update_client(ctx, DANA, scope, client.ref, name=client.name + " Ltd")
    failed = api_.run(ref)
    assert failed["status"] == "failed" and failed["error"] == INVALID_AUTHENTICATION
    [issue] = api_.issues(ref, status="open")
    assert issue["kind"] == "credential" and "unauthorized" in issue["summary"]
    assert issue["bundle"]["integration"]["status"] == "unauthorized"
    with ctx.db.session() as session:
        notified = set(session.scalars(select(Notification.event_type)))
    assert "integration.issue_opened" in notified

    found = api_.diagnose(ref)
    credentials = check(found, "credentials")
    assert credentials["verdict"] == "problem" and INVALID_AUTHENTICATION in credentials["summary"]
    assert check(found, "single-record")["verdict"] == "not-run"
    bundle = found["bundle"]
    assert bundle["error"]["message"] == INVALID_AUTHENTICATION
    assert {e["local_id"] for e in bundle["examples"]} == {c.ref for c in made[:2]}
    assert all(e["remote_id"] for e in bundle["examples"])  # ids in both systems
    assert bundle["affected"][0]["last_worked_at"] is not None
    assert INVALID_AUTHENTICATION in found["markdown"]
    compare_example("support-bundle-revoked", found, hub)

    fresh = hub.fake.private_app_token()
    again = api_.call("PUT", f"{BASE}/{ref}/credential", json={"credential": {"api_key": fresh}})
    assert again["status"] == "active"
    after = api_.run(ref)
    assert after["status"] == "succeeded"
    assert after["counts"]["clients"]["outbound"]["synced"] == 2
    assert api_.issues(ref, status="open") == []
    [resolved] = api_.issues(ref, status="resolved")
    assert resolved["id"] == issue["id"] and resolved["resolved_at"] is not None
    assert check(api_.diagnose(ref), "credentials")["verdict"] == "ok"
    assert_no_secret(api_.answers, hub.credential["api_key"], fresh, api_.org.secret)


def test_a_direction_turned_off_while_editing_another_is_pointed_at_with_who_and_when(
    ctx: Context, api_: Api, hub: HubSpotPeer, clock: MutableClock
) -> None:
    """Case 2: "my engagements stopped syncing to my CRM" — someone turned off engagements
    outbound while editing clients inbound."""
    ref = api_.connect(hub)
    scope = api_.org.scope
    client = clients.create_client(ctx, DANA, scope, name="Acme Corp")
    engagements.create_engagement(
        ctx, DANA, scope, client_ref=client.ref, kind=EngagementKind.CALL, subject="Kickoff call"
    )
    for record_type in ("clients", "engagements"):
        api_.call("PUT", f"{BASE}/{ref}/syncs/{record_type}/outbound", json={"enabled": True})
    first = api_.run(ref)
    assert first["status"] == "succeeded"
    assert first["counts"]["engagements"]["outbound"]["synced"] == 1

    clock.advance(timedelta(hours=3))
    filters = [{"field": "name", "op": "exists"}]
    syncs.put_sync(ctx, DANA, scope, ref, "clients", "inbound", enabled=True, filters=filters)
    clock.advance(timedelta(seconds=40))
    syncs.put_sync(ctx, DANA, scope, ref, "engagements", "outbound", enabled=False)
    clock.advance(timedelta(hours=2))
    late = [
        engagements.create_engagement(
            ctx, DANA, scope, client_ref=client.ref, kind=kind, subject=subject
        )
        for kind, subject in (
            (EngagementKind.CALL, "Renewal call"),
            (EngagementKind.NOTE, "Pricing note"),
        )
    ]
    assert "engagements" not in api_.run(ref)["counts"]
    [issue] = api_.issues(ref, status="open")
    assert (issue["kind"], issue["record_type"], issue["direction"]) == (
        "direction-off",
        "engagements",
        "outbound",
    )
    assert "dana@acme.test" in issue["summary"]

    found = api_.diagnose(ref)  # nothing asked: it finds the direction that stopped
    assert [(a["record_type"], a["direction"]) for a in found["bundle"]["affected"]] == [
        ("engagements", "outbound")
    ]
    assert check(found, "direction-and-filters")["verdict"] == "problem"
    changes = check(found, "recent-changes")
    assert changes["verdict"] == "problem"
    assert changes["suspect"]["actor"] == "dana@acme.test"
    assert changes["suspect"]["what"] == "sync:engagements:outbound"
    assert changes["suspect"]["after"] == {"enabled": False}
    assert changes["suspect"]["occurred_at"].startswith("2026-01-05T12:0")
    assert [c["what"] for c in changes["nearby"]] == ["sync:clients:inbound"]
    assert "while also editing sync:clients:inbound" in changes["summary"]
    single = check(found, "single-record")
    assert single["test"]["outcome"] == "would-sync" and "direction is off" in single["summary"]
    bundle = found["bundle"]
    assert {e["local_id"] for e in bundle["examples"]} == {e.ref for e in late}
    assert {e["name"] for e in bundle["examples"]} == {"Renewal call", "Pricing note"}
    assert "dana@acme.test" in found["markdown"]
    assert "sync:engagements:outbound" in found["markdown"]
    compare_example("support-bundle-direction-off", found, hub)

    api_.call("PUT", f"{BASE}/{ref}/syncs/engagements/outbound", json={"enabled": True})
    assert api_.run(ref)["counts"]["engagements"]["outbound"]["synced"] == 2
    assert (hub.fake.count("calls"), hub.fake.count("notes")) == (2, 1)
    assert api_.issues(ref, status="open") == []
    assert_no_secret(api_.answers, hub.credential["api_key"], api_.org.secret)


def test_a_filter_that_skips_shows_in_test_record_with_the_values_tested(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    """Case 3: a filter skips records the user expected."""
    ref = api_.connect(hub)
    [small, big] = hub.fake.seed(
        "companies", [{"name": "Small Co", "annualrevenue": "500"}, {"name": "Big Co"}]
    )
    filters = [
        {"field": "name", "op": "exists"},
        {"field": "annualrevenue", "op": "gte", "value": 1000},
    ]
    api_.call(
        "PUT", f"{BASE}/{ref}/syncs/clients/inbound", json={"enabled": True, "filters": filters}
    )
    run = api_.run(ref)
    assert run["counts"]["clients"]["inbound"] == {"skipped": 2}

    body = {"record_type": "clients", "direction": "inbound", "record_id": small}
    tested = api_.call("POST", f"{BASE}/{ref}/test-record", json=body)
    assert tested["outcome"] == "skipped" and tested["dry_run"] is True
    steps = [(s["name"], s["outcome"]) for s in tested["steps"]]
    assert steps == [
        ("sync", "ok"),
        ("credential", "ok"),
        ("load", "ok"),
        ("filter", "passed"),
        ("filter", "skipped"),
    ]
    skipped = tested["steps"][4]
    assert skipped["filter"] == {"field": "annualrevenue", "op": "gte", "value": 1000}
    assert skipped["tested"] == "500" and skipped["present"] is True
    assert "'500'" in skipped["detail"]
    missing = api_.call("POST", f"{BASE}/{ref}/test-record", json={**body, "record_id": big})
    assert missing["outcome"] == "skipped" and missing["steps"][4]["tested"] is None

    hub.fake.seed("companies", [{"name": "Mid Co", "annualrevenue": "999"}])
    api_.run(ref)
    [issue] = api_.issues(ref)
    assert issue["kind"] == "filter-skips-all" and "1:annualrevenue" in issue["cause"]
    found = api_.diagnose(ref, record_type="clients", direction="inbound")
    direction = check(found, "direction-and-filters")
    assert direction["verdict"] == "problem" and "1:annualrevenue" in direction["summary"]
    assert direction["syncs"][0]["skipped_by"][0]["records"] == 3
    assert check(found, "recent-changes")["verdict"] == "ok"  # set up so, not changed since

    filters[1]["value"] = 100
    api_.call("PUT", f"{BASE}/{ref}/syncs/clients/inbound", json={"filters": filters})
    written = api_.call("POST", f"{BASE}/{ref}/test-record", json={**body, "dry_run": False})
    assert written["outcome"] == "synced", written
    assert [s["outcome"] for s in written["steps"]][-2:] == ["ok", "ok"]
    local_id = written["steps"][-2]["local_id"]
    held = clients.get_client(ctx, api_.org.scope, local_id)
    assert held.external_ids == {"hubspot": small} and held.arr_cents == 50_000
    assert_no_secret(api_.answers, hub.credential["api_key"], api_.org.secret)


def test_a_field_renamed_on_the_far_side_fails_every_record_with_the_exact_error(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    """Case 4: a field renamed on the far side makes every record fail."""
    ref = api_.connect(hub)
    scope = api_.org.scope
    made = [
        clients.create_client(ctx, DANA, scope, name=f"Client {n}", arr_cents=99_00 * n)
        for n in (1, 2, 3)
    ]
    api_.call("PUT", f"{BASE}/{ref}/syncs/clients/outbound", json={"enabled": True})
    assert api_.run(ref)["status"] == "succeeded"
    _, exact, _ = hub.remove_field("rename")
    for rounds in range(2):
        for client in made:
            clients.update_client(
                ctx, DANA, scope, client.ref, arr_cents=client.arr_cents + rounds + 1
            )
        run = api_.run(ref)
        assert run["status"] == "partial"
        assert run["counts"]["clients"]["outbound"] == {"failed": 3}
    records = api_.call("GET", f"{BASE}/{ref}/runs/{run['id']}/records")["data"]
    assert len(records) == 3 and all(r["error_message"].startswith(exact) for r in records)
    [issue] = api_.issues(ref, status="open")
    assert issue["kind"] == "failing" and issue["bundle"]["error"]["message"].startswith(exact)

    found = api_.diagnose(ref, record_type="clients", direction="outbound")
    bundle = found["bundle"]
    assert bundle["error"]["message"].startswith(exact) and bundle["error"]["code"]
    assert len(bundle["examples"]) == 3 and all(e["remote_id"] for e in bundle["examples"])
    single = check(found, "single-record")
    assert single["verdict"] == "problem" and single["test"]["outcome"] == "would-sync"
    assert "the provider refused it in the last run" in single["summary"]
    assert exact in single["summary"]
    body = {"record_type": "clients", "direction": "outbound", "record_id": made[0].ref}
    written = api_.call("POST", f"{BASE}/{ref}/test-record", json={**body, "dry_run": False})
    assert written["outcome"] == "failed"
    request = next(s for s in written["steps"] if s["name"] == "request")
    assert request["failure"]["message"].startswith(exact)
    assert request["exchange"]["method"] == "POST"
    assert exact in found["markdown"]
    assert_no_secret(api_.answers, hub.credential["api_key"], api_.org.secret)


NO_SUSPECT = "none that could explain what the other checks found"


def test_the_change_that_enabled_a_sync_with_its_filters_is_not_a_suspect(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    """The README tour: clients go out, only those with an ARR. The change that turned
    the sync on holds its filter, but it is the sync's setup, not what made it stop."""
    ref = api_.connect(hub)
    scope = api_.org.scope
    filters = [{"field": "arr_cents", "op": "gt", "value": 0}]
    api_.call(
        "PUT", f"{BASE}/{ref}/syncs/clients/outbound", json={"enabled": True, "filters": filters}
    )
    clients.create_client(ctx, DANA, scope, name="Pied Piper", arr_cents=12_000_000)
    clients.create_client(ctx, DANA, scope, name="Hooli")
    counts = api_.run(ref)["counts"]["clients"]["outbound"]
    assert (counts["synced"], counts["skipped"]) == (1, 1)

    found = api_.diagnose(ref)
    assert check(found, "direction-and-filters")["verdict"] == "warning"
    changes = check(found, "recent-changes")
    enabled = changes["changes"][0]
    assert enabled["what"] == "sync:clients:outbound"
    assert enabled["after"] == {"enabled": True, "filters": filters}
    assert changes["verdict"] == "ok" and "suspect" not in changes
    assert changes["summary"] == f"4 change(s) in the window; {NO_SUSPECT}"


def test_a_filter_changed_after_the_sync_worked_is_named_for_the_records_it_skips(
    ctx: Context, api_: Api, hub: HubSpotPeer, clock: MutableClock
) -> None:
    ref = api_.connect(hub)
    scope = api_.org.scope
    made = [
        clients.create_client(ctx, DANA, scope, name="Pied Piper", arr_cents=12_000_000),
        clients.create_client(ctx, DANA, scope, name="Hooli"),
    ]
    api_.call("PUT", f"{BASE}/{ref}/syncs/clients/outbound", json={"enabled": True})
    assert api_.run(ref)["counts"]["clients"]["outbound"]["synced"] == 2

    clock.advance(timedelta(hours=3))
    filters = [{"field": "arr_cents", "op": "gt", "value": 0}]
    syncs.put_sync(ctx, DANA, scope, ref, "clients", "outbound", filters=filters)
    clock.advance(timedelta(hours=2))  # a later change to the same sync that explains nothing
    syncs.put_sync(ctx, DANA, scope, ref, "clients", "outbound", schedule_seconds=3600)
    for client in made:
        clients.update_client(ctx, DANA, scope, client.ref, name=client.name + " Inc")
    counts = api_.run(ref)["counts"]["clients"]["outbound"]
    assert (counts["synced"], counts["skipped"]) == (1, 1)

    found = api_.diagnose(ref)
    assert "filter 0:arr_cents skipped 1" in check(found, "direction-and-filters")["summary"]
    changes = check(found, "recent-changes")
    assert changes["verdict"] == "problem"
    assert changes["suspect"]["what"] == "sync:clients:outbound"
    assert changes["suspect"]["actor"] == "dana@acme.test"
    assert (changes["suspect"]["before"], changes["suspect"]["after"]) == (
        {"filters": []},
        {"filters": filters},
    )
    assert changes["summary"] == (
        f"dana@acme.test changed sync:clients:outbound at {changes['suspect']['occurred_at']}: "
        '{"filters": []} → {"filters": [{"field": "arr_cents", "op": "gt", "value": 0}]}'
    )


def test_filters_and_mappings_resaved_unchanged_are_not_blamed_for_skips_or_failures(
    ctx: Context, api_: Api, hub: HubSpotPeer, clock: MutableClock
) -> None:
    """Saved again in another order, the filters and mappings are the same (every filter
    must match; each field is mapped once): records skipped by the filter that was always
    there, or refused because the far side renamed a field, are not theirs."""
    ref = api_.connect(hub)
    scope = api_.org.scope
    path = f"{BASE}/{ref}/syncs/clients/outbound"
    filters = [
        {"field": "name", "op": "exists", "value": True},
        {"field": "arr_cents", "op": "gt", "value": 0},
    ]
    mappings = api_.call("PUT", path, json={"enabled": True, "filters": filters})["field_mappings"]
    piper = clients.create_client(ctx, DANA, scope, name="Pied Piper", arr_cents=12_000_000)
    assert api_.run(ref)["counts"]["clients"]["outbound"]["synced"] == 1

    clock.advance(timedelta(hours=3))
    syncs.put_sync(ctx, DANA, scope, ref, "clients", "outbound", filters=filters[::-1])
    clients.create_client(ctx, DANA, scope, name="Hooli")
    assert api_.run(ref)["counts"]["clients"]["outbound"] == {"skipped": 1}
    found = api_.diagnose(ref)
    changes = check(found, "recent-changes")
    assert changes["changes"][0]["after"] == {"filters": filters[::-1]}
    assert changes["verdict"] == "ok", changes["summary"]
    assert changes["summary"].endswith(NO_SUSPECT)

    clock.advance(timedelta(hours=1))
    assert len(mappings) > 1
    syncs.put_sync(ctx, DANA, scope, ref, "clients", "outbound", field_mappings=mappings[::-1])
    hub.remove_field("rename")
    clients.update_client(ctx, DANA, scope, piper.ref, arr_cents=13_000_000)
    assert api_.run(ref)["counts"]["clients"]["outbound"] == {"failed": 1}
    found = api_.diagnose(ref)
    changes = check(found, "recent-changes")
    assert changes["changes"][0]["after"] == {"field_mappings": mappings[::-1]}
    assert changes["verdict"] == "ok", changes["summary"]


def test_bad_diagnostics_requests_are_problems(api_: Api, hub: HubSpotPeer) -> None:
    ref = api_.connect(hub)
    body = {"record_type": "clients", "direction": "outbound", "record_id": "cli_nope"}
    gone = api_.call("POST", f"{BASE}/{ref}/test-record", json=body)
    assert gone["outcome"] == "failed" and gone["steps"][-1]["name"] == "load"
    deal = api_.call("POST", f"{BASE}/{ref}/test-record", json={**body, "record_type": "contracts"})
    assert deal["outcome"] == "failed" and "no contracts cli_nope" in deal["steps"][-1]["detail"]
    for method, path, payload, status in [
        ("POST", f"{BASE}/{ref}/test-record", {**body, "record_type": "widgets"}, 400),
        ("POST", f"{BASE}/{ref}/test-record", {**body, "direction": "engagements"}, 400),
        ("POST", f"{BASE}/{ref}/test-record", {"record_type": "clients"}, 400),
        ("POST", f"{BASE}/{ref}/diagnose", {"direction": "sideways"}, 400),
        ("POST", f"{BASE}/{ref}/diagnose", {"since": "yesterday"}, 400),
        ("POST", f"{BASE}/int_nope/diagnose", {}, 404),
        ("POST", f"{BASE}/int_nope/test-record", body, 404),
        ("GET", f"{BASE}/int_nope/issues", None, 404),
    ]:
        response = api_.client.request(method, path, headers=api_.org.headers(), json=payload)
        assert response.status_code == status, (path, payload, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_an_oauth_connection_refused_on_refresh_leaks_no_token_into_any_bundle(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    credential = hub.oauth_credential()
    body = {"provider": "hubspot", "name": "OAuth HubSpot", "base_url": hub.base_url}
    ref = api_.call("POST", BASE, 201, json={**body, "credential": credential})["id"]
    client = clients.create_client(ctx, DANA, api_.org.scope, name="Acme")
    api_.call("PUT", f"{BASE}/{ref}/syncs/clients/outbound", json={"enabled": True})
    assert api_.run(ref)["status"] == "succeeded"
    message, _ = hub.revoke_refresh(credential)
    clients.update_client(ctx, DANA, api_.org.scope, client.ref, name="Acme Inc")
    assert api_.run(ref)["status"] == "failed"
    found = api_.diagnose(ref)
    assert check(found, "credentials")["verdict"] == "problem"
    assert found["bundle"]["integration"]["status"] == "revoked"
    assert message in found["markdown"]
    [issue] = api_.issues(ref)
    tested = api_.call(
        "POST",
        f"{BASE}/{ref}/test-record",
        json={"record_type": "clients", "direction": "outbound", "record_id": client.ref},
    )
    assert tested["steps"][1]["name"] == "credential" and tested["outcome"] == "failed"
    secrets = [credential[k] for k in ("access_token", "refresh_token", "client_secret")]
    secrets += [token for token in hub.fake._tokens if isinstance(token, str)]
    texts = [json.dumps(found), json.dumps(issue), json.dumps(tested), *api_.answers]
    assert_no_secret(texts, *secrets, api_.org.secret)


def test_the_diagnostics_need_integrations_manage(
    ctx: Context, api_: Api, hub: HubSpotPeer
) -> None:
    ref = api_.connect(hub)
    _, reader = api_.org.new_key(permissions=("clients:read",), rate_per_second=10_000)
    body = {"record_type": "clients", "direction": "outbound", "record_id": "cli_x"}
    for method, path, payload in [
        ("POST", f"{BASE}/{ref}/test-record", body),
        ("POST", f"{BASE}/{ref}/diagnose", {}),
        ("GET", f"{BASE}/{ref}/issues", None),
    ]:
        response = api_.client.request(method, path, headers=api_.org.headers(reader), json=payload)
        assert response.status_code == 403, response.text
        assert response.json()["type"].endswith("/insufficient-permission")
