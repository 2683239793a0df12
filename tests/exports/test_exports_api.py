"""``/api/v2/exports``: an export job per resource and scope, its file as CSV or NDJSON
(optionally gzip), downloaded whole or by range, until it expires."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from keyrack.services import exports
from keyrack.services.context import Context
from tests.conftest import MutableClock
from tests.crm.conftest import Crm
from tests.exports.conftest import drain

URL = "/api/v2/exports"
Export = Callable[..., dict[str, Any]]
AWKWARD = [
    ("Acme, Inc.", 'says "hi"\nand, then\r\nmore'),
    ('The "Best" Co', "naïve café — 東京 🚀"),
    ("Zürich Ünits", ""),
    ("Plain", "line one\nline two"),
]


def _clients(api: httpx.Client, crm: Crm, headers: dict[str, str] | None = None) -> list[Any]:
    made = []
    for name, note in AWKWARD:
        body = {"name": name, "custom_fields": {"note": note, "seats": 3, "vip": True}}
        response = api.post("/api/v2/clients", json=body, headers=headers or crm.agency)
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


def _download(api: httpx.Client, job: dict[str, Any], headers: dict[str, str]) -> bytes:
    response = api.get(f"{URL}/{job['id']}/download", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-length"] == str(len(response.content)) == str(job["bytes"])
    return response.content


def test_a_csv_export_round_trips_through_csv_and_pandas(
    api: httpx.Client, crm: Crm, export: Export
) -> None:
    made = _clients(api, crm)
    job = export(crm.agency, resource="clients")
    assert (job["status"], job["rows_total"], job["rows_done"]) == ("succeeded", 4, 4)
    data = _download(api, job, crm.agency)
    assert data.count(b"\r\n") >= 5  # RFC 4180 line ends

    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert [r["name"] for r in rows] == [name for name, _ in AWKWARD]
    assert [r["custom.note"] for r in rows] == [note for _, note in AWKWARD]
    assert [r["id"] for r in rows] == [c["id"] for c in made]
    assert {r["custom.seats"] for r in rows} == {"3"} and {r["custom.vip"] for r in rows} == {
        "true"
    }

    frame = pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype=str)
    assert list(frame["name"]) == [name for name, _ in AWKWARD]
    assert list(frame["custom.note"]) == [note for _, note in AWKWARD]
    assert list(frame.columns[-3:]) == ["custom.note", "custom.seats", "custom.vip"]


def test_ndjson_gzip_holds_each_record_as_the_api_shows_it(
    api: httpx.Client, crm: Crm, export: Export
) -> None:
    made = _clients(api, crm)
    api.patch(
        f"/api/v2/clients/{made[0]['id']}",
        json={"external_ids": {"hubspot": "42"}},
        headers=crm.agency,
    )
    job = export(crm.agency, resource="clients", format="ndjson", gzip=True)
    lines = gzip.decompress(_download(api, job, crm.agency)).decode().splitlines()
    records = {r["id"]: r for r in map(json.loads, lines)}
    listed = api.get("/api/v2/clients", headers=crm.agency).json()["data"]
    for shown in listed:
        record = records[shown["id"]]
        for field in ("name", "status", "custom_fields", "external_ids", "health_band"):
            assert record[field] == shown[field]
    assert records[made[0]["id"]]["external_ids"] == {"hubspot": "42"}


@pytest.mark.parametrize("resource", ["contacts", "contracts", "engagements", "pulse", "usage"])
def test_every_resource_exports_its_records_with_their_client(
    api: httpx.Client, crm: Crm, export: Export, resource: str
) -> None:
    client = api.post("/api/v2/clients", json={"name": "Globex"}, headers=crm.agency).json()
    ref = client["id"]
    bodies: dict[str, tuple[str, Any]] = {
        "contacts": ("/api/v2/contacts", {"client_id": ref, "name": "Hank, Jr."}),
        "contracts": (
            "/api/v2/contracts",
            {"client_id": ref, "name": "Plan", "amount_cents": 100, "start_date": "2026-01-01"},
        ),
        "engagements": (
            "/api/v2/engagements",
            {
                "client_id": ref,
                "kind": "note",
                "occurred_at": "2026-01-02T00:00:00Z",
                "body": 'a "quoted"\nnote',
            },
        ),
        "pulse": ("/api/v2/pulse", {"client_id": ref, "score": 9, "comment": "great, thanks"}),
        "usage": (
            "/api/v2/usage",
            {
                "events": [
                    {
                        "id": "e1",
                        "client_id": ref,
                        "event": "login",
                        "count": 2,
                        "timestamp": "2026-01-02T00:00:00Z",
                    }
                ]
            },
        ),
    }
    path, body = bodies[resource]
    created = api.post(path, json=body, headers=crm.agency)
    assert created.status_code in (200, 201, 202), created.text
    job = export(crm.agency, resource=resource)
    assert job["status"] == "succeeded" and job["rows_done"] == 1, job
    rows = list(csv.DictReader(io.StringIO(_download(api, job, crm.agency).decode(), newline="")))
    assert len(rows) == 1 and rows[0]["client_id"] == ref


def test_a_second_export_of_the_same_resource_while_one_waits_is_409_with_its_id(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    first = api.post(URL, json={"resource": "clients"}, headers=crm.agency)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    second = api.post(URL, json={"resource": "clients", "format": "ndjson"}, headers=crm.agency)
    assert second.status_code == 409, second.text
    assert second.json()["export_id"] == first.json()["id"]
    assert first.json()["id"] in second.json()["detail"]
    other = api.post(URL, json={"resource": "contacts"}, headers=crm.agency)
    located = api.post(URL, json={"resource": "clients"}, headers=crm.located)
    assert (other.status_code, located.status_code) == (202, 202)  # another resource, scope
    drain(ctx)
    again = api.post(URL, json={"resource": "clients"}, headers=crm.agency)
    assert again.status_code == 202, again.text
    listed = api.get(URL, headers=crm.agency).json()["data"]
    assert listed[0]["id"] == again.json()["id"]


def test_a_location_key_exports_its_location_only(
    api: httpx.Client, crm: Crm, export: Export
) -> None:
    _clients(api, crm)  # the agency's own
    mine = _clients(api, crm, crm.located)
    job = export(crm.located, resource="clients")
    assert job["location_id"] == crm.org.location_id
    rows = list(csv.DictReader(io.StringIO(_download(api, job, crm.located).decode(), newline="")))
    assert [r["id"] for r in rows] == [c["id"] for c in mine]
    agency_job = export(crm.agency, resource="clients")
    assert agency_job["rows_done"] == 8
    hidden = api.get(f"{URL}/{agency_job['id']}", headers=crm.located)
    assert hidden.status_code == 404
    assert api.get(f"{URL}/{agency_job['id']}/download", headers=crm.located).status_code == 404
    assert [e["id"] for e in api.get(URL, headers=crm.located).json()["data"]] == [job["id"]]


def test_ranges_answer_206_with_the_bytes_asked_and_416_past_the_end(
    api: httpx.Client, crm: Crm, export: Export
) -> None:
    _clients(api, crm)
    job = export(crm.agency, resource="clients")
    whole = _download(api, job, crm.agency)
    size = len(whole)
    url = f"{URL}/{job['id']}/download"
    for asked, expected in [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, size - 1)),
        ("bytes=-7", (size - 7, size - 1)),
        (f"bytes=5-{size + 100}", (5, size - 1)),
    ]:
        response = api.get(url, headers={**crm.agency, "Range": asked})
        assert response.status_code == 206, (asked, response.text)
        start, end = expected
        assert response.content == whole[start : end + 1]
        assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert response.headers["content-length"] == str(end - start + 1)
    for ignored in ("bytes=0-1,5-6", "lines=1-2", "bytes=9-3"):
        response = api.get(url, headers={**crm.agency, "Range": ignored})
        assert (response.status_code, response.content) == (200, whole)
    past = api.get(url, headers={**crm.agency, "Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["content-type"] == "application/problem+json"
    assert past.json()["type"].endswith("/range-not-satisfiable")


def test_a_download_expires_after_seven_days_and_the_purge_drops_its_file(
    api: httpx.Client, crm: Crm, ctx: Context, clock: MutableClock, export: Export
) -> None:
    _clients(api, crm)
    job = export(crm.agency, resource="clients")
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert api.get(f"{URL}/{job['id']}/download", headers=crm.agency).status_code == 200
    assert exports.purge_expired(ctx) == 0
    clock.advance(timedelta(seconds=1))
    shown = api.get(f"{URL}/{job['id']}", headers=crm.agency).json()
    assert shown["status"] == "expired"
    gone = api.get(f"{URL}/{job['id']}/download", headers=crm.agency)
    assert gone.status_code == 409 and "expired" in gone.json()["detail"]
    assert exports.purge_expired(ctx) == 1
    assert exports.purge_expired(ctx) == 0


def test_a_canceled_export_has_no_file_and_cannot_be_canceled_twice(
    api: httpx.Client, crm: Crm, ctx: Context
) -> None:
    created = api.post(URL, json={"resource": "clients"}, headers=crm.agency).json()
    canceled = api.post(f"{URL}/{created['id']}/cancel", headers=crm.agency)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    drain(ctx)
    assert api.get(f"{URL}/{created['id']}", headers=crm.agency).json()["status"] == "canceled"
    again = api.post(f"{URL}/{created['id']}/cancel", headers=crm.agency)
    assert again.status_code == 409
    assert api.get(f"{URL}/{created['id']}/download", headers=crm.agency).status_code == 409
    assert api.post(URL, json={"resource": "clients"}, headers=crm.agency).status_code == 202


def test_exporting_needs_exports_create_and_the_permission_to_read_the_resource(
    api: httpx.Client, crm: Crm
) -> None:
    reader = crm.key("clients:read")
    exporter = crm.key("exports:create", "contacts:read")
    assert api.post(URL, json={"resource": "clients"}, headers=reader).status_code == 403
    refused = api.post(URL, json={"resource": "clients"}, headers=exporter)
    assert refused.status_code == 403 and "clients:read" in refused.json()["detail"]
    assert api.post(URL, json={"resource": "contacts"}, headers=exporter).status_code == 202
    assert api.get(URL).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"resource": "keys"},
        {"resource": "clients", "format": "xlsx"},
        {"resource": "clients", "filters": {"colour": "red"}},
        {"resource": "clients", "filters": {"status": "sleepy"}},
        {"resource": "contacts", "filters": {"client_id": 5}},
        {"resource": "clients", "updated_since": "yesterday"},
        {"resource": "clients", "surprise": True},
    ],
)
def test_invalid_requests_are_400_problems(
    api: httpx.Client, crm: Crm, body: dict[str, Any]
) -> None:
    response = api.post(URL, json=body, headers=crm.agency)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_exports_and_clients_are_404(api: httpx.Client, crm: Crm) -> None:
    assert api.get(f"{URL}/exp_nope", headers=crm.agency).status_code == 404
    body = {"resource": "contacts", "filters": {"client_id": "cli_nope"}}
    assert api.post(URL, json=body, headers=crm.agency).status_code == 404


def test_filters_narrow_the_rows(api: httpx.Client, crm: Crm, export: Export) -> None:
    a = api.post("/api/v2/clients", json={"name": "A"}, headers=crm.agency).json()
    api.post("/api/v2/clients", json={"name": "B", "status": "churned"}, headers=crm.agency)
    for ref in (a["id"],):
        api.post("/api/v2/contacts", json={"client_id": ref, "name": "P"}, headers=crm.agency)
    churned = export(crm.agency, resource="clients", filters={"status": "churned"})
    assert churned["rows_done"] == 1
    contacts = export(crm.agency, resource="contacts", filters={"client_id": a["id"]})
    assert contacts["rows_done"] == 1
