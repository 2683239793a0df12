"""Records POSTed to a ``webhook`` connection (``/api/v2/integrations/{id}/inbound``).

No API key: the body's ``Keyrack-Signature`` under the connection's signing secret is the
credential (``connectors.webhook.receive``). An unknown id, a connection of another
provider or one without a secret are all the same 404, saying nothing of which. The
accepted records go through the inbound pipeline as a run's do (``Engine.upsert_in``
with the record type's inbound sync: its filters, its mappings, an upsert keyed by
``external_ids["webhook"]``), clients before what belongs to them, and are recorded as a run with trigger
``inbound`` whose outcomes are the answer. A record type whose inbound sync is off is
skipped, saying so. The run is written in one transaction with its outcomes: no other
run ever sees it under way.
"""

from __future__ import annotations

from sqlalchemy import select

from keyrack.domain.ids import new_ref
from keyrack.domain.sync_rules import INBOUND
from keyrack.domain.tenancy import Scope
from keyrack.errors import NotFound
from keyrack.integrations.connector import RecordType
from keyrack.integrations.connectors import webhook
from keyrack.services.context import Context
from keyrack.services.crm import records
from keyrack.services.integrations import connections, engine, runs, syncs
from keyrack.services.integrations.engine import Engine, Outcome, Settings
from keyrack.storage.tables.integrations import Integration, SyncRun, SyncRunRecord

TRIGGER = "inbound"
REQUESTED_BY = "inbound webhook"


def _unknown() -> NotFound:
    return NotFound("no such integration")


def receive(
    ctx: Context, integration_id: str, body: bytes, signature: str | None
) -> tuple[runs.RunView, list[runs.RecordView]]:
    """Check and take one inbound POST: the run it made and its records' outcomes."""
    with ctx.db.session() as session:
        row = session.scalars(select(Integration).where(Integration.ref == integration_id)).first()
        if row is None or row.provider != webhook.WebhookConnector.provider:
            raise _unknown()
        credential = connections.open_credential(ctx, row)
        secret = (credential or {}).get("signing_secret")
        if not isinstance(secret, str) or not secret:
            raise _unknown()
        session.expunge(row)
    received = webhook.receive(secret, body, signature)  # 401 / 413 / 400 before any write
    order = list(RecordType)
    received.sort(key=lambda r: order.index(r.record_type))  # stable: clients first
    connection = engine.Connection(
        row.id, row.ref, row.provider, Scope(row.org_id, row.location_id), row
    )
    now = ctx.clock()
    with ctx.db.transaction() as session:
        run = SyncRun(
            ref=new_ref("run"),
            integration_id=row.id,
            status="running",
            trigger=TRIGGER,
            requested_by=REQUESTED_BY,
            counts={},
            api_calls=0,
            rate_limit_wait_seconds=0.0,
            watermark_before={},
            watermark_after={},
            done={},
            created_at=now,
            started_at=now,
        )
        session.add(run)
        session.flush()
        settings = {
            RecordType(s.record_type): Settings.of(s)
            for s in syncs.enabled_syncs(session, row.id)
            if s.direction == INBOUND
        }
        pipeline = Engine(ctx, None, run.id, connection)
        at = records.stamp(session, row.org_id, now)
        outcomes: list[Outcome] = []
        for item in received:
            wanted = settings.get(item.record_type)
            if wanted is None:
                off = Outcome(
                    item.record_type.value,
                    INBOUND,
                    "skipped",
                    remote_id=item.record.remote_id,
                    name=item.record.name,
                )
                off.skip = {
                    "reason": "sync-disabled",
                    "detail": f"the {item.record_type.value} inbound sync of this connection "
                    "is not enabled",
                }
                outcomes.append(off)
                continue
            outcomes.extend(pipeline.upsert_in(session, wanted, [item.record], at))
        pipeline.commit(outcomes, settings=None, session=session)
        failed = any(o.outcome == "failed" for o in outcomes)
        run.status = "partial" if failed else "succeeded"
        run.finished_at = now
        held = session.get(Integration, row.id)
        if held is not None:
            held.last_success_at = now
        session.flush()
        rows = session.scalars(
            select(SyncRunRecord).where(SyncRunRecord.run_id == run.id).order_by(SyncRunRecord.id)
        )
        return runs.view_of(session, run, row.ref), [runs.RecordView.of(r) for r in rows]
