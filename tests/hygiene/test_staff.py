"""Staff over the API and the CLI: decide key requests, switch API access; others see 404."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.errors import Conflict
from keyrack.services import audit, keys, requests
from keyrack.services.context import Context
from tests.conftest import OPERATOR
from tests.hygiene.test_requests import APP_PERMISSIONS, Market, seed_market


@pytest.fixture
def market(ctx: Context) -> Market:
    return seed_market(ctx)


def _ask(market: Market, **kwargs: str) -> str:
    kwargs = kwargs or {"app_ref": market.app.ref}
    view = requests.create_request(
        market.ctx, market.customer_admin, org_id=market.customer.org_id, **kwargs
    )
    return view.ref


def test_staff_routes_are_404_for_keys_not_owned_by_staff(
    api: httpx.Client, market: Market
) -> None:
    ref = _ask(market)
    admin = market.customer.headers()
    assert api.get("/api/v2/staff/requests", headers=admin).status_code == 404
    assert api.post(f"/api/v2/staff/requests/{ref}/approve", headers=admin).status_code == 404
    patched = api.patch("/api/v2/staff/orgs/acme", headers=admin, json={"api_enabled": False})
    assert patched.status_code == 404
    assert api.get("/api/v2/staff/requests").status_code == 401
    assert requests.get_request(market.ctx, ref).status.value == "pending"


def test_staff_list_every_orgs_requests_and_approve_over_the_api(
    api: httpx.Client, market: Market
) -> None:
    ref = _ask(market)
    listed = api.get("/api/v2/staff/requests?status=pending", headers=market.staff)
    assert listed.status_code == 200
    assert [(r["ref"], r["organization"]) for r in listed.json()["data"]] == [(ref, "acme")]
    approved = api.post(f"/api/v2/staff/requests/{ref}/approve", headers=market.staff)
    assert approved.status_code == 200
    body = approved.json()
    assert body["status"] == "approved" and body["claim_ref"]
    assert "kr_live_" not in approved.text
    production = keys.get_key(market.ctx, market.customer.scope, body["key_ref"])
    assert production.permissions == APP_PERMISSIONS
    again = api.post(f"/api/v2/staff/requests/{ref}/approve", headers=market.staff)
    assert again.status_code == 409


def test_staff_reject_with_a_reason(api: httpx.Client, market: Market) -> None:
    ref = _ask(market, message="Need a production key for our ETL")
    path = f"/api/v2/staff/requests/{ref}/reject"
    assert api.post(path, headers=market.staff, json={}).status_code == 400
    rejected = api.post(path, headers=market.staff, json={"reason": "use the catalog app"})
    assert rejected.status_code == 200
    assert (rejected.json()["status"], rejected.json()["reason"]) == (
        "rejected",
        "use the catalog app",
    )
    missing = api.post(
        "/api/v2/staff/requests/kreq_nope/reject", headers=market.staff, json={"reason": "x"}
    )
    assert missing.status_code == 404


def test_staff_switch_an_orgs_api_access_and_it_is_audited(
    api: httpx.Client, market: Market
) -> None:
    path = "/api/v2/staff/orgs/acme"
    off = api.patch(path, headers=market.staff, json={"api_enabled": False})
    assert (off.status_code, off.json()["api_enabled"]) == (200, False)
    refused = api.get("/api/v2/key-requests", headers=market.customer.headers())
    assert refused.status_code == 403 and refused.json()["type"].endswith("/api-disabled")
    on = api.patch(path, headers=market.staff, json={"api_enabled": True})
    assert on.json()["api_enabled"] is True
    assert api.get("/api/v2/key-requests", headers=market.customer.headers()).status_code == 200
    trail = audit.list_events(market.ctx, market.customer.org_id).data
    assert [e.action for e in trail[:2]] == ["org.api_access_changed"] * 2
    assert trail[1].after == {**(trail[1].before or {}), "api_enabled": False}
    assert (
        api.patch(
            "/api/v2/staff/orgs/nope", headers=market.staff, json={"api_enabled": True}
        ).status_code
        == 404
    )
    assert api.patch(path, headers=market.staff, json={"api_enabled": "maybe"}).status_code == 400


def test_cli_lists_approves_and_rejects_requests(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keyrack.cli.requests.context", lambda: market.ctx)
    runner = CliRunner()
    first = _ask(market)
    second = _ask(market, message="free text")

    listed = runner.invoke(cli, ["requests", "list", "--status", "pending", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["ref"] for r in json.loads(listed.output)["data"]] == [second, first]

    approved = runner.invoke(cli, ["requests", "approve", first, "--json"])
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.output)["status"] == "approved"
    assert "kr_live_" not in approved.output

    assert runner.invoke(cli, ["requests", "reject", second]).exit_code == 2  # --reason missing
    rejected = runner.invoke(cli, ["requests", "reject", second, "--reason", "not now"])
    assert rejected.exit_code == 0 and "rejected" in rejected.output

    table = runner.invoke(cli, ["apps", "list"])
    assert table.exit_code == 0 and "Nexla Sync" in table.output


def test_cli_refuses_to_decide_a_request_twice(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keyrack.cli.requests.context", lambda: market.ctx)
    ref = _ask(market)
    requests.reject_request(market.ctx, OPERATOR, ref, reason="no")
    result = CliRunner().invoke(cli, ["requests", "approve", ref])
    assert isinstance(result.exception, Conflict)  # keyrack.cli.main turns it into exit 1
    assert Conflict.exit_code == 1
