"""Migration 0016: the emails and deliveries an older version left waiting get their jobs.

Run on a fresh SQLite file and a fresh PostgreSQL schema: migrated to the newest
revision, taken back below 0016 (its downgrade), filled with rows as the sweep left
them (``pending``, ``sending`` under a lease, ``sending`` on the last attempt,
``delivered``), and migrated again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from keyrack.domain.jobs import State
from keyrack.jobs import admin
from keyrack.services import jobs, tenancy, webhooks
from keyrack.services.context import Context
from keyrack.storage.database import Database, normalize_url
from keyrack.storage.migrate import alembic_config, upgrade
from tests.conftest import OPERATOR, PG_SKIP, PG_URL, make_settings
from tests.hygiene import conftest as hygiene
from tests.hygiene.conftest import Receiver

receiver = hygiene.receiver


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, no migration applied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    schema = f"kr_mig_{uuid.uuid4().hex[:10]}"
    admin_engine = create_engine(normalize_url(PG_URL))
    with admin_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_engine.dispose()


def _insert(ctx: Context, table: str, **values: Any) -> int:
    columns = ", ".join(values)
    names = ", ".join(f":{name}" for name in values)
    with ctx.db.transaction() as session:
        return int(
            session.execute(
                text(f"INSERT INTO {table} ({columns}) VALUES ({names}) RETURNING id"), values
            ).scalar_one()
        )


def test_waiting_rows_get_their_jobs_and_go_out_after_the_upgrade(
    fresh_url: str, receiver: Receiver
) -> None:
    upgrade(fresh_url)
    command.downgrade(alembic_config(fresh_url), "0016_outbox_jobs-1")
    now = datetime.now(UTC).replace(microsecond=0)  # the migration asks the real clock too
    ctx = Context(settings=make_settings(fresh_url), db=Database(fresh_url), clock=lambda: now)
    try:
        org = tenancy.create_org(ctx, OPERATOR, name="Old", slug="old")
        endpoint, receiver.secret = webhooks.create_endpoint(
            ctx, OPERATOR, org.id, url=receiver.url
        )
        with ctx.db.session() as session:
            event_id = session.execute(text("SELECT min(id) FROM audit_events")).scalar_one()
        due, leased = now - timedelta(minutes=1), now + timedelta(minutes=1)

        def delivery(status: str, attempts: int, next_attempt_at: datetime) -> int:
            return _insert(
                ctx,
                "webhook_deliveries",
                endpoint_id=endpoint.id,
                event_id=f"evt_{status}_{attempts}",
                event_type="key.revoked",
                payload='{"id": "evt"}',
                status=status,
                attempts=attempts,
                next_attempt_at=next_attempt_at.replace(tzinfo=None),
                created_at=due.replace(tzinfo=None),
            )

        pending = delivery("pending", 2, due)
        sending = delivery("sending", 3, leased)  # its worker died; the lease still runs
        abandoned = delivery("sending", 8, leased)
        delivery("delivered", 1, due)
        email = _insert(
            ctx,
            "outbox_emails",
            org_id=org.id,
            audit_event_id=event_id,
            recipient="admin@old.test",
            subject="[Keyrack] hello",
            body="hello",
            status="pending",
            attempts=0,
            next_attempt_at=due.replace(tzinfo=None),
            created_at=due.replace(tzinfo=None),
        )

        upgrade(fresh_url)

        queued = {
            (job.kind, next(iter(job.payload.values()))): job
            for job in admin.list_jobs(ctx.db, limit=500).data
        }
        assert set(queued) == {
            ("webhook.deliver", pending),
            ("webhook.deliver", sending),
            ("email.send", email),
        }
        first, second = queued[("webhook.deliver", pending)], queued[("webhook.deliver", sending)]
        assert (first.state, first.attempt, first.run_at) == (State.AVAILABLE, 2, due)
        assert (second.state, second.attempt, second.run_at) == (State.SCHEDULED, 3, leased)
        assert first.unique_key == f"webhook.deliver:{pending}" and first.max_attempts == 8
        log = {d.id: d for d in webhooks.list_deliveries(ctx, org.id, endpoint.id).data}
        assert (log[sending].status, log[sending].next_attempt_at) == ("pending", leased)
        assert log[abandoned].status == "failed"
        assert log[abandoned].last_error and "abandoned" in log[abandoned].last_error

        assert jobs.sweep(ctx, leased).webhooks_delivered == 2
        assert sorted(r["headers"]["keyrack-event-id"] for r in receiver.received) == [
            "evt_pending_2",
            "evt_sending_3",
        ]
        attempts = {
            d.id: d.attempts for d in webhooks.list_deliveries(ctx, org.id, endpoint.id).data
        }
        assert (attempts[pending], attempts[sending]) == (3, 4)  # counted on from before
    finally:
        ctx.db.dispose()
