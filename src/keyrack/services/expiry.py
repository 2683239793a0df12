"""Inactivity and absolute expiry: notices 15, 7 and 1 days ahead, then the key expires.

Each step is one transaction that first inserts its ``ExpiryNotice`` row
(unique per key, deadline kind, anchor and threshold) and then writes the audit
record, whose fan-out creates the notifications, emails and webhook events.
Two workers racing for the same step: one inserts, the other finds the row
(after the key's row lock on PostgreSQL) or hits the unique constraint, and its
whole transaction, notices included, rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyrack.domain import expiry
from keyrack.domain.events import KeyChanged
from keyrack.domain.expiry import DeadlineKind, Due
from keyrack.domain.verification import KeyStatus, RetiredReason
from keyrack.services import audit, retired
from keyrack.services.context import Actor, Context
from keyrack.services.keys import KeyView
from keyrack.storage.tables.keys import ApiKey, KeySecret
from keyrack.storage.tables.notices import ExpiryNotice

SWEEPER = Actor.system("expiry-sweep")
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step due now for a key (what ``sweep`` will do, or a preview of it)."""

    key_id: int
    ref: str
    name: str
    step: Due


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    notices: int = 0
    expired: int = 0


def _step_of(row: ApiKey, now: datetime) -> Due | None:
    deadline = expiry.deadline_of(
        row.created_at, row.last_used_at, row.inactivity_days, row.expires_at
    )
    return expiry.due(deadline, now)


def _taken(session: Session, key_id: int, step: Due) -> bool:
    found = session.scalar(
        select(ExpiryNotice.id).where(
            ExpiryNotice.key_id == key_id,
            ExpiryNotice.kind == step.deadline.kind.value,
            ExpiryNotice.anchor == step.deadline.anchor,
            ExpiryNotice.threshold == step.threshold,
        )
    )
    return found is not None


def _maybe_due(session: Session, now: datetime) -> ColumnElement[bool]:
    """Active keys whose deadline may have a step due at ``now``: the database leaves out
    the rest (most keys, used lately), rather than every active key being read each sweep.
    Inactivity deadlines are compared per ``inactivity_days`` value in use (a handful)."""
    horizon = expiry.notice_horizon(now)
    active = ApiKey.status == KeyStatus.ACTIVE.value
    idle_periods = session.scalars(select(ApiKey.inactivity_days).where(active).distinct())
    idle_since = []
    for days in idle_periods:
        anchor_by = horizon - timedelta(days=days)  # idle since then: deadline by the horizon
        idle_since.append(
            and_(
                ApiKey.inactivity_days == days,
                ApiKey.created_at <= anchor_by,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= anchor_by),
            )
        )
    return and_(active, or_(ApiKey.expires_at <= horizon, *idle_since))


def plan(ctx: Context) -> list[PlannedStep]:
    """The steps due at ``ctx.clock()`` that no sweep has taken yet (nothing is written)."""
    now = ctx.clock()
    candidates: list[PlannedStep] = []
    with ctx.db.session() as session:
        maybe_due = _maybe_due(session, now)
        near = session.execute(
            select(
                ApiKey.id,
                ApiKey.ref,
                ApiKey.name,
                ApiKey.created_at,
                ApiKey.last_used_at,
                ApiKey.inactivity_days,
                ApiKey.expires_at,
            )
            .where(maybe_due)
            .order_by(ApiKey.id)
        )
        for key_id, ref, name, created_at, last_used_at, days, expires_at in near:
            deadline = expiry.deadline_of(created_at, last_used_at, days, expires_at)
            step = expiry.due(deadline, now)
            if step is not None:
                candidates.append(PlannedStep(key_id, ref, name, step))
        taken: set[tuple[int, str, datetime, str]] = set()
        for chunk in range(0, len(candidates), _CHUNK):
            ids = [c.key_id for c in candidates[chunk : chunk + _CHUNK]]
            rows = session.execute(
                select(
                    ExpiryNotice.key_id,
                    ExpiryNotice.kind,
                    ExpiryNotice.anchor,
                    ExpiryNotice.threshold,
                ).where(ExpiryNotice.key_id.in_(ids))
            )
            taken.update(
                (key_id, kind, anchor, threshold) for key_id, kind, anchor, threshold in rows
            )
    return [c for c in candidates if _identity(c.key_id, c.step) not in taken]


def _identity(key_id: int, step: Due) -> tuple[int, str, datetime, str]:
    return (key_id, step.deadline.kind.value, step.deadline.anchor, step.threshold)


def _take(ctx: Context, key_id: int, now: datetime) -> tuple[Due, tuple[str, ...]] | None:
    """Take the due step of one key, once; None when there is none or another worker took it."""
    try:
        with ctx.db.transaction() as session:
            row = session.get(ApiKey, key_id, with_for_update=True)
            if row is None or row.status != KeyStatus.ACTIVE.value:
                return None
            step = _step_of(row, now)  # again, under the lock: a use may have just landed
            if step is None or _taken(session, key_id, step):
                return None
            session.add(
                ExpiryNotice(
                    key_id=key_id,
                    kind=step.deadline.kind.value,
                    anchor=step.deadline.anchor,
                    threshold=step.threshold,
                    deadline=step.deadline.at,
                    created_at=now,
                )
            )
            session.flush()  # a racing worker's row fails here, before anything is sent
            before = KeyView.of(row)
            facts = {
                "kind": step.deadline.kind.value,
                "deadline": step.deadline.at.isoformat(),
                "idle_since": step.deadline.anchor.isoformat()
                if step.deadline.kind is DeadlineKind.INACTIVITY
                else None,
            }
            digests: tuple[str, ...] = ()
            if step.expires:
                digests = _retire_secrets(session, row, step)
                row.status = KeyStatus.EXPIRED.value
                action, after = "key.expired", {**KeyView.of(row).audit_snapshot(), **facts}
            else:
                action = "key.expiring"
                after = {**before.audit_snapshot(), **facts, "days_left": step.days_left}
            audit.record(
                session,
                SWEEPER,
                action,
                now=now,
                org_id=row.org_id,
                target_type="key",
                target_ref=row.ref,
                before=before.audit_snapshot() if step.expires else None,
                after=after,
            )
    except IntegrityError:
        return None
    return step, digests


def _retire_secrets(session: Session, row: ApiKey, step: Due) -> tuple[str, ...]:
    """Retire the expiring key's secrets, keeping their digests to say when and why."""
    inactive = step.deadline.kind is DeadlineKind.INACTIVITY
    return retired.retire(
        session,
        list(session.scalars(select(KeySecret).where(KeySecret.key_id == row.id))),
        RetiredReason.INACTIVITY if inactive else RetiredReason.EXPIRY,
        step.deadline.at,
        idle_days=row.inactivity_days if inactive else None,
    )


def run(ctx: Context) -> ExpiryReport:
    """Send the notices due at ``ctx.clock()`` and expire the keys whose deadline passed."""
    now = ctx.clock()
    notices = expired = 0
    for planned in plan(ctx):
        taken = _take(ctx, planned.key_id, now)
        if taken is None:
            continue
        step, digests = taken
        if step.expires:
            expired += 1
            ctx.bus.publish(KeyChanged(planned.key_id, digests))
        else:
            notices += 1
    return ExpiryReport(notices=notices, expired=expired)
