"""The SDK's CRM resources (clients, contacts, contracts, engagements, usage, pulse) on the
real app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from keyrack.client import (
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from tests.conftest import Seeded
from tests.sdk.conftest import Wire

CRM = [
    f"{resource}:{access}"
    for resource in ("clients", "contacts", "contracts", "engagements", "usage", "pulse")
    for access in ("read", "write")
]


@pytest.fixture
def crm(live_url: str, seeded: Seeded, wire: Wire) -> Iterator[Client]:
    """A client whose key may read and write every CRM resource, allowed 50 requests/s."""
    _, secret = seeded.new_key(permissions=CRM, rate_per_second=50)
    with Client(secret, base_url=live_url, rate_per_second=50, event_hooks=wire.hooks()) as client:
        yield client


def test_clients_are_created_paged_read_updated_and_deleted(crm: Client) -> None:
    made = [crm.clients.create(name=f"Client {i}", arr_cents=1000 * i)["id"] for i in range(3)]
    assert sorted(c["id"] for c in crm.clients.iter(limit=2)) == sorted(made)
    assert crm.clients.get(made[0])["name"] == "Client 0"
    updated = crm.clients.update(made[0], arr_cents=5000, custom_fields={"tier": "gold"})
    assert (updated["arr_cents"], updated["custom_fields"]) == (5000, {"tier": "gold"})
    deleted = crm.clients.delete(made[0])
    assert deleted is not None and deleted["id"] == made[0]
    with pytest.raises(NotFoundError):
        crm.clients.get(made[0])


def test_contacts_and_contracts_belong_to_a_client(crm: Client) -> None:
    client_id = crm.clients.create(name="Globex")["id"]
    contact = crm.contacts.create(client_id=client_id, name="Hank", email="hank@globex.test")
    assert crm.contacts.update(contact["id"], title="CTO")["title"] == "CTO"
    assert [c["id"] for c in crm.contacts.iter(limit=1)] == [contact["id"]]

    contract = crm.contracts.create(
        client_id=client_id,
        name="Annual plan",
        amount_cents=120_000,
        start_date=date(2026, 1, 1),
        recurring_amount_cents=10_000,
        recurring_interval="month",
    )
    assert contract["start_date"] == "2026-01-01"
    assert contract["annual_recurring_cents"] == 120_000
    assert crm.contracts.update(contract["id"], end_date=date(2026, 12, 31))["end_date"] == (
        "2026-12-31"
    )
    crm.contracts.delete(contract["id"])
    crm.contacts.delete(contact["id"])
    assert crm.contracts.list().data == []
    assert crm.contacts.list().data == []


def test_engagements_are_logged_against_a_client_and_its_contact(crm: Client) -> None:
    client_id = crm.clients.create(name="Globex")["id"]
    hank = crm.contacts.create(client_id=client_id, name="Hank")
    when = datetime(2026, 1, 12, 14, 30, tzinfo=UTC)
    call = crm.engagements.create(
        client_id=client_id, contact_id=hank["id"], kind="call", occurred_at=when,
        subject="Renewal", body="They want SSO.\nCall back Friday.",
    )  # fmt: skip
    assert (call["kind"], call["occurred_at"]) == ("call", "2026-01-12T14:30:00Z")
    assert crm.engagements.update(call["id"], kind="meeting")["kind"] == "meeting"
    assert [e["id"] for e in crm.engagements.iter(client_id=client_id, kind="meeting")] == [
        call["id"]
    ]
    assert crm.engagements.list(occurred_since=when + timedelta(seconds=1)).data == []
    crm.engagements.delete(call["id"])
    with pytest.raises(NotFoundError):
        crm.engagements.get(call["id"])


def test_records_are_found_by_external_id_and_a_taken_one_is_a_conflict(crm: Client) -> None:
    made = crm.clients.create(name="Initech", external_ids={"hubspot": "1042"})
    assert crm.clients.find_by_external_id("hubspot", "1042") == made
    assert crm.clients.find_by_external_id("hubspot", "1043") is None
    assert crm.clients.list(external_id="hubspot:1042").data == [made]
    with pytest.raises(ConflictError) as caught:
        crm.clients.create(name="Initech again", external_ids={"hubspot": "1042"})
    assert made["id"] in caught.value.problem["detail"]
    moved = crm.clients.update(made["id"], external_ids={"hubspot": None, "salesforce": "001"})
    assert moved["external_ids"] == {"salesforce": "001"}
    assert crm.clients.find_by_external_id("hubspot", "1042") is None


def test_a_sync_iterates_what_changed_since_its_watermark(crm: Client, wire: Wire) -> None:
    first, second, _ = (crm.clients.create(name=f"C{i}") for i in range(3))
    crm.clients.update(first["id"], arr_cents=100)
    watermark = datetime.fromisoformat(second["updated_at"])
    changed = list(crm.clients.iter(updated_since=watermark, limit=1))
    assert [c["name"] for c in changed] == ["C1", "C2", "C0"]
    assert wire.requests[-1].url.params["updated_since"] == watermark.isoformat()
    assert changed[-1]["arr_cents"] == 100


def test_usage_batches_are_idempotent_and_aggregated(crm: Client, wire: Wire) -> None:
    client_id = crm.clients.create(name="Initech")["id"]
    when = datetime(2026, 1, 4, 10, 0, tzinfo=UTC)
    events = [
        {"id": f"evt-{i}", "client_id": client_id, "event": "login", "timestamp": when}
        for i in range(3)
    ]
    assert crm.usage.push(events) == {"received": 3, "inserted": 3, "duplicates": []}
    assert crm.usage.push(events[:1])["duplicates"] == ["evt-0"]

    page = crm.usage.aggregate(period="day", client_id=client_id, since=when - timedelta(days=1))
    assert [(b["label"], b["count"]) for b in page.data] == [("2026-01-04", 3)]
    assert wire.requests[-1].url.params["since"] == "2026-01-03T10:00:00+00:00"
    assert list(crm.usage.iter_aggregate(period="month")) == [
        {**page.data[0], "period": "month", "label": "2026-01", "start": "2026-01-01"}
    ]


def test_pulse_answers_are_listed_and_summarised_as_nps(crm: Client) -> None:
    client_id = crm.clients.create(name="Umbrella")["id"]
    answers = [crm.pulse.submit(client_id=client_id, score=s) for s in (10, 9, 8, 3)]
    assert [a["category"] for a in answers] == ["promoter", "promoter", "passive", "detractor"]
    assert crm.pulse.get(answers[0]["id"])["score"] == 10
    assert len(list(crm.pulse.iter(limit=3, client_id=client_id))) == 4
    (summary,) = crm.pulse.summary(period="month").data
    assert (summary["client_id"], summary["nps"]) == (client_id, 25)


def test_an_nps_score_out_of_range_is_a_validation_error(crm: Client) -> None:
    client_id = crm.clients.create(name="Hooli")["id"]
    with pytest.raises(ValidationError) as caught:
        crm.pulse.submit(client_id=client_id, score=11)
    assert any(e["field"] == "body.score" for e in caught.value.problem["errors"])


def test_a_key_without_crm_permissions_is_denied_clients(
    live_url: str, seeded: Seeded, sdk: Client
) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        sdk.clients.list()
    assert caught.value.code == "insufficient-permission"
