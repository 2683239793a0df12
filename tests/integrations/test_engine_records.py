"""Contracts and engagements through the engine against the HubSpot fake on a real
socket, on SQLite and PostgreSQL: both directions, linked to their client (and contact)
by remote id, engagements carrying their kind (a call is a HubSpot call, a note a note)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from keyrack.domain.crm import EngagementKind
from keyrack.services.context import Context
from keyrack.services.crm import clients, contacts, contracts, engagements
from keyrack.services.integrations import syncs
from tests.conftest import Seeded
from tests.integrations.peers import HubSpotPeer, Stage, hubspot_peer
from tests.integrations.test_engine import ADMIN, connect, records, run_now

TYPES = ("clients", "contacts", "contracts", "engagements")


@pytest.fixture
def hub(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


def enable(ctx: Context, seeded: Seeded, ref: str, direction: str) -> None:
    for record_type in reversed(TYPES):  # the wrong order on purpose: the engine orders them
        syncs.put_sync(ctx, ADMIN, seeded.scope, ref, record_type, direction, enabled=True)


def test_contracts_and_engagements_go_out_linked_and_come_back_matched(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    client = clients.create_client(ctx, ADMIN, seeded.scope, name="Acme")
    person = contacts.create_contact(
        ctx, ADMIN, seeded.scope, client_ref=client.ref, name="ada", email="ada@acme.test"
    )
    deal = contracts.create_contract(
        ctx,
        ADMIN,
        seeded.scope,
        client_ref=client.ref,
        name="Acme 2027",
        amount_cents=1250000,
        currency="USD",
        start_date=date(2026, 11, 1),
    )
    call = engagements.create_engagement(
        ctx,
        ADMIN,
        seeded.scope,
        client_ref=client.ref,
        contact_ref=person.ref,
        kind=EngagementKind.CALL,
        occurred_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        subject="Renewal call",
        body="They renew.",
    )
    note = engagements.create_engagement(
        ctx, ADMIN, seeded.scope, client_ref=client.ref, kind=EngagementKind.NOTE, body="A note"
    )
    enable(ctx, seeded, ref, "outbound")
    run = run_now(ctx, seeded, ref)
    assert run.status == "succeeded", run
    assert run.counts["contracts"]["outbound"] == {"synced": 1, "created": 1}
    assert run.counts["engagements"]["outbound"] == {"synced": 2, "created": 2}

    company = clients.get_client(ctx, seeded.scope, client.ref).external_ids["hubspot"]
    held = contracts.get_contract(ctx, seeded.scope, deal.ref).external_ids["hubspot"]
    remote_deal = hub.fake.record("deals", held)
    assert remote_deal is not None and remote_deal["dealname"] == "Acme 2027"
    assert float(remote_deal["amount"] or 0) == 12500.0
    assert company in hub.fake.associated("deals", held, "companies")

    called = engagements.get_engagement(ctx, seeded.scope, call.ref).external_ids["hubspot"]
    noted = engagements.get_engagement(ctx, seeded.scope, note.ref).external_ids["hubspot"]
    assert called.startswith("calls:") and noted.startswith("notes:")
    remote_call = hub.fake.record("calls", called.split(":")[1])
    assert remote_call is not None
    assert (remote_call["hs_call_title"], remote_call["hs_call_body"]) == (
        "Renewal call",
        "They renew.",
    )
    assert hub.fake.record("notes", noted.split(":")[1])["hs_note_body"] == "A note"  # type: ignore[index]
    remote_person = contacts.get_contact(ctx, seeded.scope, person.ref).external_ids["hubspot"]
    assert remote_person in hub.fake.associated("calls", called.split(":")[1], "contacts")
    assert company in hub.fake.associated("notes", noted.split(":")[1], "companies")

    again = run_now(ctx, seeded, ref)  # nothing changed in Keyrack: nothing to send
    assert "created" not in again.counts.get("engagements", {}).get("outbound", {})

    enable(ctx, seeded, ref, "inbound")
    back = run_now(ctx, seeded, ref)
    assert back.status == "succeeded", back
    assert back.counts["contracts"]["inbound"] == {"synced": 1, "unchanged": 1}
    assert back.counts["engagements"]["inbound"]["synced"] == 2
    assert "created" not in back.counts["engagements"]["inbound"]
    assert len(contracts.list_contracts(ctx, seeded.scope).data) == 1
    assert len(engagements.list_engagements(ctx, seeded.scope).data) == 2
    assert hub.fake.count("deals") == 1 and hub.fake.count("calls") == 1


def test_deals_and_meetings_made_in_hubspot_come_in_under_their_client(
    ctx: Context, seeded: Seeded, hub: HubSpotPeer
) -> None:
    ref = connect(ctx, seeded, hub)
    [company] = hub.fake.seed("companies", [{"name": "Globex"}])
    [person] = hub.fake.seed("contacts", [{"lastname": "Hank", "email": "hank@globex.test"}])
    [deal, orphan] = hub.fake.seed(
        "deals",
        [
            {"dealname": "Globex pilot", "amount": "480.5", "closedate": "2026-10-01"},
            {"dealname": "Nobody's deal", "amount": "1"},
        ],
    )
    [meeting] = hub.fake.seed(
        "meetings",
        [
            {
                "hs_timestamp": "2026-11-02T15:00:00.000Z",
                "hs_meeting_title": "Kick-off",
                "hs_meeting_body": "Agenda",
            }
        ],
    )
    hub.fake._link("contacts", int(person), "companies", int(company), 279)
    hub.fake._link("deals", int(deal), "companies", int(company), 341)
    hub.fake._link("meetings", int(meeting), "companies", int(company), 188)
    hub.fake._link("meetings", int(meeting), "contacts", int(person), 200)
    enable(ctx, seeded, ref, "inbound")
    run = run_now(ctx, seeded, ref)
    assert run.status == "partial", run
    assert run.counts["contracts"]["inbound"] == {"synced": 1, "created": 1, "failed": 1}
    assert run.counts["engagements"]["inbound"] == {"synced": 1, "created": 1}
    [failed] = records(ctx, seeded, ref, run, outcome="failed")
    assert failed.remote_id == orphan and "its client" in (failed.error_message or "")

    [client] = clients.list_clients(ctx, seeded.scope, external_id=f"hubspot:{company}").data
    [contract] = contracts.list_contracts(ctx, seeded.scope).data
    assert (contract.client_ref, contract.name, contract.amount_cents) == (
        client.ref,
        "Globex pilot",
        48050,
    )
    assert contract.start_date == date(2026, 10, 1)
    [came] = engagements.list_engagements(ctx, seeded.scope).data
    [hank] = contacts.list_contacts(ctx, seeded.scope).data
    assert (came.kind, came.subject, came.body) == ("meeting", "Kick-off", "Agenda")
    assert came.client_ref == client.ref and came.contact_ref == hank.ref
    assert came.occurred_at == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    assert came.external_ids["hubspot"] == f"meetings:{meeting}"
