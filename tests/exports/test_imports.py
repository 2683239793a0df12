"""``/api/v2/imports``: a file of clients streamed into the database and applied by a job,
each row matched by id or external id to update, else created; a failing row says its
line and why and stops no other; uploading the same file again changes nothing."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from keyrack.services.context import Context
from keyrack.storage.tables.crm import Client, Contact, Contract, Engagement
from tests.crm.conftest import Crm
from tests.exports.conftest import drain

URL = "/api/v2/imports"
CSV = {"Content-Type": "text/csv"}


def _upload(
    api: httpx.Client, ctx: Context, headers: dict[str, str], body: bytes, **params: str
) -> dict[str, Any]:
    content_type = CSV if params.get("format", "csv") == "csv" else {}
    created = api.post(
        URL,
        params={"resource": params.pop("resource", "clients"), **params},
        content=body,
        headers={**headers, **content_type},
    )
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "queued"
    drain(ctx)
    shown = api.get(f"{URL}/{created.json()['id']}", headers=headers)
    assert shown.status_code == 200
    result: dict[str, Any] = shown.json()
    return result


def _failed(api: httpx.Client, job: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    rows, cursor = [], None
    while True:
        params: dict[str, Any] = {"outcome": "failed", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"{URL}/{job['id']}/rows", params=params, headers=headers).json()
        rows.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


def test_each_row_is_created_or_updated_and_a_bad_row_says_its_line_and_why(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    existing = api.post(
        "/api/v2/clients",
        json={"name": "Old name", "external_ids": {"legacy": "A1"}},
        headers=crm.agency,
    ).json()
    body = (
        b"name,arr_cents,health,custom.note,external_ids.legacy\r\n"
        b"New name,100,50,,A1\r\n"  # line 2: updates the client holding legacy:A1
        b'"Fresh, Inc.",200,,"two\r\nlines",B2\r\n'  # line 3, spanning two lines
        b"Too healthy,1,500,,C3\r\n"  # line 5
        b"Not money,lots,,,D4\r\n"  # line 6
        b",5,,,E5\r\n"  # line 7: creates without a name
        b"Taken,1,,,A1\r\n"  # line 8: matches A1 too, so an update
    )
    job = _upload(api, ctx, crm.agency, body)
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["created"], job["updated"], job["failed"]) == (6, 1, 2, 3)
    failed = _failed(api, job, crm.agency)
    assert [(r["line"], r["error"]) for r in failed] == [
        (5, "health must be a score between 0 and 100"),
        (6, "arr_cents: 'lots' is not an integer"),
        (7, "name: required to create a client (no id or external id matched)"),
    ]
    shown = api.get(f"/api/v2/clients/{existing['id']}", headers=crm.agency).json()
    assert (shown["name"], shown["arr_cents"], shown["health"]) == ("Taken", 1, 50)
    fresh = api.get(
        "/api/v2/clients", params={"external_id": "legacy:B2"}, headers=crm.agency
    ).json()["data"][0]
    assert fresh["name"] == "Fresh, Inc." and fresh["custom_fields"] == {"note": "two\r\nlines"}
    every = api.get(f"{URL}/{job['id']}/rows", headers=crm.agency).json()["data"]
    assert [r["line"] for r in every] == [2, 3, 5, 6, 7, 8]
    assert every[1]["record_id"] == fresh["id"]


def test_ndjson_rows_match_by_id_and_a_line_that_is_not_json_fails_alone(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    made = api.post("/api/v2/clients", json={"name": "Acme"}, headers=crm.agency).json()
    lines = [
        json.dumps({"id": made["id"], "arr_cents": 7, "custom_fields": {"tier": "gold"}}),
        "{not json",
        json.dumps({"name": "Zürich AG", "external_ids": {"crm": "z"}}),
        json.dumps({"id": "cli_missing", "name": "Ghost"}),
        json.dumps([1, 2]),
    ]
    body = ("\n".join(lines) + "\n").encode()
    job = _upload(api, ctx, crm.agency, body, format="ndjson")
    assert (job["created"], job["updated"], job["failed"]) == (1, 1, 3)
    errors = {r["line"]: r["error"] for r in _failed(api, job, crm.agency)}
    assert errors[2].startswith("not JSON") and errors[4] == "no client 'cli_missing'"
    assert errors[5] == "not a JSON object"
    shown = api.get(f"/api/v2/clients/{made['id']}", headers=crm.agency).json()
    assert (shown["arr_cents"], shown["custom_fields"]) == (7, {"tier": "gold"})


ROWS = int(os.environ.get("KEYRACK_TEST_IMPORT_ROWS", "10000"))
"""Rows of the large file on each backend (a hundred of them bad); the issue's 100,000 is
``KEYRACK_TEST_IMPORT_ROWS=100000``."""


def _big_file(rows: int) -> tuple[bytes, list[int]]:
    """``rows`` clients, one in a hundred bad (in one of four ways); the bad rows' lines."""
    out = io.StringIO()
    out.write("name,status,arr_cents,health,custom.tier,external_ids.legacy\r\n")
    bad = []
    for i in range(rows):
        line = i + 2
        name, status, arr, health = f"Client {i}, Ltd", "active", str(i), str(i % 101)
        if i % 100 == 37:
            bad.append(line)
            kind = i % 4
            if kind == 0:
                health = "101"
            elif kind == 1:
                arr = "12.5"
            elif kind == 2:
                status = "asleep"
            else:
                name = ""
        out.write(f'"{name}",{status},{arr},{health},t{i % 3},L{i}\r\n')
    return out.getvalue().encode(), bad


def _state(ctx: Context, org_id: int) -> tuple[int, Any]:
    with ctx.db.session() as session:
        row = session.execute(
            select(func.count(), func.max(Client.updated_at)).where(Client.org_id == org_id)
        ).one()
    return int(row[0]), row[1]


@pytest.mark.timeout(900)
def test_a_large_file_with_1_percent_bad_rows_imports_the_rest_and_again_changes_nothing(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    rows = ROWS
    body, bad = _big_file(rows)
    job = _upload(api, ctx, crm.agency, body)
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["failed"]) == (rows, len(bad))
    assert job["created"] == rows - len(bad)
    failed = _failed(api, job, crm.agency)
    assert [r["line"] for r in failed] == bad
    assert all(r["error"] for r in failed)
    before = _state(ctx, crm.org.org_id)
    assert before[0] == rows - len(bad)

    again = _upload(api, ctx, crm.agency, body)
    assert (again["created"], again["updated"], again["failed"]) == (0, 0, len(bad))
    assert again["unchanged"] == rows - len(bad)
    assert [r["line"] for r in _failed(api, again, crm.agency)] == bad
    assert _state(ctx, crm.org.org_id) == before


def test_uploading_needs_imports_create_and_clients_write(api: httpx.Client, crm: Crm) -> None:
    writer = crm.key("clients:write")
    importer = crm.key("imports:create", "clients:read")
    body = b"name\r\nA\r\n"
    params = {"resource": "clients"}
    assert api.post(URL, params=params, content=body, headers={**writer, **CSV}).status_code == 403
    refused = api.post(URL, params=params, content=body, headers={**importer, **CSV})
    assert refused.status_code == 403 and "clients:write" in refused.json()["detail"]
    assert api.get(URL, headers=crm.agency).json()["data"] == []  # nothing half-uploaded shows


@pytest.mark.parametrize(
    ("params", "headers", "body"),
    [
        ({"resource": "clients"}, {}, b"name\r\nA\r\n"),  # no format
        ({"resource": "keys"}, CSV, b"name\r\nA\r\n"),
        ({"resource": "usage"}, CSV, b"name\r\nA\r\n"),  # not uploadable
        ({"resource": "clients"}, CSV, b""),
    ],
)
def test_bad_uploads_are_400_problems(
    api: httpx.Client, crm: Crm, params: dict[str, str], headers: dict[str, str], body: bytes
) -> None:
    response = api.post(URL, params=params, content=body, headers={**crm.agency, **headers})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_a_location_keys_upload_lands_in_its_location_and_is_its_own(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    job = _upload(api, ctx, crm.located, b"name,external_ids.x\r\nHere,1\r\n")
    assert job["created"] == 1
    listed = api.get("/api/v2/clients", headers=crm.located).json()["data"]
    assert [c["location_id"] for c in listed] == [crm.org.location_id]
    assert api.get(f"{URL}/{job['id']}", headers=crm.agency).status_code == 200
    other = _upload(api, ctx, crm.agency, b"name\r\nThere\r\n")
    assert api.get(f"{URL}/{other['id']}", headers=crm.located).status_code == 404


CONTACTS_HEADER = b"id,client_id,name,email,phone,title,external_ids.legacy\r\n"


def _contacts_state(ctx: Context, org_id: int) -> tuple[int, Any]:
    with ctx.db.session() as session:
        row = session.execute(
            select(func.count(), func.max(Contact.updated_at)).where(Contact.org_id == org_id)
        ).one()
    return int(row[0]), row[1]


def test_contacts_match_by_external_id_link_to_their_client_and_a_bad_row_fails_alone(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    acme = api.post("/api/v2/clients", json={"name": "Acme"}, headers=crm.agency).json()["id"]
    beta = api.post("/api/v2/clients", json={"name": "Beta"}, headers=crm.agency).json()["id"]
    old = api.post(
        "/api/v2/contacts",
        json={"client_id": acme, "name": "Old", "external_ids": {"legacy": "P1"}},
        headers=crm.agency,
    ).json()
    by_api = api.post(
        "/api/v2/contacts",
        json={"client_id": beta, "name": "Cy", "phone": "call me"},
        headers=crm.agency,
    )
    assert by_api.status_code == 400
    body = (
        CONTACTS_HEADER
        + (
            f",{acme},New,,,,P1\r\n"  # line 2: updates the contact holding legacy:P1
            f",{beta},Bea,bea@example.com,+1 555 0100,CTO,P2\r\n"  # line 3: created at Beta
            f",{beta},Cy,,call me,,P3\r\n"  # line 4: the API's own error
            ",cli_missing,Dee,,,,P4\r\n"  # line 5
            ",,Eve,,,,P5\r\n"  # line 6: no client to create it at
            f",{beta},Old,,,,P1\r\n"  # line 7: P1 is Acme's contact
        ).encode()
    )
    job = _upload(api, ctx, crm.agency, body, resource="contacts")
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["created"], job["updated"], job["failed"]) == (6, 1, 1, 4)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.agency)] == [
        (4, by_api.json()["detail"]),
        (5, "no client 'cli_missing'"),
        (6, "client_id: required to create a contact (no id or external id matched)"),
        (7, f"client_id: contact {old['id']!r} belongs to another client"),
    ]
    shown = api.get(f"/api/v2/contacts/{old['id']}", headers=crm.agency).json()
    assert (shown["name"], shown["client_id"]) == ("New", acme)
    bea = api.get(
        "/api/v2/contacts", params={"external_id": "legacy:P2"}, headers=crm.agency
    ).json()["data"][0]
    assert (bea["client_id"], bea["email"], bea["phone"], bea["title"]) == (
        beta,
        "bea@example.com",
        "+1 555 0100",
        "CTO",
    )
    before = _contacts_state(ctx, crm.org.org_id)
    assert before[0] == 2

    again = _upload(api, ctx, crm.agency, body, resource="contacts")
    assert (again["created"], again["updated"], again["unchanged"], again["failed"]) == (
        0,
        0,
        2,
        4,
    )
    assert _contacts_state(ctx, crm.org.org_id) == before


def test_contacts_ndjson_match_by_id_in_the_shape_an_export_writes(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    acme = api.post("/api/v2/clients", json={"name": "Acme"}, headers=crm.agency).json()["id"]
    made = api.post(
        "/api/v2/contacts", json={"client_id": acme, "name": "Ann"}, headers=crm.agency
    ).json()
    lines = [
        json.dumps({**made, "title": "CEO"}),
        json.dumps({"id": "con_missing", "name": "Ghost"}),
        json.dumps({"client_id": acme, "name": "Bo", "custom_fields": {"x": 1}}),
    ]
    body = ("\n".join(lines) + "\n").encode()
    job = _upload(api, ctx, crm.agency, body, resource="contacts", format="ndjson")
    assert (job["created"], job["updated"], job["failed"]) == (0, 1, 2)
    errors = {r["line"]: r["error"] for r in _failed(api, job, crm.agency)}
    assert errors == {2: "no contact 'con_missing'", 3: "unknown column 'custom_fields'"}
    shown = api.get(f"/api/v2/contacts/{made['id']}", headers=crm.agency).json()
    assert (shown["name"], shown["title"]) == ("Ann", "CEO")


def test_a_location_keys_contacts_stay_in_its_location(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    here = api.post(
        "/api/v2/clients",
        json={"name": "Here", "location_id": crm.org.location_id},
        headers=crm.agency,
    ).json()["id"]
    elsewhere = api.post("/api/v2/clients", json={"name": "There"}, headers=crm.agency).json()
    assert api.get(f"/api/v2/clients/{elsewhere['id']}", headers=crm.located).status_code == 404
    body = CONTACTS_HEADER + f",{here},Hal,,,,H1\r\n,{elsewhere['id']},Ida,,,,I1\r\n".encode()
    job = _upload(api, ctx, crm.located, body, resource="contacts")
    assert (job["created"], job["failed"]) == (1, 1)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.located)] == [
        (3, f"no client {elsewhere['id']!r}")
    ]
    listed = api.get("/api/v2/contacts", headers=crm.agency).json()["data"]
    assert [(c["name"], c["client_id"]) for c in listed] == [("Hal", here)]


def test_uploading_contacts_needs_contacts_write(api: httpx.Client, crm: Crm) -> None:
    importer = crm.key("imports:create", "clients:write")
    refused = api.post(
        URL,
        params={"resource": "contacts"},
        content=CONTACTS_HEADER,
        headers={**importer, **CSV},
    )
    assert refused.status_code == 403 and "contacts:write" in refused.json()["detail"]


CONTRACTS_HEADER = (
    b"id,client_id,name,amount_cents,currency,start_date,end_date,"
    b"recurring_amount_cents,recurring_interval,external_ids.legacy\r\n"
)


def _contracts_state(ctx: Context, org_id: int) -> tuple[int, Any]:
    with ctx.db.session() as session:
        row = session.execute(
            select(func.count(), func.max(Contract.updated_at)).where(Contract.org_id == org_id)
        ).one()
    return int(row[0]), row[1]


def test_contracts_are_checked_as_the_api_checks_them_and_again_change_nothing(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    acme = api.post("/api/v2/clients", json={"name": "Acme"}, headers=crm.agency).json()["id"]
    base = {"client_id": acme, "name": "Base", "amount_cents": 1, "start_date": "2026-01-01"}
    old = api.post(
        "/api/v2/contracts", json={**base, "external_ids": {"legacy": "K1"}}, headers=crm.agency
    ).json()
    backwards = api.post(
        "/api/v2/contracts", json={**base, "end_date": "2025-01-01"}, headers=crm.agency
    )
    half = api.post(
        "/api/v2/contracts", json={**base, "recurring_amount_cents": 100}, headers=crm.agency
    )
    assert (backwards.status_code, half.status_code) == (400, 400)
    body = (
        CONTRACTS_HEADER
        + (
            f",{acme},Renewed,5000,,2026-01-01,,,,K1\r\n"  # line 2: updates K1
            f",{acme},Support,1200,eur,2026-02-01,2027-01-31,100,month,K2\r\n"  # line 3: created
            f",{acme},Backwards,1,,2026-01-01,2025-01-01,,,K3\r\n"  # line 4
            f",{acme},Half,1,,2026-01-01,,100,,K4\r\n"  # line 5
            f",{acme},Bad date,1,,2026-13-01,,,,K5\r\n"  # line 6
            f",{acme},No start,1,,,,,,K6\r\n"  # line 7
        ).encode()
    )
    job = _upload(api, ctx, crm.agency, body, resource="contracts")
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["created"], job["updated"], job["failed"]) == (6, 1, 1, 4)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.agency)] == [
        (4, backwards.json()["detail"]),
        (5, half.json()["detail"]),
        (6, "start_date: '2026-13-01' is not a date (YYYY-MM-DD)"),
        (7, "start_date: required to create a contract (no id or external id matched)"),
    ]
    shown = api.get(f"/api/v2/contracts/{old['id']}", headers=crm.agency).json()
    assert (shown["name"], shown["amount_cents"]) == ("Renewed", 5000)
    made = api.get(
        "/api/v2/contracts", params={"external_id": "legacy:K2"}, headers=crm.agency
    ).json()["data"][0]
    assert (made["currency"], made["end_date"], made["annual_recurring_cents"]) == (
        "EUR",
        "2027-01-31",
        1200,
    )
    before = _contracts_state(ctx, crm.org.org_id)
    assert before[0] == 2

    again = _upload(api, ctx, crm.agency, body, resource="contracts")
    assert (again["created"], again["updated"], again["unchanged"], again["failed"]) == (
        0,
        0,
        2,
        4,
    )
    assert _contracts_state(ctx, crm.org.org_id) == before


def test_a_location_keys_contracts_stay_in_its_location(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    here = api.post(
        "/api/v2/clients",
        json={"name": "Here", "location_id": crm.org.location_id},
        headers=crm.agency,
    ).json()["id"]
    there = api.post("/api/v2/clients", json={"name": "There"}, headers=crm.agency).json()["id"]
    body = (
        CONTRACTS_HEADER
        + (f",{here},Hers,1,,2026-01-01,,,,H1\r\n,{there},Theirs,1,,2026-01-01,,,,T1\r\n").encode()
    )
    job = _upload(api, ctx, crm.located, body, resource="contracts")
    assert (job["created"], job["failed"]) == (1, 1)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.located)] == [
        (3, f"no client {there!r}")
    ]
    listed = api.get("/api/v2/contracts", headers=crm.agency).json()["data"]
    assert [(c["name"], c["client_id"]) for c in listed] == [("Hers", here)]


def test_uploading_contracts_needs_contracts_write(api: httpx.Client, crm: Crm) -> None:
    importer = crm.key("imports:create", "clients:write", "contacts:write")
    refused = api.post(
        URL,
        params={"resource": "contracts"},
        content=CONTRACTS_HEADER,
        headers={**importer, **CSV},
    )
    assert refused.status_code == 403 and "contracts:write" in refused.json()["detail"]


ENGAGEMENTS_HEADER = (
    b"id,client_id,contact_id,kind,occurred_at,subject,body,owner_id,external_ids.legacy\r\n"
)


def _engagements_state(ctx: Context, org_id: int) -> tuple[int, Any]:
    with ctx.db.session() as session:
        row = session.execute(
            select(func.count(), func.max(Engagement.updated_at)).where(Engagement.org_id == org_id)
        ).one()
    return int(row[0]), row[1]


def test_engagements_link_a_contact_of_their_client_and_again_change_nothing(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    acme = api.post("/api/v2/clients", json={"name": "Acme"}, headers=crm.agency).json()["id"]
    beta = api.post("/api/v2/clients", json={"name": "Beta"}, headers=crm.agency).json()["id"]
    ann, bob = (
        api.post(
            "/api/v2/contacts", json={"client_id": client, "name": name}, headers=crm.agency
        ).json()["id"]
        for client, name in ((acme, "Ann"), (beta, "Bob"))
    )
    old = api.post(
        "/api/v2/engagements",
        json={"client_id": acme, "kind": "note", "external_ids": {"legacy": "E1"}},
        headers=crm.agency,
    ).json()
    elsewhere = api.post(
        "/api/v2/engagements",
        json={"client_id": acme, "kind": "call", "contact_id": bob},
        headers=crm.agency,
    )
    assert elsewhere.status_code == 404
    body = (
        ENGAGEMENTS_HEADER
        + (
            f",{acme},{ann},call,2026-03-01T10:00:00+02:00,Renewal,,,E1\r\n"  # line 2: updates E1
            f',{acme},,meeting,2026-03-02T09:00:00Z,Kickoff,"two\r\nlines",,E2\r\n'  # lines 3-4
            f",{acme},{bob},call,2026-03-03T09:00:00Z,,,,E3\r\n"  # line 5: Beta's contact
            f",{acme},,chat,,,,,E4\r\n"  # line 6
            f",{acme},,call,2026-03-03 09:00,,,,E5\r\n"  # line 7
            f",{acme},,note,,,,999999,E6\r\n"  # line 8
        ).encode()
    )
    job = _upload(api, ctx, crm.agency, body, resource="engagements")
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["created"], job["updated"], job["failed"]) == (6, 1, 1, 4)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.agency)] == [
        (5, elsewhere.json()["detail"]),
        (6, "kind: 'chat' is not one of email, call, meeting, note"),
        (7, "occurred_at: '2026-03-03 09:00' has no time zone"),
        (8, "no such owner user"),
    ]
    shown = api.get(f"/api/v2/engagements/{old['id']}", headers=crm.agency).json()
    assert (shown["kind"], shown["contact_id"], shown["subject"]) == ("call", ann, "Renewal")
    assert shown["occurred_at"].startswith("2026-03-01T08:00:00")
    made = api.get(
        "/api/v2/engagements", params={"external_id": "legacy:E2"}, headers=crm.agency
    ).json()["data"][0]
    assert (made["kind"], made["contact_id"], made["body"]) == ("meeting", None, "two\r\nlines")
    before = _engagements_state(ctx, crm.org.org_id)
    assert before[0] == 2

    again = _upload(api, ctx, crm.agency, body, resource="engagements")
    assert (again["created"], again["updated"], again["unchanged"], again["failed"]) == (
        0,
        0,
        2,
        4,
    )
    assert _engagements_state(ctx, crm.org.org_id) == before


def test_a_location_keys_engagements_stay_in_its_location(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    here = api.post(
        "/api/v2/clients",
        json={"name": "Here", "location_id": crm.org.location_id},
        headers=crm.agency,
    ).json()["id"]
    there = api.post("/api/v2/clients", json={"name": "There"}, headers=crm.agency).json()["id"]
    body = ENGAGEMENTS_HEADER + f",{here},,note,,,,,H1\r\n,{there},,note,,,,,T1\r\n".encode()
    job = _upload(api, ctx, crm.located, body, resource="engagements")
    assert (job["created"], job["failed"]) == (1, 1)
    assert [(r["line"], r["error"]) for r in _failed(api, job, crm.located)] == [
        (3, f"no client {there!r}")
    ]
    listed = api.get("/api/v2/engagements", headers=crm.agency).json()["data"]
    assert [e["client_id"] for e in listed] == [here]


def test_uploading_engagements_needs_engagements_write(api: httpx.Client, crm: Crm) -> None:
    importer = crm.key("imports:create", "clients:write", "contacts:write", "contracts:write")
    refused = api.post(
        URL,
        params={"resource": "engagements"},
        content=ENGAGEMENTS_HEADER,
        headers={**importer, **CSV},
    )
    assert refused.status_code == 403 and "engagements:write" in refused.json()["detail"]
