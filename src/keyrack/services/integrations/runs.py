"""Runs: requested by hand, by the schedule or as a retry, one at a time per connection,
each performed by an ``integration.run`` job (``engine``); their counts and the outcome
of every record they touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from keyrack.domain.ids import new_ref
from keyrack.domain.jobs import ACTIVE as JOB_ACTIVE
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput, NotFound
from keyrack.jobs import enqueue
from keyrack.services.context import Actor, Context
from keyrack.services.integrations import connections
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.integrations import Integration, SyncRun, SyncRunRecord
from keyrack.storage.tables.jobs import Job

RUN_JOB = "integration.run"
ACTIVE = ("queued", "running")
ENDED = ("succeeded", "partial", "failed", "canceled")
OUTCOMES = ("synced", "skipped", "failed")
RUN_ATTEMPTS = 5
"""A run's job is tried again (from its checkpoint) when its worker dies or it raises."""


ABANDONED = "its job ended before the run did (its workers stopped on every attempt)"


def job_key(integration_id: int) -> str:
    return f"integration-run:{integration_id}"


def _job_of(session: Session, integration_id: int) -> int | None:
    """The queued or running job of the connection's run, if any."""
    found: int | None = session.scalars(
        select(Job.id).where(Job.unique_key == job_key(integration_id), Job.state.in_(JOB_ACTIVE))
    ).first()
    return found


@dataclass(frozen=True, slots=True)
class RunView:
    id: str
    integration_id: str
    status: str
    trigger: str
    requested_by: str
    retry_of: str | None
    counts: dict[str, Any]
    api_calls: int
    rate_limit_wait_seconds: float
    watermark_before: dict[str, Any]
    watermark_after: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RecordView:
    id: int
    record_type: str
    direction: str
    local_id: str | None
    remote_id: str | None
    name: str | None
    outcome: str
    result: str | None
    skip: dict[str, Any] | None
    error_message: str | None
    error_code: str | None
    http_status: int | None
    exchange: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: SyncRunRecord) -> RecordView:
        return cls(
            id=row.id,
            record_type=row.record_type,
            direction=row.direction,
            local_id=row.local_id,
            remote_id=row.remote_id,
            name=row.name,
            outcome=row.outcome,
            result=row.result,
            skip=row.skip,
            error_message=row.error_message,
            error_code=row.error_code,
            http_status=row.http_status,
            exchange=row.exchange,
            created_at=row.created_at,
        )


def view_of(session: Session, row: SyncRun, integration_ref: str) -> RunView:
    retried = session.get(SyncRun, row.retry_of) if row.retry_of is not None else None
    return RunView(
        id=row.ref,
        integration_id=integration_ref,
        status=row.status,
        trigger=row.trigger,
        requested_by=row.requested_by,
        retry_of=retried.ref if retried is not None else None,
        counts=dict(row.counts),
        api_calls=row.api_calls,
        rate_limit_wait_seconds=round(row.rate_limit_wait_seconds, 3),
        watermark_before=dict(row.watermark_before),
        watermark_after=dict(row.watermark_after),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def active_run(session: Session, integration_id: int) -> SyncRun | None:
    return session.scalars(
        select(SyncRun).where(SyncRun.integration_id == integration_id, SyncRun.status.in_(ACTIVE))
    ).first()


class RunInProgress(Conflict):
    """A connection runs one run at a time: the answer names the one under way."""

    def __init__(self, run_ref: str) -> None:
        super().__init__(f"a run of this integration is already queued or running: {run_ref}")
        self.extra = {"run_id": run_ref}


def enqueue_run(
    session: Session,
    row: Integration,
    *,
    trigger: str,
    requested_by: str,
    now: datetime,
    retry_of: SyncRun | None = None,
) -> SyncRun:
    """A queued run and its job, in the caller's transaction; ``RunInProgress`` when one is
    queued or running."""
    held = active_run(session, row.id)
    if held is not None and _job_of(session, row.id) is None:
        held.status, held.finished_at = "failed", now  # no job will ever finish it
        held.error = held.error or ABANDONED
        held = None
    if held is not None:
        raise RunInProgress(held.ref)
    run = SyncRun(
        ref=new_ref("run"),
        integration_id=row.id,
        status="queued",
        trigger=trigger,
        requested_by=requested_by,
        retry_of=retry_of.id if retry_of is not None else None,
        counts={},
        api_calls=0,
        rate_limit_wait_seconds=0.0,
        watermark_before={},
        watermark_after={},
        done={},
        created_at=now,
    )
    session.add(run)
    session.flush()
    queued = enqueue(
        session,
        RUN_JOB,
        {"run_id": run.id},
        unique_key=job_key(row.id),
        now=now,
        max_attempts=RUN_ATTEMPTS,
    )
    if not queued.created:  # a job of this connection still runs (its run just ended)
        raise RunInProgress(held.ref if held is not None else "the previous run")
    return run


def request_run(ctx: Context, actor: Actor, scope: Scope, ref: str) -> RunView:
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = connections.row_in_scope(session, scope, ref)
        if row.credential_sealed is None:
            raise InvalidInput(f"integration {ref} has no credential: PUT one first")
        run = enqueue_run(session, row, trigger="manual", requested_by=actor.label, now=now)
        return view_of(session, run, row.ref)


def retry_run(ctx: Context, actor: Actor, scope: Scope, ref: str, run_ref: str) -> RunView:
    """A new run that retries only the failed records of ``run_ref``."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row, original = _run(session, scope, ref, run_ref)
        if original.status in ACTIVE:
            raise RunInProgress(original.ref)
        failed = session.scalars(
            select(SyncRunRecord.id).where(
                SyncRunRecord.run_id == original.id, SyncRunRecord.outcome == "failed"
            )
        ).first()
        if failed is None:
            raise InvalidInput(f"run {run_ref} has no failed record to retry")
        run = enqueue_run(
            session, row, trigger="retry", requested_by=actor.label, now=now, retry_of=original
        )
        return view_of(session, run, row.ref)


def _run(session: Session, scope: Scope, ref: str, run_ref: str) -> tuple[Integration, SyncRun]:
    row = connections.row_in_scope(session, scope, ref)
    run = session.scalars(
        select(SyncRun).where(SyncRun.ref == run_ref, SyncRun.integration_id == row.id)
    ).first()
    if run is None:
        raise NotFound(f"no run {run_ref} of integration {ref}")
    return row, run


def list_runs(
    ctx: Context, scope: Scope, ref: str, *, limit: int = 50, cursor: str | None = None
) -> Page[RunView]:
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        stmt = select(SyncRun).where(SyncRun.integration_id == row.id)
        page = paginate(session, stmt, SyncRun.id, limit=limit, cursor=cursor)
        return page.map(lambda run: view_of(session, run, row.ref))


def get_run(ctx: Context, scope: Scope, ref: str, run_ref: str) -> RunView:
    with ctx.db.session() as session:
        row, run = _run(session, scope, ref, run_ref)
        return view_of(session, run, row.ref)


def list_records(
    ctx: Context,
    scope: Scope,
    ref: str,
    run_ref: str,
    *,
    outcome: str | None = None,
    record_type: str | None = None,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RecordView]:
    """A run's records, newest first; ``q`` matches the local id, the remote id or the name."""
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    with ctx.db.session() as session:
        _, run = _run(session, scope, ref, run_ref)
        stmt = select(SyncRunRecord).where(SyncRunRecord.run_id == run.id)
        if outcome is not None:
            stmt = stmt.where(SyncRunRecord.outcome == outcome)
        if record_type is not None:
            stmt = stmt.where(SyncRunRecord.record_type == record_type)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(
                or_(
                    SyncRunRecord.local_id == q,
                    SyncRunRecord.remote_id == q,
                    SyncRunRecord.name.ilike(pattern, escape="\\"),
                )
            )
        return paginate(session, stmt, SyncRunRecord.id, limit=limit, cursor=cursor).map(
            RecordView.of
        )


def cancel_active(session: Session, row: Integration, now: datetime) -> None:
    """End the connection's queued or running run as ``canceled`` (it is being deleted)."""
    session.execute(
        update(SyncRun)
        .where(SyncRun.integration_id == row.id, SyncRun.status.in_(ACTIVE))
        .values(status="canceled", finished_at=now, error="integration deleted")
    )


def latest_runs(ctx: Context, scope: Scope, refs: list[str]) -> dict[str, RunView]:
    """The newest run of each of these connections (those that have one), in one query."""
    if not refs:
        return {}
    with ctx.db.session() as session:
        newest = (
            select(func.max(SyncRun.id))
            .join(Integration, Integration.id == SyncRun.integration_id)
            .where(
                Integration.ref.in_(refs),
                within_scope(scope, Integration.org_id, Integration.location_id),
            )
            .group_by(SyncRun.integration_id)
        )
        found = session.execute(
            select(SyncRun, Integration.ref)
            .join(Integration, Integration.id == SyncRun.integration_id)
            .where(SyncRun.id.in_(newest))
        ).all()
        return {ref: view_of(session, run, ref) for run, ref in found}
