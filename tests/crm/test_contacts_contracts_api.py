"""/api/v2/contacts and /api/v2/contracts: the same shape as clients."""

from __future__ import annotations

import httpx
import pytest

from keyrack.services.context import Context
from tests.crm.conftest import Crm, seed


def client(api: httpx.Client, crm: Crm, headers: dict[str, str] | None = None) -> str:
    response = api.post("/api/v2/clients", json={"name": "Globex"}, headers=headers or crm.agency)
    ref: str = response.json()["id"]
    return ref


def test_contacts_crud(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm)
    created = api.post(
        "/api/v2/contacts",
        json={
            "client_id": ref,
            "name": "Ann Lee",
            "email": "ann@globex.test",
            "phone": "+1 555 0100",
        },
        headers=crm.agency,
    )
    assert created.status_code == 201, created.text
    contact = created.json()
    assert contact["id"].startswith("con_") and contact["client_id"] == ref
    url = f"/api/v2/contacts/{contact['id']}"
    assert api.get(url, headers=crm.agency).json() == contact
    patched = api.patch(url, json={"title": "CTO", "phone": None}, headers=crm.agency).json()
    assert (patched["title"], patched["phone"], patched["email"]) == (
        "CTO",
        None,
        "ann@globex.test",
    )
    listed = api.get("/api/v2/contacts", params={"client_id": ref}, headers=crm.agency).json()
    assert [c["id"] for c in listed["data"]] == [contact["id"]]
    assert api.delete(url, headers=crm.agency).status_code == 200
    assert api.get(url, headers=crm.agency).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Ann"},
        {"client_id": "cli_x", "name": ""},
        {"client_id": "cli_x", "name": "Ann", "email": "nope"},
        {"client_id": "cli_x", "name": "Ann", "phone": "call me"},
    ],
)
def test_contact_validation_is_400(api: httpx.Client, crm: Crm, body: dict[str, str]) -> None:
    if body.get("client_id"):
        body = {**body, "client_id": client(api, crm)}
    assert api.post("/api/v2/contacts", json=body, headers=crm.agency).status_code == 400


def test_contacts_need_a_key_and_their_permissions(api: httpx.Client, crm: Crm) -> None:
    assert api.get("/api/v2/contacts").status_code == 401
    reader = crm.key("contacts:read")
    assert api.get("/api/v2/contacts", headers=reader).status_code == 200
    response = api.post("/api/v2/contacts", json={}, headers=reader)
    assert response.status_code == 403
    assert api.get("/api/v2/contacts", headers=crm.key("clients:read")).status_code == 403


def test_contacts_of_out_of_scope_clients_are_404(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    ref = client(api, crm)
    contact = api.post(
        "/api/v2/contacts", json={"client_id": ref, "name": "Ann"}, headers=crm.agency
    ).json()
    other = seed(ctx, "initech")
    for headers in (other.agency, crm.located):
        assert api.get(f"/api/v2/contacts/{contact['id']}", headers=headers).status_code == 404
        body = {"client_id": ref, "name": "Intruder"}
        assert api.post("/api/v2/contacts", json=body, headers=headers).status_code == 404
        listed = api.get("/api/v2/contacts", params={"client_id": ref}, headers=headers)
        assert listed.status_code == 404
        assert api.get("/api/v2/contacts", headers=headers).json()["data"] == []


def test_contacts_list_is_paged(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm)
    for i in range(3):
        api.post("/api/v2/contacts", json={"client_id": ref, "name": f"P{i}"}, headers=crm.agency)
    first = api.get("/api/v2/contacts", params={"limit": 2}, headers=crm.agency)
    assert [c["name"] for c in first.json()["data"]] == ["P2", "P1"]
    assert 'rel="next"' in first.headers["link"]
    rest = api.get(
        "/api/v2/contacts",
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=crm.agency,
    ).json()
    assert [c["name"] for c in rest["data"]] == ["P0"] and rest["next_cursor"] is None


CONTRACT = {
    "name": "2026 subscription",
    "amount_cents": 1_200_000,
    "currency": "eur",
    "start_date": "2026-01-01",
    "end_date": "2026-12-31",
    "recurring_amount_cents": 100_000,
    "recurring_interval": "month",
}


def test_contracts_crud_with_annual_recurring_revenue(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm)
    created = api.post("/api/v2/contracts", json={"client_id": ref, **CONTRACT}, headers=crm.agency)
    assert created.status_code == 201, created.text
    contract = created.json()
    assert contract["id"].startswith("ctr_") and contract["currency"] == "EUR"
    assert contract["annual_recurring_cents"] == 1_200_000
    url = f"/api/v2/contracts/{contract['id']}"
    patched = api.patch(
        url,
        json={"recurring_amount_cents": 300_000, "recurring_interval": "quarter"},
        headers=crm.agency,
    ).json()
    assert patched["annual_recurring_cents"] == 1_200_000
    one_off = api.patch(
        url, json={"recurring_amount_cents": None, "recurring_interval": None}, headers=crm.agency
    ).json()
    assert one_off["annual_recurring_cents"] is None
    assert api.get("/api/v2/contracts", headers=crm.agency).json()["data"] == [one_off]
    assert api.delete(url, headers=crm.agency).status_code == 200
    assert api.get(url, headers=crm.agency).status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        {"end_date": "2025-12-31"},
        {"recurring_interval": None},
        {"currency": "EURO"},
        {"amount_cents": -5},
        {"start_date": None},
    ],
)
def test_inconsistent_contracts_are_400(
    api: httpx.Client, crm: Crm, change: dict[str, object]
) -> None:
    body = {"client_id": client(api, crm), **CONTRACT, **change}
    if change.get("start_date", 1) is None:
        body.pop("start_date")
    assert api.post("/api/v2/contracts", json=body, headers=crm.agency).status_code == 400


def test_contracts_permissions_and_scope(api: httpx.Client, crm: Crm, ctx: Context) -> None:
    ref = client(api, crm)
    contract = api.post(
        "/api/v2/contracts", json={"client_id": ref, **CONTRACT}, headers=crm.agency
    ).json()
    assert api.get("/api/v2/contracts").status_code == 401
    assert api.get("/api/v2/contracts", headers=crm.key("contacts:read")).status_code == 403
    writer = crm.key("contracts:write")
    assert api.get(f"/api/v2/contracts/{contract['id']}", headers=writer).status_code == 403
    other = seed(ctx, "initech")
    for headers in (other.agency, crm.located):
        url = f"/api/v2/contracts/{contract['id']}"
        assert api.get(url, headers=headers).status_code == 404
        assert api.patch(url, json={"name": "x"}, headers=headers).status_code == 404
        assert api.delete(url, headers=headers).status_code == 404
