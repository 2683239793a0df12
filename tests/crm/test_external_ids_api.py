"""``external_ids`` on every CRM record: set, merged, unique per organization and system,
found by ``?external_id=``, forgotten with their record; and what a 409 may tell."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from keyrack.services.context import Context
from keyrack.services.tenancy import create_location
from tests.conftest import OPERATOR
from tests.crm.conftest import CRM, Crm, later, seed

Headers = dict[str, str]
Make = Callable[[httpx.Client, Headers, dict[str, object]], httpx.Response]


def _client(api: httpx.Client, headers: Headers, name: str = "Globex") -> str:
    response = api.post("/api/v2/clients", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    ref: str = response.json()["id"]
    return ref


def _make(resource: str, body: dict[str, object]) -> Make:
    def make(api: httpx.Client, headers: Headers, extra: dict[str, object]) -> httpx.Response:
        fields = dict(body)
        if resource != "clients":
            fields["client_id"] = _client(api, headers)
        return api.post(f"/api/v2/{resource}", json={**fields, **extra}, headers=headers)

    return make


RESOURCES = {
    "clients": _make("clients", {"name": "Globex"}),
    "contacts": _make("contacts", {"name": "Hank"}),
    "contracts": _make(
        "contracts", {"name": "Plan", "amount_cents": 100, "start_date": "2026-01-01"}
    ),
    "engagements": _make("engagements", {"kind": "note", "body": "hi"}),
}


@pytest.fixture(params=sorted(RESOURCES))
def resource(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def made(api: httpx.Client, headers: Headers, resource: str, **extra: object) -> dict[str, object]:
    response = RESOURCES[resource](api, headers, extra)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def test_external_ids_are_set_on_create_and_merged_by_patch(
    api: httpx.Client, crm: Crm, resource: str
) -> None:
    record = made(api, crm.agency, resource, external_ids={"salesforce": "001A", "hubspot": "9"})
    assert record["external_ids"] == {"hubspot": "9", "salesforce": "001A"}
    url = f"/api/v2/{resource}/{record['id']}"
    patched = api.patch(
        url, json={"external_ids": {"hubspot": None, "stripe": "cus_1"}}, headers=crm.agency
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["external_ids"] == {"salesforce": "001A", "stripe": "cus_1"}
    assert later(patched.json(), record)
    assert api.get(url, headers=crm.agency).json() == patched.json()


def test_a_change_that_changes_nothing_keeps_updated_at(
    api: httpx.Client, crm: Crm, resource: str
) -> None:
    record = made(api, crm.agency, resource, external_ids={"hubspot": "9"})
    url = f"/api/v2/{resource}/{record['id']}"
    same = api.patch(url, json={"external_ids": {"hubspot": "9", "gone": None}}, headers=crm.agency)
    assert same.json() == record
    assert api.patch(url, json={}, headers=crm.agency).json() == record


def test_a_claimed_id_is_409_naming_the_record_that_holds_it(
    api: httpx.Client, crm: Crm, resource: str
) -> None:
    holder = made(api, crm.agency, resource, external_ids={"hubspot": "123"})
    other = made(api, crm.agency, resource)
    refused = RESOURCES[resource](api, crm.agency, {"external_ids": {"hubspot": "123"}})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/conflict")
    assert "hubspot:123 is already held by" in refused.json()["detail"]
    assert str(holder["id"]) in refused.json()["detail"]
    url = f"/api/v2/{resource}/{other['id']}"
    moved = api.patch(url, json={"external_ids": {"hubspot": "123"}}, headers=crm.agency)
    assert moved.status_code == 409 and str(holder["id"]) in moved.json()["detail"]
    assert api.get(url, headers=crm.agency).json() == other  # nothing half-written
    listed = api.get(f"/api/v2/{resource}", params={"limit": 500}, headers=crm.agency).json()
    assert len(listed["data"]) == 2  # the refused create left no row


def test_an_id_is_unique_per_organization_and_record_type_only(
    api: httpx.Client, crm: Crm, ctx: Context, resource: str
) -> None:
    made(api, crm.agency, resource, external_ids={"hubspot": "123"})
    elsewhere = seed(ctx, "initech")
    assert made(api, elsewhere.agency, resource, external_ids={"hubspot": "123"})
    made(api, crm.agency, resource, external_ids={"salesforce": "123"})  # another system
    for other in sorted(set(RESOURCES) - {resource}):  # another record type
        made(api, crm.agency, other, external_ids={"hubspot": "123"})


def test_a_record_is_found_by_any_of_its_ids(api: httpx.Client, crm: Crm, resource: str) -> None:
    record = made(api, crm.agency, resource, external_ids={"hubspot": "calls:1", "x": "a b"})
    made(api, crm.agency, resource, external_ids={"hubspot": "calls:2"})
    url = f"/api/v2/{resource}"
    for wanted in ("hubspot:calls:1", "x:a b"):
        found = api.get(url, params={"external_id": wanted}, headers=crm.agency).json()
        assert found["data"] == [record]
    for missing in ("hubspot:calls", "salesforce:calls:1"):
        assert api.get(url, params={"external_id": missing}, headers=crm.agency).json() == {
            "data": [],
            "next_cursor": None,
        }


def test_deleting_a_record_frees_its_ids(api: httpx.Client, crm: Crm, resource: str) -> None:
    record = made(api, crm.agency, resource, external_ids={"hubspot": "123"})
    assert api.delete(f"/api/v2/{resource}/{record['id']}", headers=crm.agency).status_code == 200
    assert made(api, crm.agency, resource, external_ids={"hubspot": "123"})


def test_deleting_a_client_frees_the_ids_of_everything_it_held(api: httpx.Client, crm: Crm) -> None:
    ref = _client(api, crm.agency)
    claims = {"external_ids": {"hubspot": "77"}}
    for resource, body in (
        ("contacts", {"name": "Hank"}),
        ("contracts", {"name": "Plan", "amount_cents": 1, "start_date": "2026-01-01"}),
        ("engagements", {"kind": "call"}),
    ):
        response = api.post(
            f"/api/v2/{resource}", json={"client_id": ref, **body, **claims}, headers=crm.agency
        )
        assert response.status_code == 201, response.text
    assert api.delete(f"/api/v2/clients/{ref}", headers=crm.agency).status_code == 200
    for resource in ("contacts", "contracts", "engagements"):
        assert made(api, crm.agency, resource, **claims)["external_ids"] == {"hubspot": "77"}


BAD_EXTERNAL_IDS: list[object] = [
    {"HubSpot": "1"},
    {"hub spot": "1"},
    {"": "1"},
    {"a" * 33: "1"},
    {"hubspot": ""},
    {"hubspot": "x" * 256},
    {"hubspot": "1\n2"},
    {"hubspot": 123},
    {f"s{i}": "1" for i in range(21)},
    ["hubspot", "1"],
]


def test_bad_external_ids_are_400(api: httpx.Client, crm: Crm, resource: str) -> None:
    record = made(api, crm.agency, resource)
    for external_ids in BAD_EXTERNAL_IDS:
        response = RESOURCES[resource](api, crm.agency, {"external_ids": external_ids})
        assert response.status_code == 400, (external_ids, response.text)
        url = f"/api/v2/{resource}/{record['id']}"
        patched = api.patch(url, json={"external_ids": external_ids}, headers=crm.agency)
        assert patched.status_code == 400, (external_ids, patched.text)
    assert api.get(f"/api/v2/{resource}/{record['id']}", headers=crm.agency).json() == record


def test_an_id_held_in_another_location_is_refused_without_saying_where(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    """The organization-wide rule makes the refusal itself unavoidable (the write cannot
    succeed); what it says is the same for every holder the key cannot see: no record id,
    no name, no location. The key's own lists stay empty of it."""
    branch = create_location(ctx, OPERATOR, org_slug="acme", name="Branch", slug="branch")
    branch_key = crm.key(*CRM, location_id=branch.id)
    main_client = made(api, crm.located, "clients", name="Main's secret client",
                       external_ids={"hubspot": "123"})  # fmt: skip
    agency_client = made(api, crm.agency, "clients", external_ids={"hubspot": "456"})
    answers = []
    for held in ("123", "456"):
        refused = RESOURCES["clients"](api, branch_key, {"external_ids": {"hubspot": held}})
        assert refused.status_code == 409
        body = refused.json()
        assert body["detail"] == (
            f"hubspot:{held} is already held by another client of this organization"
        )
        answers.append(body["detail"].replace(held, "…"))
        for secret in (main_client["id"], agency_client["id"], "secret", "location", "Main"):
            assert str(secret) not in refused.text
        found = api.get(
            "/api/v2/clients", params={"external_id": f"hubspot:{held}"}, headers=branch_key
        )
        assert found.json()["data"] == []
    assert answers[0] == answers[1]  # a location's record and the agency's read alike
    # the agency sees the holder named, as it may see it
    refused = RESOURCES["clients"](api, crm.agency, {"external_ids": {"hubspot": "123"}})
    assert str(main_client["id"]) in refused.json()["detail"]
