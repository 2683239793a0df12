"""What only the HubSpot connector does: search past the 10,000 cap and through
millisecond ties, rate limits without Retry-After, batches refused whole, engagements
over four objects, associations."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import httpx
import pytest

from keyrack.integrations.connector import (
    EngagementKind,
    OutboundRecord,
    ProbeStatus,
    ProviderRateLimited,
    RecordType,
    WriteResult,
)
from tests.fakes.hubspot import SEARCH_CAP, hubspot_error
from tests.integrations.peers import START, HubSpotPeer, Stage, hubspot_peer

CLIENTS, CONTACTS, ENGAGEMENTS = RecordType.CLIENTS, RecordType.CONTACTS, RecordType.ENGAGEMENTS


@pytest.fixture
def hubspot(hubspot_stage: Stage) -> Iterator[HubSpotPeer]:
    with hubspot_peer(hubspot_stage) as peer:
        yield peer


def searches(peer: HubSpotPeer, name: str = "companies") -> int:
    return peer.fake.calls[f"POST /crm/v3/objects/{name}/search"]


def test_changes_are_read_past_the_10000_search_cap_and_through_ties(
    hubspot: HubSpotPeer,
) -> None:
    fake = hubspot.fake
    spread = fake.seed(
        "companies",
        ({"name": f"C{n}"} for n in range(SEARCH_CAP + 2_000)),
        modified_at=START,
        step=dt.timedelta(milliseconds=1),
    )
    later = START + dt.timedelta(hours=1)
    tied = fake.seed("companies", ({"name": f"T{n}"} for n in range(450)), modified_at=later)
    connector = hubspot.connector()
    records = list(connector.changed_since(CLIENTS, None))
    assert [r.remote_id for r in records] == spread + tied  # time order, ties by id
    pages = searches(hubspot)
    assert pages <= len(records) // 199 + 6  # keyset pages; the tie read apart by id

    middle_of_tie = records[len(spread) + 300].watermark
    resumed = [r.remote_id for r in connector.changed_since(CLIENTS, middle_of_tie)]
    assert resumed == tied[301:]


def test_a_search_never_pages_by_offset(hubspot: HubSpotPeer) -> None:
    hubspot.seed_clients(450)
    sent: list[dict] = []

    def watch(request: httpx.Request) -> None:
        if request.url.path.endswith("/search"):
            sent.append(json.loads(request.content))

    hubspot.http.event_hooks["request"].append(watch)
    assert len(list(hubspot.connector().changed_since(CLIENTS, None))) == 450
    assert len(sent) == 3
    assert all("after" not in body and len(body["sorts"]) == 1 for body in sent)
    assert sent[1]["filterGroups"][0]["filters"][0]["operator"] == "GT"


def test_a_429_without_retry_after_waits_out_the_rate_limit_interval(
    hubspot_stage: Stage,
) -> None:
    with hubspot_peer(hubspot_stage, rate_limit=(1, 1.0), retry_after=False) as peer:
        connector = peer.connector()
        assert connector.probe().status is ProbeStatus.ACTIVE
        assert connector.probe().status is ProbeStatus.ACTIVE
        assert connector.stats.rate_limit_wait_seconds == 1.0  # Interval-Milliseconds: 1000


def test_the_search_apis_secondly_limit_waits_a_second(hubspot_stage: Stage) -> None:
    with hubspot_peer(hubspot_stage, search_rate_limit=(1, 1.0), retry_after=False) as peer:
        peer.seed_clients(450)
        connector = peer.connector()
        records = list(connector.changed_since(CLIENTS, None))
    assert len(records) == 450
    assert connector.stats.rate_limit_wait_seconds == 2.0  # three searches, a second apart


def test_a_spent_daily_quota_is_not_waited_for(hubspot_stage: Stage) -> None:
    with hubspot_peer(hubspot_stage, daily_limit=1) as peer:
        connector = peer.connector()
        assert connector.probe().status is ProbeStatus.ACTIVE
        probe = connector.probe()
        assert (probe.status, probe.reason) == (ProbeStatus.UNREACHABLE, "rate-limited")
        assert probe.failure is not None
        assert probe.failure.message == "You have reached your daily limit."
        with pytest.raises(ProviderRateLimited):
            list(connector.changed_since(CLIENTS, None))
        assert connector.stats.rate_limit_wait_seconds == 0


def test_a_batch_refused_whole_is_split_until_each_record_is_answered(
    hubspot: HubSpotPeer,
) -> None:
    connector = hubspot.connector()
    refusal = hubspot_error(400, "VALIDATION_ERROR", "Something about the batch").body
    hubspot.fake.fail_next(400, refusal, path_contains="batch/upsert")
    outcomes = connector.upsert(CLIENTS, hubspot.clients([f"k{n}" for n in range(10)]))
    assert {o.result for o in outcomes} == {WriteResult.CREATED}
    assert hubspot.fake.calls["POST /crm/v3/objects/companies/batch/upsert"] == 3  # whole, halves


def test_a_batch_refusal_naming_a_property_fails_the_records_holding_it(
    hubspot: HubSpotPeer,
) -> None:
    connector = hubspot.connector()
    refusal = hubspot_error(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid",
        errors=[
            {
                "message": 'Property "colour" does not exist',
                "code": "PROPERTY_DOESNT_EXIST",
                "context": {"propertyName": ["colour"]},
            }
        ],
    ).body
    hubspot.fake.fail_next(400, refusal, path_contains="batch/upsert")
    batch = hubspot.clients([f"k{n}" for n in range(6)])
    batch[2] = OutboundRecord("k2", {"name": "Red", "colour": "red"})
    batch[4] = OutboundRecord("k4", {"name": "Blue", "colour": "blue"})
    outcomes = connector.upsert(CLIENTS, batch)
    assert [o.result for o in outcomes] == [
        WriteResult.CREATED,
        WriteResult.CREATED,
        WriteResult.FAILED,
        WriteResult.CREATED,
        WriteResult.FAILED,
        WriteResult.CREATED,
    ]
    assert outcomes[2].failure is not None
    assert outcomes[2].failure.message == "Property values were not valid"
    assert hubspot.fake.calls["POST /crm/v3/objects/companies/batch/upsert"] == 2


def test_new_deals_are_won_and_an_update_keeps_their_stage(hubspot: HubSpotPeer) -> None:
    connector = hubspot.connector()
    (made,) = connector.upsert(RecordType.CONTRACTS, [OutboundRecord("con_1", {"dealname": "D"})])
    deal = hubspot.fake.record("deals", str(made.remote_id))
    assert deal is not None
    assert (deal["pipeline"], deal["dealstage"]) == ("default", "closedwon")
    hubspot.http.patch(  # someone moves the deal on in HubSpot
        f"{hubspot.base_url}/crm/v3/objects/deals/{made.remote_id}",
        json={"properties": {"dealstage": "renewal"}},
        headers={"Authorization": f"Bearer {hubspot.credential['api_key']}"},
    ).raise_for_status()
    (again,) = connector.upsert(RecordType.CONTRACTS, [OutboundRecord("con_1", {"dealname": "E"})])
    assert again.result is WriteResult.UPDATED
    deal = hubspot.fake.record("deals", str(made.remote_id))
    assert deal is not None and deal["dealstage"] == "renewal"


def test_contacts_are_associated_to_their_company_and_read_back_with_it(
    hubspot: HubSpotPeer,
) -> None:
    connector = hubspot.connector()
    (company,) = connector.upsert(CLIENTS, hubspot.clients(["cli_1"]))
    contacts = [
        OutboundRecord(
            f"ctc_{n}",
            {"lastname": f"L{n}", "email": f"p{n}@example.com"},
            links={CLIENTS: str(company.remote_id)},
        )
        for n in range(3)
    ]
    outcomes = connector.upsert(CONTACTS, contacts)
    assert {o.result for o in outcomes} == {WriteResult.CREATED}
    for outcome in outcomes:
        linked = hubspot.fake.associated("contacts", str(outcome.remote_id), "companies")
        assert list(linked) == [company.remote_id]
    read = list(connector.changed_since(CONTACTS, None))
    assert [r.links for r in read] == [{CLIENTS: company.remote_id}] * 3
    got = connector.get(CONTACTS, str(outcomes[0].remote_id))
    assert got is not None and got.links == {CLIENTS: company.remote_id}
    assert got.name == "L0"


def test_a_link_to_a_missing_record_fails_that_record_alone(hubspot: HubSpotPeer) -> None:
    connector = hubspot.connector()
    (company,) = connector.upsert(CLIENTS, hubspot.clients(["cli_1"]))
    contacts = [
        OutboundRecord("ctc_ok", {"lastname": "A"}, links={CLIENTS: str(company.remote_id)}),
        OutboundRecord("ctc_lost", {"lastname": "B"}, links={CLIENTS: "999999"}),
    ]
    ok, lost = connector.upsert(CONTACTS, contacts)
    assert ok.result is WriteResult.CREATED
    assert lost.result is WriteResult.FAILED
    assert lost.remote_id is not None  # written, but not linked: a retry links it
    assert lost.failure is not None and lost.failure.code == "OBJECT_NOT_FOUND"


def test_engagements_span_four_objects_with_one_watermark(hubspot: HubSpotPeer) -> None:
    connector = hubspot.connector()
    (company,) = connector.upsert(CLIENTS, hubspot.clients(["cli_1"]))
    at = "2026-01-05T10:00:00Z"
    fields = {
        EngagementKind.NOTE: {"hs_note_body": "Renewal talk"},
        EngagementKind.CALL: {"hs_call_title": "Kickoff", "hs_call_body": "Notes"},
        EngagementKind.MEETING: {"hs_meeting_title": "QBR"},
        EngagementKind.EMAIL: {"hs_email_subject": "Welcome", "hs_email_text": "Hi"},
    }
    items = [
        OutboundRecord(
            f"eng_{kind}",
            {"hs_timestamp": at, **values},
            links={CLIENTS: str(company.remote_id)},
            kind=kind,
        )
        for kind, values in fields.items()
    ]
    outcomes = connector.upsert(ENGAGEMENTS, items)
    assert {o.result for o in outcomes} == {WriteResult.CREATED}
    assert [str(o.remote_id).partition(":")[0] for o in outcomes] == [
        "notes",
        "calls",
        "meetings",
        "emails",
    ]
    read = list(connector.changed_since(ENGAGEMENTS, None))
    assert [r.kind for r in read] == list(fields)
    assert [r.name for r in read] == ["Renewal talk", "Kickoff", "QBR", "Welcome"]
    assert all(r.links == {CLIENTS: company.remote_id} for r in read)
    assert read[-1].watermark.count("=") == 4
    resumed = list(connector.changed_since(ENGAGEMENTS, read[1].watermark))
    assert [r.remote_id for r in resumed] == [o.remote_id for o in outcomes[2:]]
    assert connector.upsert(ENGAGEMENTS, items)[1].result is WriteResult.UNCHANGED
    got = connector.get(ENGAGEMENTS, str(outcomes[1].remote_id))
    assert got is not None and got.kind is EngagementKind.CALL
    assert connector.get(ENGAGEMENTS, "widgets:1") is None


def test_an_engagement_without_a_kind_is_refused(hubspot: HubSpotPeer) -> None:
    with pytest.raises(ValueError, match="no kind"):
        hubspot.connector().upsert(ENGAGEMENTS, [OutboundRecord("eng_1", {"hs_timestamp": "1"})])


def test_a_revoked_oauth_access_token_with_a_good_refresh_token_recovers(
    hubspot: HubSpotPeer,
) -> None:
    credential = hubspot.oauth_credential()
    connector = hubspot.connector(credential)
    hubspot.fake.revoke(credential["access_token"])  # INVALID_AUTHENTICATION, not expired
    assert connector.probe().status is ProbeStatus.ACTIVE
    assert len(hubspot.issued) == 1


def test_a_wrong_client_secret_is_unauthorized_not_revoked(hubspot: HubSpotPeer) -> None:
    credential = hubspot.oauth_credential() | {"client_secret": "not-the-apps-secret"}
    connector = hubspot.connector(credential)
    hubspot.expire(credential)
    probe = connector.probe()
    assert (probe.status, probe.reason) == (ProbeStatus.UNAUTHORIZED, "client-refused")
    assert probe.failure is not None and probe.failure.code == "BAD_CLIENT_SECRET"
