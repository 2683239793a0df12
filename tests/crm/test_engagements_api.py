"""/api/v2/engagements: per route and per status, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from keyrack.domain.tenancy import Role
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.server import create_app
from keyrack.services import tenancy
from keyrack.services.context import Context
from tests.conftest import OPERATOR
from tests.crm.conftest import Crm, later, seed
from tests.live import serve_in_thread

URL = "/api/v2/engagements"
Headers = dict[str, str]


def client(api: httpx.Client, headers: Headers, name: str = "Globex") -> str:
    response = api.post("/api/v2/clients", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    ref: str = response.json()["id"]
    return ref


def contact(api: httpx.Client, headers: Headers, client_ref: str) -> str:
    response = api.post(
        "/api/v2/contacts", json={"client_id": client_ref, "name": "Hank"}, headers=headers
    )
    assert response.status_code == 201, response.text
    ref: str = response.json()["id"]
    return ref


def log(api: httpx.Client, headers: Headers, **body: object) -> dict[str, object]:
    response = api.post(URL, json={"kind": "call", **body}, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def test_an_engagement_is_logged_read_changed_and_deleted(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    owner = tenancy.create_user(
        ctx, OPERATOR, org_slug="acme", email="rep@acme.test", role=Role.MEMBER
    ).user
    ref = client(api, crm.agency)
    person = contact(api, crm.agency, ref)
    body = "Called about renewal.\r\n\tThey want\nSSO first."
    created = log(
        api,
        crm.agency,
        client_id=ref,
        contact_id=person,
        kind="meeting",
        occurred_at="2026-01-12T15:30:00+01:00",
        subject="Renewal",
        body=body,
        owner_id=owner.id,
        external_ids={"hubspot": "meetings:1042"},
    )
    assert str(created["id"]).startswith("eng_")
    assert (created["client_id"], created["contact_id"], created["kind"]) == (
        ref,
        person,
        "meeting",
    )
    assert created["occurred_at"] == "2026-01-12T14:30:00Z"
    assert (created["body"], created["owner_id"]) == (body, owner.id)
    assert created["external_ids"] == {"hubspot": "meetings:1042"}
    assert created["created_at"] == created["updated_at"]
    url = f"{URL}/{created['id']}"
    assert api.get(url, headers=crm.agency).json() == created

    patched = api.patch(
        url, json={"kind": "note", "contact_id": None, "subject": None}, headers=crm.agency
    ).json()
    assert (patched["kind"], patched["contact_id"], patched["subject"]) == ("note", None, None)
    assert patched["body"] == body and later(patched, created)
    assert api.get(URL, headers=crm.agency).json()["data"] == [patched]

    assert api.delete(url, headers=crm.agency).json() == patched
    assert api.get(url, headers=crm.agency).status_code == 404


def test_occurred_at_defaults_to_now(api: httpx.Client, crm: Crm) -> None:
    created = log(api, crm.agency, client_id=client(api, crm.agency), kind="note")
    assert created["occurred_at"] == created["created_at"]
    assert created["contact_id"] is None and created["subject"] is None


def test_lists_filter_by_client_contact_kind_and_when(api: httpx.Client, crm: Crm) -> None:
    globex, initech = client(api, crm.agency), client(api, crm.agency, "Initech")
    hank = contact(api, crm.agency, globex)
    email = log(api, crm.agency, client_id=globex, contact_id=hank, kind="email",
                occurred_at="2026-01-01T09:00:00Z")["id"]  # fmt: skip
    call = log(api, crm.agency, client_id=globex, occurred_at="2026-01-02T09:00:00Z")["id"]
    other = log(api, crm.agency, client_id=initech, occurred_at="2026-01-03T09:00:00Z")["id"]

    def listed(**params: str) -> list[object]:
        response = api.get(URL, params=params, headers=crm.agency)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["data"]]

    assert listed() == [other, call, email]
    assert listed(client_id=globex) == [call, email]
    assert listed(contact_id=hank) == [email]
    assert listed(kind="call") == [other, call]
    assert listed(occurred_since="2026-01-02T00:00:00Z") == [other, call]
    assert listed(occurred_until="2026-01-02T09:00:00Z") == [email]
    assert listed(client_id=globex, kind="email", occurred_since="2026-01-01T00:00:00Z") == [email]


BAD_BODIES: list[dict[str, object]] = [
    {"kind": "sms"},
    {"kind": None},
    {"occurred_at": "2026-01-01T09:00:00"},  # no time zone
    {"subject": "Re: \u001b[31mrenewal"},
    {"subject": "x" * 501},
    {"body": "line one\u0000"},
    {"body": "fine\u2028forged log line"},
    {"body": "x" * 65_537},
    {"owner_id": 0},
    {"external_ids": {"HubSpot": "1"}},
    {"external_ids": {"hubspot": ""}},
    {"external_ids": {"hubspot": None}},
    {"unknown": 1},
]


def test_a_bad_engagement_is_400(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    for change in BAD_BODIES:
        body = {"client_id": ref, "kind": "call", **change}
        if change.get("kind", "") is None:
            body.pop("kind")
        response = api.post(URL, json=body, headers=crm.agency)
        assert response.status_code == 400, (change, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "forged" not in response.text and "\u001b" not in response.text
    assert api.get(URL, headers=crm.agency).json()["data"] == []


def test_a_bad_change_is_400_and_changes_nothing(api: httpx.Client, crm: Crm) -> None:
    created = log(api, crm.agency, client_id=client(api, crm.agency), body="kept")
    url = f"{URL}/{created['id']}"
    for change in (
        {"kind": None},
        {"occurred_at": None},
        {"external_ids": None},
        {"body": "\u0007"},
    ):
        assert api.patch(url, json=change, headers=crm.agency).status_code == 400, change
    assert api.get(url, headers=crm.agency).json() == created


def test_bad_list_filters_are_400(api: httpx.Client, crm: Crm) -> None:
    for params in (
        {"kind": "sms"},
        {"occurred_since": "yesterday"},
        {"occurred_since": "2026-01-02T00:00:00Z", "occurred_until": "2026-01-01T00:00:00Z"},
        {"updated_since": "2026-01-01"},
        {"external_id": "hubspot"},
        {"limit": 501},
        {"cursor": "bm9wZQ"},
    ):
        response = api.get(URL, params=params, headers=crm.agency)
        assert response.status_code == 400, (params, response.text)


def test_engagements_need_a_key_and_their_permissions(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    created = log(api, crm.agency, client_id=ref)
    url = f"{URL}/{created['id']}"
    assert api.get(URL).status_code == 401
    assert api.get(url, headers={"X-API-Key": "kr_test_nope"}).status_code == 401
    reader = crm.key("engagements:read")
    assert api.get(url, headers=reader).status_code == 200
    for response in (
        api.post(URL, json={"client_id": ref, "kind": "call"}, headers=reader),
        api.patch(url, json={"kind": "note"}, headers=reader),
        api.delete(url, headers=reader),
        api.get(URL, headers=crm.key("contacts:read", "clients:read")),
        api.get(url, headers=crm.key("engagements:write")),
    ):
        assert response.status_code == 403, response.request.url
        assert response.json()["type"].endswith("/insufficient-permission")


def test_engagements_out_of_scope_are_404(api: httpx.Client, crm: Crm, ctx: Context) -> None:
    ref = client(api, crm.agency)
    created = log(api, crm.agency, client_id=ref, subject="Secret plans")
    url = f"{URL}/{created['id']}"
    other = seed(ctx, "initech")
    for headers in (other.agency, crm.located):
        for response in (
            api.get(url, headers=headers),
            api.patch(url, json={"subject": "Pwned"}, headers=headers),
            api.delete(url, headers=headers),
            api.post(URL, json={"client_id": ref, "kind": "call"}, headers=headers),
            api.get(URL, params={"client_id": ref}, headers=headers),
        ):
            assert response.status_code == 404, response.request.url
            assert "Secret" not in response.text
        assert api.get(URL, headers=headers).json()["data"] == []
    assert api.get(url, headers=crm.agency).json() == created


def test_a_contact_or_owner_from_elsewhere_is_404(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    globex, initech = client(api, crm.agency), client(api, crm.agency, "Initech")
    at_initech = contact(api, crm.agency, initech)
    other = seed(ctx, "umbrella")
    for body in (
        {"client_id": globex, "contact_id": at_initech},
        {"client_id": globex, "contact_id": "con_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"},
        {"client_id": globex, "owner_id": other.org.admin_id},
        {"client_id": "cli_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"},
    ):
        response = api.post(URL, json={"kind": "call", **body}, headers=crm.agency)
        assert response.status_code == 404, (body, response.text)
    created = log(api, crm.agency, client_id=globex)
    moved = api.patch(f"{URL}/{created['id']}", json={"contact_id": at_initech}, headers=crm.agency)
    assert moved.status_code == 404


def test_deleting_its_contact_keeps_the_engagement_and_marks_it_changed(
    api: httpx.Client, crm: Crm
) -> None:
    ref = client(api, crm.agency)
    person = contact(api, crm.agency, ref)
    created = log(api, crm.agency, client_id=ref, contact_id=person)
    assert api.delete(f"/api/v2/contacts/{person}", headers=crm.agency).status_code == 200
    after = api.get(f"{URL}/{created['id']}", headers=crm.agency).json()
    assert after["contact_id"] is None and later(after, created)
    changed = api.get(URL, params={"updated_since": created["updated_at"]}, headers=crm.agency)
    assert [e["id"] for e in changed.json()["data"]] == [created["id"]]


def test_deleting_the_client_deletes_its_engagements(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    created = log(api, crm.agency, client_id=ref, external_ids={"hubspot": "calls:7"})
    assert api.delete(f"/api/v2/clients/{ref}", headers=crm.agency).status_code == 200
    assert api.get(f"{URL}/{created['id']}", headers=crm.agency).status_code == 404
    again = log(
        api, crm.agency, client_id=client(api, crm.agency), external_ids={"hubspot": "calls:7"}
    )
    assert again["external_ids"] == {"hubspot": "calls:7"}  # the id went with the engagement


@pytest.fixture
def frozen_api(ctx: Context) -> Iterator[httpx.Client]:
    """The app with a limiter whose clock never moves: a spent token never comes back."""
    app = create_app(ctx=ctx)
    app.state.limiter = MemoryLimiter(clock=lambda: 1_000.0)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as api:
        yield api


def test_engagement_routes_answer_429_past_the_keys_rate(
    frozen_api: httpx.Client, ctx: Context
) -> None:
    crm = seed(ctx)
    ref = client(frozen_api, crm.agency)
    created = log(frozen_api, crm.agency, client_id=ref)
    _, secret = crm.org.new_key(
        permissions=("engagements:read", "engagements:write"), rate_per_second=1
    )
    slow = {"X-API-Key": secret}
    assert frozen_api.get(URL, headers=slow).status_code == 200
    for response in (
        frozen_api.get(URL, headers=slow),
        frozen_api.post(URL, json={"client_id": ref, "kind": "call"}, headers=slow),
        frozen_api.get(f"{URL}/{created['id']}", headers=slow),
        frozen_api.patch(f"{URL}/{created['id']}", json={"kind": "note"}, headers=slow),
        frozen_api.delete(f"{URL}/{created['id']}", headers=slow),
    ):
        assert response.status_code == 429, response.request.url
        assert response.json()["type"].endswith("/rate-limited")
        assert int(response.headers["retry-after"]) >= 1
    assert frozen_api.get(f"{URL}/{created['id']}", headers=crm.agency).json() == created
