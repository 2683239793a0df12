"""Outbox rows (emails, webhook deliveries): claimed, sent and settled one at a time, each alone.

A sweep claims the due rows for itself (``claim_due``: moved to ``sending`` for a
lease, the attempt counted), sends each with the sender it is given, and writes
the outcome: done, ``pending`` again after a backoff, or ``failed``. Whatever goes
wrong with one row (a message that cannot be built, a sender that raises) settles
that row alone, with its error; the rows after it still go out, and no row is left
``sending``. A worker that dies mid-row leaves it ``sending`` until its lease ends,
when a later sweep takes it up again; the attempt was counted when it was claimed,
so a row that keeps killing its worker ends ``failed`` after ``MAX_ATTEMPTS`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update

from keyrack.domain.webhooks import MAX_ATTEMPTS, retry_delay
from keyrack.services.context import Context
from keyrack.storage.tables.notices import OutboxEmail
from keyrack.storage.tables.webhooks import WebhookDelivery

log = logging.getLogger(__name__)

PENDING, SENDING, FAILED = "pending", "sending", "failed"
ABANDONED = "abandoned: every attempt ended with its worker stopping mid-send"

Row = TypeVar("Row", OutboxEmail, WebhookDelivery)


@dataclass(frozen=True, slots=True)
class Attempt:
    """How sending one row went: ``error`` is None when it went out; ``final`` when no
    retry can help (the message cannot even be built); ``record``: more columns to set."""

    error: str | None = None
    final: bool = False
    record: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tally:
    done: int = 0
    retrying: int = 0
    failed: int = 0


def describe(exc: BaseException) -> str:
    """An error as it is recorded on its row."""
    return f"{type(exc).__name__}: {exc}"[:500]


def claim_due(
    ctx: Context, table: type[Row], *, now: datetime, lease: timedelta, limit: int = 100
) -> list[int]:
    """Take up to ``limit`` due rows for this worker alone, for ``lease``, counting the attempt.

    Due: ``pending`` rows whose time has come, and ``sending`` rows whose lease ended
    (their worker died). Rows are locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)
    and moved to ``sending`` with a guarded UPDATE, so two workers never take the same
    row. A row whose last allowed attempt was abandoned that way is ``failed`` instead.
    """
    due = (table.status.in_((PENDING, SENDING))) & (table.next_attempt_at <= now)
    with ctx.db.transaction() as session:
        session.execute(
            update(table)
            .where(due, table.status == SENDING, table.attempts >= MAX_ATTEMPTS)
            .values(status=FAILED, last_error=ABANDONED)
        )
        ids = list(
            session.scalars(
                select(table.id)
                .where(due)
                .order_by(table.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        claimed = []
        for row_id in ids:
            result = session.execute(
                update(table)
                .where(table.id == row_id, due)
                .values(status=SENDING, next_attempt_at=now + lease, attempts=table.attempts + 1)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append(row_id)
    return claimed


def drain(
    ctx: Context,
    table: type[Row],
    *,
    lease: timedelta,
    done: tuple[str, str],
    send: Callable[[Row], Attempt],
) -> Tally:
    """Claim the due rows of ``table`` and ``send`` each once, settling each on its own.

    ``done`` names the status and the time column of a row that went out (``("sent",
    "sent_at")``). A failure is retried after ``retry_delay`` until ``MAX_ATTEMPTS``;
    a final one, or an exception out of ``send``, is recorded on that row alone.
    """
    tally = {"done": 0, PENDING: 0, FAILED: 0}
    for row_id in claim_due(ctx, table, now=ctx.clock(), lease=lease):
        with ctx.db.session() as session:
            row = session.get(table, row_id)
        if row is None:
            continue
        try:
            attempt = send(row)
        except Exception as exc:  # one row's trouble is never the queue's
            log.exception("%s %s could not be sent; it is settled alone", table.__name__, row_id)
            attempt = Attempt(describe(exc))
        now = ctx.clock()
        values: dict[str, object] = {**attempt.record, "last_error": attempt.error}
        if attempt.error is None:
            outcome = "done"
            values.update({"status": done[0], done[1]: now})
        elif attempt.final or row.attempts >= MAX_ATTEMPTS:
            outcome = FAILED
            values["status"] = FAILED
        else:
            outcome = PENDING
            values.update({"status": PENDING, "next_attempt_at": now + retry_delay(row.attempts)})
        with ctx.db.transaction() as session:
            session.execute(
                update(table).where(table.id == row_id, table.status == SENDING).values(**values)
            )
        tally[outcome] += 1
    return Tally(done=tally["done"], retrying=tally[PENDING], failed=tally[FAILED])
