"""What only the Salesforce connector does: SOQL paged by ``nextRecordsUrl``,
SystemModstamp ties to the second, the daily API limit, lookups as links, Task and Event,
and what it refuses to follow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from keyrack.integrations.connector import (
    ConnectorError,
    EngagementKind,
    OutboundRecord,
    ProbeStatus,
    ProviderRateLimited,
    RecordType,
    WriteResult,
)
from tests.integrations.peers import START, SalesforcePeer, Stage, salesforce_peer

CLIENTS, CONTACTS, ENGAGEMENTS = RecordType.CLIENTS, RecordType.CONTACTS, RecordType.ENGAGEMENTS
QUERY_MORE = "GET /services/data/vXX.X/query/{locator}"


@pytest.fixture
def salesforce(salesforce_stage: Stage) -> Iterator[SalesforcePeer]:
    with salesforce_peer(salesforce_stage) as peer:
        yield peer


def test_changes_page_through_next_records_url(salesforce: SalesforcePeer) -> None:
    seeded = salesforce.seed_clients(450)
    connector = salesforce.connector()
    records = list(connector.changed_since(CLIENTS, None))
    assert [r.remote_id for r in records] == seeded
    assert salesforce.fake.calls[QUERY_MORE] == 2  # 200 + 200 + 50
    assert connector.stats.api_calls == 3


def test_records_sharing_a_second_resume_exactly(salesforce: SalesforcePeer) -> None:
    tied = salesforce.fake.seed(
        "Account", ({"Name": f"T{n}"} for n in range(30)), modified_at=START
    )
    after = salesforce.fake.seed(
        "Account", [{"Name": "Later"}], modified_at=START + dt.timedelta(milliseconds=400)
    )
    connector = salesforce.connector()
    records = list(connector.changed_since(CLIENTS, None))
    assert [r.remote_id for r in records] == sorted(tied) + after  # SystemModstamp, Id
    resumed = connector.changed_since(CLIENTS, records[11].watermark)
    assert [r.remote_id for r in resumed] == sorted(tied)[12:] + after


def test_a_system_change_moves_the_record_past_the_watermark(salesforce: SalesforcePeer) -> None:
    ids = salesforce.seed_clients(3)
    connector = salesforce.connector()
    last = list(connector.changed_since(CLIENTS, None))[-1].watermark
    before = salesforce.fake.record("Account", ids[0])
    salesforce.fake.system_touch("Account", ids[0])  # a roll-up, a sharing recalculation
    after = salesforce.fake.record("Account", ids[0])
    assert before and after and before["LastModifiedDate"] == after["LastModifiedDate"]
    assert [r.remote_id for r in connector.changed_since(CLIENTS, last)] == [ids[0]]


def test_the_daily_api_limit_is_a_quota_not_a_wait(salesforce_stage: Stage) -> None:
    with salesforce_peer(salesforce_stage, api_limit=1) as peer:
        connector = peer.connector()
        assert connector.probe().status is ProbeStatus.ACTIVE
        probe = connector.probe()
        assert (probe.status, probe.reason) == (ProbeStatus.UNREACHABLE, "rate-limited")
        assert probe.failure is not None
        assert (probe.failure.code, probe.failure.message) == (
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
        with pytest.raises(ProviderRateLimited) as raised:
            connector.upsert(CLIENTS, peer.clients(["cli_1"]))
        assert raised.value.retry_after is None
        assert connector.stats.rate_limit_wait_seconds == 0


def test_a_next_records_url_elsewhere_is_not_followed(salesforce: SalesforcePeer) -> None:
    page = {
        "totalSize": 2,
        "done": False,
        "records": [],
        "nextRecordsUrl": "https://elsewhere.example/services/data/v59.0/query/01gX-2000",
    }
    salesforce.fake.fail_next(200, page, path_contains="/query")
    with pytest.raises(ConnectorError, match="nextRecordsUrl"):
        list(salesforce.connector().changed_since(CLIENTS, None))


def test_the_token_answers_instance_url_is_not_followed(salesforce: SalesforcePeer) -> None:
    credential = salesforce.credential
    connector = salesforce.connector()
    salesforce.fake.expire(credential["access_token"])
    answer = {
        "access_token": salesforce.fake.session(credential["refresh_token"]),
        "instance_url": "https://elsewhere.example",
        "token_type": "Bearer",
        "issued_at": "1",
    }
    salesforce.fake.fail_next(200, answer, path_contains="/oauth2/token")
    assert connector.probe().status is ProbeStatus.ACTIVE  # asked of base_url, not elsewhere


def test_a_record_salesforce_refuses_inside_a_collection_fails_alone(
    salesforce: SalesforcePeer,
) -> None:
    connector = salesforce.connector()
    batch = [*salesforce.clients(["cli_1", "cli_2"]), OutboundRecord("cli_3", {"Phone": "1"})]
    outcomes = connector.upsert(CLIENTS, batch)
    assert [o.result for o in outcomes] == [WriteResult.CREATED] * 2 + [WriteResult.FAILED]
    failure = outcomes[2].failure
    assert failure is not None
    assert (failure.code, failure.message) == (
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [Name]",
    )
    assert failure.http_status == 200  # a per-record error in the collection's answer
    assert connector.stats.api_calls == 2  # read-back and one write: nothing split


def test_a_missing_external_id_field_fails_every_record_in_one_call(
    salesforce: SalesforcePeer,
) -> None:
    connector = salesforce.connector(external_id_field="No_Such_Field__c")
    outcomes = connector.upsert(CLIENTS, salesforce.clients([f"k{n}" for n in range(50)]))
    assert {o.result for o in outcomes} == {WriteResult.FAILED}
    failure = outcomes[0].failure
    assert failure is not None
    assert failure.message == (
        "Provided external ID field does not exist or is not accessible: No_Such_Field__c"
    )
    assert (
        salesforce.fake.calls["PATCH /services/data/vXX.X/composite/sobjects/Account/{field}"] == 1
    )


def test_new_opportunities_are_closed_won_and_updates_keep_their_stage(
    salesforce: SalesforcePeer,
) -> None:
    connector = salesforce.connector()
    item = OutboundRecord("con_1", {"Name": "Renewal", "CloseDate": "2026-02-01"})
    (made,) = connector.upsert(RecordType.CONTRACTS, [item])
    held = salesforce.fake.record("Opportunity", str(made.remote_id))
    assert held is not None and held["StageName"] == "Closed Won"
    salesforce.http.patch(  # someone moves the opportunity on in Salesforce
        f"{salesforce.base_url}/services/data/v59.0/sobjects/Opportunity/{made.remote_id}",
        json={"StageName": "Negotiation"},
        headers={"Authorization": f"Bearer {salesforce.credential['access_token']}"},
    ).raise_for_status()
    item = OutboundRecord("con_1", {"Name": "Renewal 2027", "CloseDate": "2026-02-01"})
    (again,) = connector.upsert(RecordType.CONTRACTS, [item])
    assert again.result is WriteResult.UPDATED
    held = salesforce.fake.record("Opportunity", str(made.remote_id))
    assert held is not None and held["StageName"] == "Negotiation"


def test_contacts_link_to_their_account_both_ways(salesforce: SalesforcePeer) -> None:
    connector = salesforce.connector()
    (account,) = connector.upsert(CLIENTS, salesforce.clients(["cli_1"]))
    contact = OutboundRecord(
        "ctc_1", {"LastName": "Lovelace"}, links={CLIENTS: str(account.remote_id)}
    )
    (made,) = connector.upsert(CONTACTS, [contact])
    held = salesforce.fake.record("Contact", str(made.remote_id))
    assert held is not None and held["AccountId"] == account.remote_id
    (read,) = connector.changed_since(CONTACTS, None)
    assert read.links == {CLIENTS: account.remote_id}
    assert connector.upsert(CONTACTS, [contact])[0].result is WriteResult.UNCHANGED


def test_engagements_are_tasks_by_type_and_events(salesforce: SalesforcePeer) -> None:
    connector = salesforce.connector()
    (account,) = connector.upsert(CLIENTS, salesforce.clients(["cli_1"]))
    (contact,) = connector.upsert(
        CONTACTS,
        [OutboundRecord("ctc_1", {"LastName": "L"}, links={CLIENTS: str(account.remote_id)})],
    )
    links = {CLIENTS: str(account.remote_id), CONTACTS: str(contact.remote_id)}
    items = [
        OutboundRecord(
            "eng_call",
            {"Subject": "Kickoff", "ActivityDate": "2026-01-05"},
            links,
            EngagementKind.CALL,
        ),
        OutboundRecord(
            "eng_meet",
            {"Subject": "QBR", "StartDateTime": "2026-01-05T10:00:00Z"},
            links,
            EngagementKind.MEETING,
        ),
        OutboundRecord(
            "eng_note", {"Subject": "Note", "Description": "x"}, links, EngagementKind.NOTE
        ),
    ]
    outcomes = connector.upsert(ENGAGEMENTS, items)
    assert {o.result for o in outcomes} == {WriteResult.CREATED}
    assert [str(o.remote_id)[:3] for o in outcomes] == ["00T", "00U", "00T"]
    call = salesforce.fake.record("Task", str(outcomes[0].remote_id))
    assert call is not None
    assert (call["Type"], call["Status"], call["WhatId"], call["WhoId"]) == (
        "Call",
        "Completed",
        account.remote_id,
        contact.remote_id,
    )
    read = list(connector.changed_since(ENGAGEMENTS, None))
    kinds = {r.remote_id: r.kind for r in read}
    assert kinds == {
        outcomes[0].remote_id: EngagementKind.CALL,
        outcomes[1].remote_id: EngagementKind.MEETING,
        outcomes[2].remote_id: EngagementKind.NOTE,
    }
    assert all(r.links == links for r in read)
    got = connector.get(ENGAGEMENTS, str(outcomes[1].remote_id))
    assert got is not None and got.kind is EngagementKind.MEETING
    assert connector.get(ENGAGEMENTS, str(account.remote_id)) is None  # not an activity


def test_an_api_key_is_not_a_salesforce_credential(salesforce: SalesforcePeer) -> None:
    with pytest.raises(ValueError, match="OAuth2"):
        salesforce.connector({"api_key": "00D5g000004ABCD!session"})
