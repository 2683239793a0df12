"""The ``keyrack`` connector between two real Keyracks, each on its own socket with its own
database (the near one on SQLite and on PostgreSQL, the far one on SQLite)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyrack.domain.keys import Environment, generate
from keyrack.integrations.connector import (
    KEYRACK,
    Direction,
    EngagementKind,
    OutboundRecord,
    ProbeStatus,
    RecordType,
    RemoteRecord,
    WriteResult,
)
from keyrack.integrations.connectors import connector_for
from keyrack.integrations.connectors.keyrack import KeyrackConnector
from keyrack.services.crm import clients, contacts, engagements
from tests.conftest import OPERATOR
from tests.integrations.far_keyrack import FarKeyrack, far_keyrack, sqlite_copy

CLIENTS, CONTACTS, ENGAGEMENTS = RecordType.CLIENTS, RecordType.CONTACTS, RecordType.ENGAGEMENTS


@pytest.fixture
def near(database_url: str) -> Iterator[FarKeyrack]:
    with far_keyrack(database_url, "near") as server:
        yield server


@pytest.fixture
def far(_sqlite_template: Path, tmp_path: Path) -> Iterator[FarKeyrack]:
    with far_keyrack(sqlite_copy(_sqlite_template, tmp_path)) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def connector(
    server: FarKeyrack, http: httpx.Client, secret: str | None = None
) -> KeyrackConnector:
    made = connector_for("keyrack")(
        credential={"api_key": secret or server.secret}, http=http, base_url=server.url
    )
    assert isinstance(made, KeyrackConnector)
    return made


def outbound(record: RemoteRecord, record_type: RecordType, links: dict) -> OutboundRecord:
    """What the engine would write: the default mappings, the remote links translated."""
    mappings = KeyrackConnector.mappings[(record_type, Direction.OUTBOUND)]
    fields = {m.remote: record.fields.get(m.local) for m in mappings}
    return OutboundRecord(record.remote_id, fields, links, record.kind)


def sync(
    source: KeyrackConnector,
    target: KeyrackConnector,
    watermarks: dict[RecordType, str | None],
    written: dict[str, str],
) -> dict[RecordType, list[WriteResult]]:
    """One run, clients then contacts then engagements: read what changed on the source,
    write it to the target; ``written`` maps source ids to target ids."""
    results: dict[RecordType, list[WriteResult]] = {}
    for record_type in (CLIENTS, CONTACTS, ENGAGEMENTS):
        changed = list(source.changed_since(record_type, watermarks.get(record_type)))
        items = [
            outbound(r, record_type, {t: written[i] for t, i in r.links.items()}) for r in changed
        ]
        outcomes = target.upsert(record_type, items)
        for outcome in outcomes:
            assert outcome.remote_id is not None, outcome.failure
            written[outcome.keyrack_id] = outcome.remote_id
        results[record_type] = [o.result for o in outcomes]
        if changed:
            watermarks[record_type] = changed[-1].watermark
    return results


def test_a_change_on_one_keyrack_arrives_on_the_other_exactly_once(
    near: FarKeyrack, far: FarKeyrack, http: httpx.Client
) -> None:
    client = clients.create_client(near.ctx, OPERATOR, near.scope, name="Initech", arr_cents=99)
    contact = contacts.create_contact(
        near.ctx, OPERATOR, near.scope, client_ref=client.ref, name="Peter", email="p@initech.test"
    )
    engagements.create_engagement(
        near.ctx,
        OPERATOR,
        near.scope,
        client_ref=client.ref,
        contact_ref=contact.ref,
        kind=EngagementKind.CALL,
        subject="TPS reports",
        occurred_at=dt.datetime(2026, 1, 6, 10, tzinfo=dt.UTC),
    )
    source, target = connector(near, http), connector(far, http)
    watermarks: dict[RecordType, str | None] = {}
    written: dict[str, str] = {}

    first = sync(source, target, watermarks, written)
    assert first == {t: [WriteResult.CREATED] for t in (CLIENTS, CONTACTS, ENGAGEMENTS)}
    (copy,) = far.all_clients()
    assert (copy.name, copy.arr_cents, dict(copy.external_ids)) == (
        "Initech",
        99,
        {KEYRACK: client.ref},
    )
    (far_contact,) = contacts.list_contacts(far.ctx, far.scope).data
    assert far_contact.client_ref == copy.ref and far_contact.email == "p@initech.test"
    (far_call,) = engagements.list_engagements(far.ctx, far.scope).data
    assert (far_call.kind, far_call.subject, far_call.contact_ref) == (
        EngagementKind.CALL,
        "TPS reports",
        far_contact.ref,
    )

    # from the watermarks: nothing changed, nothing read, nothing written
    assert sync(source, target, watermarks, written) == {t: [] for t in first}
    # from the start: everything read again, nothing written
    again = sync(source, target, {}, written)
    assert again == {t: [WriteResult.UNCHANGED] for t in first}
    assert len(far.all_clients()) == 1
    assert far.client(copy.ref).updated_at == copy.updated_at  # not even touched

    clients.update_client(near.ctx, OPERATOR, near.scope, client.ref, name="Initrode")
    assert sync(source, target, watermarks, written)[CLIENTS] == [WriteResult.UPDATED]
    assert [c.name for c in far.all_clients()] == ["Initrode"]


def test_watermarks_resume_exactly_across_records_sharing_a_stamp_and_pages(
    far: FarKeyrack, http: httpx.Client
) -> None:
    seeded = far.seed_clients(450, per_transaction=170)  # stamps shared across page ends
    source = connector(far, http)
    records = list(source.changed_since(CLIENTS, None))
    order = [r.remote_id for r in records]
    assert sorted(order) == sorted(seeded)
    for n in (0, 169, 170, 199, 200, 201, 339, 340, 399, 400, 448, 449):
        resumed = [r.remote_id for r in source.changed_since(CLIENTS, records[n].watermark)]
        assert resumed == order[n + 1 :], n

    # a record delivered, then changed, leaves its stamp's group; the resume skips no other
    far.rename(order[150], "Moved on")
    resumed = [r.remote_id for r in source.changed_since(CLIENTS, records[160].watermark)]
    assert resumed == [*order[161:], order[150]]


@pytest.mark.parametrize("how", ["revoked", "expired", "unknown"])
def test_a_key_refused_on_the_far_side_probes_with_its_problem_document(
    far: FarKeyrack, http: httpx.Client, how: str
) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1) if how == "expired" else None
    ref, secret = far.new_key(name="Sync key", expires_at=expires)
    if how == "unknown":  # well formed, never issued
        secret = generate(Environment.SANDBOX).secret
    near_side = connector(far, http, secret)
    if how != "unknown":
        assert near_side.probe().status is ProbeStatus.ACTIVE
    if how == "revoked":
        far.revoke(ref)
    elif how == "expired":
        time.sleep(1.2)
    probe = near_side.probe()
    status, code, message = {
        "revoked": (
            ProbeStatus.REVOKED,
            "revoked-key",
            "Revoked API key: the API key has been revoked",
        ),
        "expired": (ProbeStatus.EXPIRED, "expired-key", "Expired API key: "),
        "unknown": (ProbeStatus.UNAUTHORIZED, "invalid-key", "Invalid API key: "),
    }[how]
    assert probe.status is status
    assert probe.failure is not None
    assert (probe.failure.code, probe.failure.http_status) == (code, 401)
    assert probe.failure.message.startswith(message)
    assert probe.exchange is not None and probe.exchange.response_body is not None
    assert f"https://keyrack.dev/problems/{code}" in probe.exchange.response_body
    assert secret not in repr(probe)
    assert probe.exchange.request_headers["x-api-key"] == "[redacted]"


def test_a_429_from_the_far_side_is_waited_out_and_counted(
    far: FarKeyrack, http: httpx.Client
) -> None:
    _, secret = far.new_key(name="Slow key", rate_per_second=2)
    far.seed_clients(3)
    source = connector(far, http, secret)
    far.spend(secret)  # another user of the key has spent its budget
    far.faults.seen.clear()
    assert len(list(source.changed_since(CLIENTS, None))) == 3
    answered = [status for _, _, status in far.faults.seen]
    assert answered[0] == 429 and answered[-1] == 200
    assert source.stats.api_calls == len(answered)
    assert source.stats.rate_limit_wait_seconds >= 0.5  # Retry-After, whole seconds


def test_sends_are_paced_to_the_far_keys_limit_so_none_bounces(
    far: FarKeyrack, http: httpx.Client
) -> None:
    _, secret = far.new_key(name="Paced key", rate_per_second=3)
    source = connector(far, http, secret)
    far.faults.seen.clear()
    for _ in range(8):
        assert source.probe().status is ProbeStatus.ACTIVE
    assert [status for _, _, status in far.faults.seen] == [200] * 8
    assert source.stats.api_calls == 8
    assert source.stats.rate_limit_wait_seconds > 0  # spaced out, not bounced


def test_a_record_the_far_side_refuses_fails_alone_with_its_problem_document(
    far: FarKeyrack, http: httpx.Client
) -> None:
    target = connector(far, http)
    outcomes = target.upsert(
        CONTACTS,
        [
            OutboundRecord(
                "con_1", {"name": "Orphan"}, {CLIENTS: "cli_01NOSUCHCLIENT000000000000"}
            ),
            OutboundRecord("con_2", {"name": "Nobody's"}),
        ],
    )
    assert [o.result for o in outcomes] == [WriteResult.FAILED] * 2
    first, second = (o.failure for o in outcomes)
    assert first is not None and second is not None
    assert (first.code, first.http_status) == ("not-found", 404)
    assert (second.code, second.http_status) == ("validation-error", 400)
    assert "client_id" in second.message
