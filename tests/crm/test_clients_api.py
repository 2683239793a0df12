"""/api/v2/clients: per route and per status, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from keyrack.services import audit
from keyrack.services.context import Context
from keyrack.services.tenancy import create_location
from tests.conftest import OPERATOR
from tests.crm.conftest import Crm, seed

URL = "/api/v2/clients"


def create(api: httpx.Client, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = api.post(URL, json={"name": "Globex", **body}, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def test_create_returns_201_with_a_public_id_and_every_field(api: httpx.Client, crm: Crm) -> None:
    body = create(
        api,
        crm.agency,
        status="onboarding",
        owner_email="Owner@Acme.test",
        arr_cents=1_250_000,
        health=55,
        custom_fields={"tier": "gold", "seats": 40},
    )
    assert str(body["id"]).startswith("cli_")
    assert body["owner_email"] == "owner@acme.test"
    assert (body["arr_cents"], body["health"], body["health_band"]) == (1_250_000, 55, "yellow")
    assert body["location_id"] is None
    assert api.get(f"{URL}/{body['id']}", headers=crm.agency).json() == body


def test_a_location_key_creates_clients_in_its_location(api: httpx.Client, crm: Crm) -> None:
    body = create(api, crm.located)
    assert body["location_id"] == crm.org.location_id


def test_an_agency_key_may_place_a_client_in_a_location(api: httpx.Client, crm: Crm) -> None:
    body = create(api, crm.agency, location_id=crm.org.location_id)
    assert body["location_id"] == crm.org.location_id
    listed = api.get(URL, headers=crm.located).json()["data"]
    assert [c["id"] for c in listed] == [body["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "health": 101},
        {"name": "x", "arr_cents": -1},
        {"name": "x", "status": "bankrupt"},
        {"name": "x", "unknown": 1},
        {"name": "x", "owner_email": "not-an-email"},
        {"name": "x", "custom_fields": {"nested": {"a": 1}}},
        {"name": "a\u0000b"},
    ],
)
def test_invalid_bodies_are_400_problems(
    api: httpx.Client, crm: Crm, body: dict[str, object]
) -> None:
    response = api.post(URL, json=body, headers=crm.agency)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/validation-error")


def test_missing_key_is_401(api: httpx.Client, crm: Crm) -> None:
    response = api.get(URL)
    assert response.status_code == 401
    assert response.json()["type"].endswith("/missing-key")


def test_each_route_needs_its_permission(api: httpx.Client, crm: Crm) -> None:
    ref = create(api, crm.agency)["id"]
    reader = crm.key("clients:read")
    writer = crm.key("clients:write")
    assert api.get(f"{URL}/{ref}", headers=reader).status_code == 200
    for method, path, headers in [
        ("GET", URL, writer),
        ("GET", f"{URL}/{ref}", writer),
        ("POST", URL, reader),
        ("PATCH", f"{URL}/{ref}", reader),
        ("DELETE", f"{URL}/{ref}", reader),
    ]:
        response = api.request(method, path, headers=headers, json={"name": "x"})
        assert response.status_code == 403, (method, path)
        assert response.json()["type"].endswith("/insufficient-permission")


def test_other_organizations_and_locations_get_404_never_data(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    ref = create(api, crm.agency, name="Secret Corp")["id"]
    other_org = seed(ctx, "initech")
    other_location = create_location(ctx, OPERATOR, org_slug="acme", name="B", slug="b")
    elsewhere = crm.key("clients:read", "clients:write", location_id=other_location.id)
    for headers in (other_org.agency, elsewhere, crm.located):
        for method in ("GET", "PATCH", "DELETE"):
            response = api.request(method, f"{URL}/{ref}", headers=headers, json={"name": "x"})
            assert response.status_code == 404
            assert "Secret" not in response.text
        assert api.get(URL, headers=headers).json()["data"] == []
    assert api.get(f"{URL}/{ref}", headers=crm.agency).json()["name"] == "Secret Corp"


def test_malformed_ids_are_404(api: httpx.Client, crm: Crm) -> None:
    assert api.get(f"{URL}/nope", headers=crm.agency).status_code == 404


def test_list_is_paged_newest_first_with_a_link_header(api: httpx.Client, crm: Crm) -> None:
    refs = [create(api, crm.agency, name=f"Client {i}")["id"] for i in range(5)]
    first = api.get(URL, params={"limit": 3}, headers=crm.agency)
    assert [c["id"] for c in first.json()["data"]] == refs[::-1][:3]
    cursor = first.json()["next_cursor"]
    assert cursor and 'rel="next"' in first.headers["link"]
    second = api.get(URL, params={"limit": 3, "cursor": cursor}, headers=crm.agency)
    assert [c["id"] for c in second.json()["data"]] == refs[::-1][3:]
    assert second.json()["next_cursor"] is None and "link" not in second.headers
    assert api.get(URL, params={"cursor": "garbage"}, headers=crm.agency).status_code == 400
    assert api.get(URL, params={"limit": 501}, headers=crm.agency).status_code == 400


def test_list_filters_by_status(api: httpx.Client, crm: Crm) -> None:
    create(api, crm.agency, status="churned")
    kept = create(api, crm.agency, status="trial")
    listed = api.get(URL, params={"status": "trial"}, headers=crm.agency).json()["data"]
    assert [c["id"] for c in listed] == [kept["id"]]


def test_patch_changes_only_the_given_fields(api: httpx.Client, crm: Crm) -> None:
    body = create(api, crm.agency, owner_email="a@acme.test", health=80)
    response = api.patch(
        f"{URL}/{body['id']}",
        json={"health": 20, "owner_email": None, "custom_fields": {"risk": "high"}},
        headers=crm.agency,
    )
    assert response.status_code == 200
    changed = response.json()
    assert (changed["health"], changed["health_band"], changed["owner_email"]) == (20, "red", None)
    assert changed["custom_fields"] == {"risk": "high"} and changed["name"] == "Globex"
    refused = api.patch(f"{URL}/{body['id']}", json={"name": None}, headers=crm.agency)
    assert refused.status_code == 400


def test_a_location_key_cannot_move_a_client_out_of_its_location(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    other = create_location(ctx, OPERATOR, org_slug="acme", name="B", slug="b")
    ref = create(api, crm.located)["id"]
    response = api.patch(f"{URL}/{ref}", json={"location_id": other.id}, headers=crm.located)
    assert response.status_code == 404
    moved = api.patch(f"{URL}/{ref}", json={"location_id": other.id}, headers=crm.agency)
    assert moved.json()["location_id"] == other.id
    assert api.get(f"{URL}/{ref}", headers=crm.located).status_code == 404


def test_delete_removes_the_client_and_its_dependents_and_is_audited(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    ref = create(api, crm.agency)["id"]
    contact = api.post(
        "/api/v2/contacts", json={"client_id": ref, "name": "Ann"}, headers=crm.agency
    ).json()
    assert api.delete(f"{URL}/{ref}", headers=crm.agency).status_code == 200
    assert api.get(f"{URL}/{ref}", headers=crm.agency).status_code == 404
    assert api.get(f"/api/v2/contacts/{contact['id']}", headers=crm.agency).status_code == 404
    event = audit.list_events(ctx, crm.org.org_id).data[0]
    assert (event.action, event.target_ref) == ("client.deleted", ref)
