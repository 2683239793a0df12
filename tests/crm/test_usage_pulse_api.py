"""/api/v2/usage (idempotent batches, aggregates) and /api/v2/pulse (NPS)."""

from __future__ import annotations

import httpx

from keyrack.services.context import Context
from tests.crm.conftest import Crm, seed


def client(api: httpx.Client, headers: dict[str, str], name: str = "Globex") -> str:
    ref: str = api.post("/api/v2/clients", json={"name": name}, headers=headers).json()["id"]
    return ref


def event(
    i: int, ref: str, when: str = "2026-01-04T10:00:00Z", name: str = "login"
) -> dict[str, object]:
    return {"id": f"evt-{i}", "client_id": ref, "event": name, "count": 1, "timestamp": when}


def test_reposting_a_batch_stores_nothing_and_reports_duplicates(
    api: httpx.Client, crm: Crm
) -> None:
    ref = client(api, crm.agency)
    batch = {"events": [event(i, ref) for i in range(3)]}
    first = api.post("/api/v2/usage", json=batch, headers=crm.agency)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 3, "inserted": 3, "duplicates": []}
    again = api.post(
        "/api/v2/usage", json={"events": [*batch["events"], event(3, ref)]}, headers=crm.agency
    ).json()
    assert again == {"received": 4, "inserted": 1, "duplicates": ["evt-0", "evt-1", "evt-2"]}
    totals = api.get("/api/v2/usage", headers=crm.agency).json()["data"]
    assert [(t["label"], t["count"], t["events"]) for t in totals] == [("2026-01-04", 4, 4)]


def test_an_id_repeated_inside_one_batch_is_stored_once(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    body = {"events": [event(1, ref), event(1, ref)]}
    result = api.post("/api/v2/usage", json=body, headers=crm.agency).json()
    assert result == {"received": 2, "inserted": 1, "duplicates": ["evt-1"]}


def test_batches_hold_one_to_a_thousand_events(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    full = {"events": [event(i, ref) for i in range(1000)]}
    assert api.post("/api/v2/usage", json=full, headers=crm.agency).json()["inserted"] == 1000
    over = {"events": [event(i, ref) for i in range(1001)]}
    response = api.post("/api/v2/usage", json=over, headers=crm.agency)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/validation-error")
    assert api.post("/api/v2/usage", json={"events": []}, headers=crm.agency).status_code == 400


def test_bad_events_are_400_and_nothing_is_stored(api: httpx.Client, crm: Crm) -> None:
    ref = client(api, crm.agency)
    for bad in (
        {**event(1, ref), "count": 0},
        {**event(1, ref), "timestamp": "2026-01-04T10:00:00"},
        {**event(1, ref), "timestamp": "2099-01-01T00:00:00Z"},
        {**event(1, ref), "event": ""},
    ):
        body = {"events": [event(0, ref), bad]}
        assert api.post("/api/v2/usage", json=body, headers=crm.agency).status_code == 400
    assert api.get("/api/v2/usage", headers=crm.agency).json()["data"] == []


def test_usage_aggregates_per_client_and_day_or_month(api: httpx.Client, crm: Crm) -> None:
    a, b = client(api, crm.agency, "A"), client(api, crm.agency, "B")
    events = [
        {**event(1, a, "2026-01-03T23:59:59Z"), "count": 5},
        {**event(2, a, "2026-01-04T00:00:00Z"), "count": 2},
        {**event(3, a, "2026-01-04T12:00:00+02:00", "export")},
        {**event(4, b, "2025-12-31T08:00:00Z"), "count": 7},
    ]
    api.post("/api/v2/usage", json={"events": events}, headers=crm.agency)
    daily = api.get("/api/v2/usage", params={"period": "day"}, headers=crm.agency).json()["data"]
    labels = {(d["client_id"], d["label"], d["event"]): d["count"] for d in daily}
    assert labels == {
        (b, "2025-12-31", "login"): 7,
        (a, "2026-01-03", "login"): 5,
        (a, "2026-01-04", "export"): 1,
        (a, "2026-01-04", "login"): 2,
    }
    monthly = api.get(
        "/api/v2/usage", params={"period": "month", "client_id": a}, headers=crm.agency
    ).json()["data"]
    assert [(m["label"], m["event"], m["count"]) for m in monthly] == [
        ("2026-01", "export", 1),
        ("2026-01", "login", 7),
    ]
    window = api.get(
        "/api/v2/usage",
        params={"since": "2026-01-04T00:00:00Z", "until": "2026-01-05T00:00:00Z", "event": "login"},
        headers=crm.agency,
    ).json()["data"]
    assert [(w["label"], w["count"]) for w in window] == [("2026-01-04", 2)]
    paged = api.get("/api/v2/usage", params={"limit": 3}, headers=crm.agency)
    assert len(paged.json()["data"]) == 3 and 'rel="next"' in paged.headers["link"]
    rest = api.get(
        "/api/v2/usage",
        params={"limit": 3, "cursor": paged.json()["next_cursor"]},
        headers=crm.agency,
    ).json()
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None
    assert (
        api.get("/api/v2/usage", params={"period": "quarter"}, headers=crm.agency).status_code
        == 400
    )


def test_usage_is_scoped_and_permissioned(api: httpx.Client, crm: Crm, ctx: Context) -> None:
    ref = client(api, crm.agency)
    api.post("/api/v2/usage", json={"events": [event(1, ref)]}, headers=crm.agency)
    assert api.get("/api/v2/usage").status_code == 401
    assert api.get("/api/v2/usage", headers=crm.key("usage:write")).status_code == 403
    body = {"events": [event(2, ref)]}
    assert api.post("/api/v2/usage", json=body, headers=crm.key("usage:read")).status_code == 403
    other = seed(ctx, "initech")
    for headers in (other.agency, crm.located):
        assert api.post("/api/v2/usage", json=body, headers=headers).status_code == 404
        assert api.get("/api/v2/usage", headers=headers).json()["data"] == []
        assert (
            api.get("/api/v2/usage", params={"client_id": ref}, headers=headers).status_code == 404
        )
    # event ids are per organization: another org may use the same ids
    own = client(api, other.agency)
    mine = api.post("/api/v2/usage", json={"events": [event(1, own)]}, headers=other.agency)
    assert mine.json()["inserted"] == 1


def test_pulse_responses_and_nps_summary(api: httpx.Client, crm: Crm) -> None:
    a, b = client(api, crm.agency, "A"), client(api, crm.agency, "B")
    contact = api.post(
        "/api/v2/contacts", json={"client_id": a, "name": "Ann"}, headers=crm.agency
    ).json()["id"]
    answers = [
        (a, 10, "2025-10-10T10:00:00Z"),
        (a, 9, "2025-10-11T10:00:00Z"),
        (a, 7, "2025-11-01T10:00:00Z"),
        (a, 3, "2025-11-02T10:00:00Z"),
        (b, 0, "2025-10-15T10:00:00Z"),
    ]
    for ref, score, when in answers:
        response = api.post(
            "/api/v2/pulse",
            json={
                "client_id": ref,
                "score": score,
                "comment": "ok",
                "responded_at": when,
                **({"contact_id": contact} if ref == a else {}),
            },
            headers=crm.agency,
        )
        assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("pul_") and created["category"] == "detractor"
    assert api.get(f"/api/v2/pulse/{created['id']}", headers=crm.agency).json() == created
    monthly = api.get("/api/v2/pulse/summary", params={"period": "month"}, headers=crm.agency)
    rows = [(r["client_id"], r["label"], r["responses"], r["nps"]) for r in monthly.json()["data"]]
    assert rows == [(a, "2025-10", 2, 100.0), (b, "2025-10", 1, -100.0), (a, "2025-11", 2, -50.0)]
    quarter = api.get(
        "/api/v2/pulse/summary", params={"period": "quarter", "client_id": a}, headers=crm.agency
    ).json()["data"]
    assert [
        (q["label"], q["promoters"], q["passives"], q["detractors"], q["nps"]) for q in quarter
    ] == [("2025-Q4", 2, 1, 1, 25.0)]
    listed = api.get("/api/v2/pulse", params={"client_id": a, "limit": 3}, headers=crm.agency)
    assert [r["score"] for r in listed.json()["data"]] == [3, 7, 9]
    assert 'rel="next"' in listed.headers["link"]


def test_pulse_validation_permissions_and_scope(api: httpx.Client, crm: Crm, ctx: Context) -> None:
    ref = client(api, crm.agency)
    other_client = client(api, crm.agency, "Other")
    contact = api.post(
        "/api/v2/contacts", json={"client_id": other_client, "name": "Bo"}, headers=crm.agency
    ).json()["id"]
    for bad in (
        {"client_id": ref, "score": 11},
        {"client_id": ref, "score": -1},
        {"client_id": ref},
    ):
        assert api.post("/api/v2/pulse", json=bad, headers=crm.agency).status_code == 400
    mismatched = {"client_id": ref, "score": 5, "contact_id": contact}
    assert api.post("/api/v2/pulse", json=mismatched, headers=crm.agency).status_code == 404
    assert api.get("/api/v2/pulse").status_code == 401
    assert api.get("/api/v2/pulse/summary", headers=crm.key("pulse:write")).status_code == 403
    assert (
        api.post(
            "/api/v2/pulse", json={"client_id": ref, "score": 5}, headers=crm.key("pulse:read")
        ).status_code
        == 403
    )
    answer = api.post(
        "/api/v2/pulse", json={"client_id": ref, "score": 5}, headers=crm.agency
    ).json()
    other = seed(ctx, "initech")
    for headers in (other.agency, crm.located):
        assert api.get(f"/api/v2/pulse/{answer['id']}", headers=headers).status_code == 404
        assert api.get("/api/v2/pulse", headers=headers).json()["data"] == []
        assert api.get("/api/v2/pulse/summary", headers=headers).json()["data"] == []
        body = {"client_id": ref, "score": 10}
        assert api.post("/api/v2/pulse", json=body, headers=headers).status_code == 404
