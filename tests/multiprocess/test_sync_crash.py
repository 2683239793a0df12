"""A sync run survives its worker: ``keyrack worker`` killed (SIGKILL) in the middle of a
5,000-record outbound run to the HubSpot fake, a second worker takes the run up after the
lease from its checkpoint, and the far side holds each record exactly once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from keyrack.domain.ids import new_ref
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.services.integrations import connections, runs, syncs
from keyrack.storage.tables.crm import Client
from keyrack.storage.tables.integrations import SyncRun, SyncRunRecord
from keyrack.storage.tables.jobs import Job
from tests.conftest import Seeded, seed_org
from tests.integrations.peers import HubSpotPeer, hubspot_peer, stage
from tests.multiprocess.test_deliveries import Keyrack, keyrack, live  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
ADMIN = Actor(label="admin@acme.test")
RECORDS = 5_000


@pytest.fixture
def hub() -> Iterator[HubSpotPeer]:
    with stage() as server, hubspot_peer(server) as peer:
        yield peer


def _seed_clients(ctx: Context, org: Seeded, count: int) -> set[str]:
    with ctx.db.transaction() as session:
        at = records.stamp(session, org.org_id, ctx.clock())
        rows = [
            Client(
                ref=new_ref("cli"),
                org_id=org.org_id,
                name=f"Client {n}",
                status="active",
                arr_cents=100 * n,
                custom_fields={},
                created_at=at,
                updated_at=at,
            )
            for n in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return {row.ref for row in rows}


def _held(hub: HubSpotPeer) -> Counter[str]:
    with hub.fake.controls.lock:
        return Counter(
            r.fields.get("keyrack_id") for r in hub.fake._tables["companies"].rows.values()
        )


def _run_status(ctx: Context, run_id: int) -> str:
    with ctx.db.session() as session:
        status: str = session.scalars(select(SyncRun.status).where(SyncRun.id == run_id)).one()
        return status


def test_a_killed_worker_run_is_finished_by_another_and_writes_each_record_once(
    live: Context,  # noqa: F811
    keyrack: Keyrack,  # noqa: F811
    hub: HubSpotPeer,
) -> None:
    org = seed_org(live)
    expected = _seed_clients(live, org, RECORDS)
    ref = connections.create(
        live,
        ADMIN,
        org.scope,
        provider="hubspot",
        name="HubSpot",
        base_url=hub.base_url,
        credential=hub.credential,
    ).id
    syncs.put_sync(live, ADMIN, org.scope, ref, "clients", "outbound", enabled=True)
    # Queued before any worker runs: the schedule's first tick, which takes a newly enabled
    # sync up at once, then finds this run under way instead of racing it with one of its own.
    run = runs.request_run(live, ADMIN, org.scope, ref)
    short_lease = {"KEYRACK_JOB_LEASE_SECONDS": "2"}  # the killed worker's run comes back soon
    worker = keyrack.worker(**short_lease)
    with live.db.session() as session:
        run_id = session.scalars(select(SyncRun.id).where(SyncRun.ref == run.id)).one()

    deadline = time.monotonic() + 120
    while hub.fake.count("companies") < RECORDS // 4:
        assert time.monotonic() < deadline, keyrack.log_text()
        assert worker.poll() is None, keyrack.log_text()
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)  # kill -9, mid-run
    assert worker.wait(10) == -signal.SIGKILL
    assert hub.fake.count("companies") < RECORDS, "the run ended before the kill"
    assert _run_status(live, run_id) == "running"

    keyrack.worker(**short_lease)
    deadline = time.monotonic() + 300
    while _run_status(live, run_id) == "running":
        assert time.monotonic() < deadline, keyrack.log_text()
        time.sleep(0.2)

    finished = runs.get_run(live, org.scope, ref, run.id)
    assert finished.status == "succeeded", (finished, keyrack.log_text())
    held = _held(hub)
    assert set(held) == expected and set(held.values()) == {1}  # each record exactly once
    outbound = finished.counts["clients"]["outbound"]
    assert outbound["synced"] == RECORDS and outbound.get("failed", 0) == 0
    with live.db.session() as session:
        distinct = session.scalar(
            select(func.count(func.distinct(SyncRunRecord.local_id))).where(
                SyncRunRecord.run_id == run_id
            )
        )
        total = session.scalar(
            select(func.count()).select_from(SyncRunRecord).where(SyncRunRecord.run_id == run_id)
        )
        attempts = session.scalars(select(Job.attempt).where(Job.kind == runs.RUN_JOB)).one()
    assert distinct == total == RECORDS  # one outcome per record: no batch recorded twice
    assert attempts == 2  # the second worker took the same run up
