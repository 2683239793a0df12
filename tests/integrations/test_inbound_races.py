"""Signed inbound POSTs and a run's inbound batches racing to create the same new record,
on SQLite and PostgreSQL: each organization's change clock (``records.stamp``, taken first
in every CRM-writing transaction) puts them one after the other, so the record is created
once and every other writer finds it."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from keyrack.domain import webhooks
from keyrack.domain.tenancy import Scope
from keyrack.integrations.connector import RemoteRecord
from keyrack.integrations.connectors.webhook import new_signing_secret
from keyrack.services.context import Context
from keyrack.services.crm import clients
from keyrack.services.integrations import connections, inbound, syncs
from keyrack.services.integrations.engine import Connection, Engine, Settings
from keyrack.storage.tables.integrations import Integration, SyncRun
from tests.conftest import Seeded
from tests.integrations.test_engine import ADMIN

WRITERS = 16


def test_posts_and_a_run_racing_on_one_new_record_create_it_once(
    ctx: Context, seeded: Seeded
) -> None:
    secret = new_signing_secret()
    ref = connections.create(
        ctx,
        ADMIN,
        seeded.scope,
        provider="webhook",
        name="Our forms",
        base_url="http://127.0.0.1:9/hooks",
        credential={"signing_secret": secret},
    ).id
    syncs.put_sync(ctx, ADMIN, seeded.scope, ref, "clients", "inbound", enabled=True)
    with ctx.db.transaction() as session:
        row = session.scalars(select(Integration).where(Integration.ref == ref)).one()
        [wanted] = [Settings.of(s) for s in syncs.enabled_syncs(session, row.id)]
        run = SyncRun(
            ref="run_race", integration_id=row.id, status="running", trigger="schedule",
            requested_by="schedule", counts={}, api_calls=0, rate_limit_wait_seconds=0.0,
            watermark_before={}, watermark_after={}, done={}, created_at=ctx.clock(),
        )  # fmt: skip
        session.add(run)
        session.flush()
        session.expunge(row)
    connection = Connection(row.id, row.ref, row.provider, Scope(row.org_id), row)
    body = json.dumps({"record_type": "clients", "id": "c1", "fields": {"name": "Race"}}).encode()
    pulled = RemoteRecord("c1", "w1", "Race", {"name": "Race"})
    start = threading.Barrier(WRITERS)

    def write(n: int) -> list[str | None]:
        start.wait()
        if n % 2:  # a run's batch, as ``Engine.inbound`` commits it
            pipeline = Engine(ctx, None, run.id, connection)
            pipeline.commit_inbound(wanted, [pulled], watermark=None)
            return []
        signature = webhooks.sign(secret, body, int(time.time()))
        _, outcomes = inbound.receive(ctx, ref, body, signature)
        return [o.result for o in outcomes]

    with ThreadPoolExecutor(WRITERS) as pool:
        posted = [r for results in pool.map(write, range(WRITERS)) for r in results]
    with ctx.db.session() as session:
        held = session.get(SyncRun, run.id)
        assert held is not None
        batches = held.counts["clients"]["inbound"]  # the run's WRITERS / 2 batches
    assert batches["synced"] == WRITERS // 2 and "failed" not in batches, batches
    assert len(posted) == WRITERS // 2 and set(posted) <= {"created", "unchanged"}, posted
    assert posted.count("created") + batches.get("created", 0) == 1, (posted, batches)
    [client] = clients.list_clients(ctx, seeded.scope, external_id="webhook:c1").data
    assert client.name == "Race"
    assert len(clients.list_clients(ctx, seeded.scope).data) == 1
