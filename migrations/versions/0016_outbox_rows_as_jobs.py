"""outbox rows sent by jobs: each pending email and delivery gets its job, the sweep's columns go

Revision ID: 0016_outbox_jobs
Revises: 0009_jobs (and 0004_notices, whose tables it changes)
Create Date: 2026-12-02 10:00:00.000000

Emails and webhook deliveries were claimed by the sweep through ``status`` and
``next_attempt_at`` (``sending`` while leased). Each is now sent by a job of its
own, which holds the schedule, so ``next_attempt_at`` and the claim's indexes are
dropped. A row still waiting (``pending``, or ``sending`` when its worker died)
gets its job here, due when the row was, its attempts carried over; one whose
last attempt was cut short ends ``failed``, as the sweep would have had it.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import keyrack.storage.tables.base

revision: str = "0016_outbox_jobs"
down_revision: str | Sequence[str] | None = "0009_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0004_notices"

MAX_ATTEMPTS = 8
ABANDONED = "abandoned: every attempt ended with its worker stopping mid-send"
Time = keyrack.storage.tables.base.UTCDateTime
# (table, job kind, payload field, unique key prefix or None)
OUTBOXES = (
    ("webhook_deliveries", "webhook.deliver", "delivery_id", "webhook.deliver:"),
    ("outbox_emails", "email.send", "outbox_id", None),
)
JOBS = sa.table(
    "jobs",
    sa.column("kind", sa.String),
    sa.column("payload", sa.JSON),
    sa.column("priority", sa.SmallInteger),
    sa.column("state", sa.String),
    sa.column("attempt", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("run_at", Time()),
    sa.column("unique_key", sa.String),
    sa.column("created_at", Time()),
)


def _rows(name: str) -> sa.TableClause:
    return sa.table(
        name,
        sa.column("id", sa.Integer),
        sa.column("status", sa.String),
        sa.column("attempts", sa.Integer),
        sa.column("next_attempt_at", Time()),
        sa.column("last_error", sa.String),
        sa.column("created_at", Time()),
    )


def _enqueue_waiting_rows() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    for name, kind, field, unique_prefix in OUTBOXES:
        rows = _rows(name)
        waiting = rows.c.status.in_(("pending", "sending"))
        bind.execute(
            rows.update()
            .where(waiting, rows.c.status == "sending", rows.c.attempts >= MAX_ATTEMPTS)
            .values(status="failed", last_error=ABANDONED)
        )
        jobs: list[dict[str, Any]] = [
            {
                "kind": kind,
                "payload": {field: row.id},
                "priority": 0,
                "state": "scheduled" if row.next_attempt_at > now else "available",
                "attempt": row.attempts,
                "max_attempts": MAX_ATTEMPTS,
                "run_at": row.next_attempt_at,
                "unique_key": f"{unique_prefix}{row.id}" if unique_prefix else None,
                "created_at": now,
            }
            for row in bind.execute(
                sa.select(rows.c.id, rows.c.attempts, rows.c.next_attempt_at).where(waiting)
            )
        ]
        if jobs:
            bind.execute(JOBS.insert(), jobs)
        bind.execute(rows.update().where(rows.c.status == "sending").values(status="pending"))


def upgrade() -> None:
    _enqueue_waiting_rows()
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_emails_status_next_attempt_at")
        batch_op.drop_column("next_attempt_at")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_status_next_attempt_at")
        batch_op.drop_column("next_attempt_at")


def downgrade() -> None:
    """The columns come back, set to each row's creation; the jobs stay in the queue."""
    for name in ("webhook_deliveries", "outbox_emails"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("next_attempt_at", Time(timezone=True), nullable=True))
        rows = _rows(name)
        op.get_bind().execute(rows.update().values(next_attempt_at=rows.c.created_at))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.alter_column("next_attempt_at", nullable=False)
            batch_op.create_index(
                f"ix_{name}_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
            )
