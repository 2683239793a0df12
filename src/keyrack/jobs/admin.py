"""Seeing and steering the queue: list, retry, cancel, stats (``services.queue`` audits the
steering for the CLI and the console)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from keyrack.domain.jobs import ACTIVE, WAITING, State
from keyrack.errors import Conflict, InvalidInput, NotFound
from keyrack.jobs import metrics, queue, wakeup
from keyrack.jobs.queue import JOBS, JobView
from keyrack.storage.database import Database
from keyrack.storage.paging import DEFAULT_LIMIT, Page, paginate
from keyrack.storage.tables.jobs import WAITING_JOBS, Job

RECENT_FAILURES = 10
RETRYABLE: tuple[State, ...] = (State.FAILED, State.CANCELED, *WAITING)
CANCELABLE: tuple[State, ...] = ACTIVE


def parse_state(text: str) -> State:
    try:
        return State(text)
    except ValueError:
        raise InvalidInput(f"state must be one of {', '.join(State)}") from None


def list_jobs(
    db: Database,
    *,
    state: State | None = None,
    kind: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[JobView]:
    """Jobs, newest first, one page at a time."""
    stmt = select(Job)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    with db.session() as session:
        return paginate(session, stmt, Job.id, limit=limit, cursor=cursor).map(JobView.of)


def get_job(db: Database, job_id: int) -> JobView:
    with db.session() as session:
        return job_in(session, job_id)


def job_in(session: Session, job_id: int) -> JobView:
    """The job as ``session`` sees it (e.g. before changing it in the same transaction)."""
    row = session.get(Job, job_id)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return JobView.of(row)


def unique_key_busy(job_id: int) -> Conflict:
    return Conflict(
        f"job {job_id} cannot be retried: another job with its unique key is queued or running"
    )


def _change(
    session: Session, job_id: int, allowed: tuple[State, ...], verb: str, **values: Any
) -> JobView:
    """Apply ``values`` if the job is in one of ``allowed``; say why not otherwise.

    A job brought back to waiting while another holds its unique key is refused
    (``unique_key_busy``); should one be enqueued meanwhile, the commit fails on the
    unique index (``IntegrityError``), which the caller reports the same way.
    """
    current = job_in(session, job_id)  # NotFound when there is no such job
    if values.get("state") in WAITING and current.unique_key is not None:
        holder = session.scalar(
            select(Job.id).where(
                Job.unique_key == current.unique_key, Job.state.in_(ACTIVE), Job.id != job_id
            )
        )
        if holder is not None:
            raise unique_key_busy(job_id)
    row = session.execute(
        update(JOBS)
        .where(Job.id == job_id, Job.state.in_(allowed))
        .values(**values)
        .returning(*queue.COLUMNS)
    ).first()
    if row is None:
        raise Conflict(f"job {job_id} is {current.state}: it cannot be {verb}")
    if values.get("state") in WAITING:
        wakeup.on_commit(session)
    return JobView.of(row)


def retry(session: Session, job_id: int, now: datetime) -> JobView:
    """Run a failed, canceled or waiting job now; a failed one gets one more attempt.

    In the caller's transaction, so an operator's audit record commits with it."""
    return _change(
        session,
        job_id,
        RETRYABLE,
        "retried",
        state=State.AVAILABLE,
        run_at=now,
        finished_at=None,
        max_attempts=case(
            (Job.attempt >= Job.max_attempts, Job.attempt + 1), else_=Job.max_attempts
        ),
    )


def cancel(session: Session, job_id: int, now: datetime) -> JobView:
    """Cancel a waiting or running job (a running one is told to stop at its next heartbeat)."""
    return _change(
        session,
        job_id,
        CANCELABLE,
        "canceled",
        state=State.CANCELED,
        finished_at=now,
        lease_expires_at=None,
    )


@dataclass(frozen=True, slots=True)
class QueueStats:
    counts: dict[str, int]
    """Jobs per state, every state listed."""
    oldest_waiting: JobView | None
    """The job due longest ago that no worker has started."""
    oldest_waiting_seconds: float | None
    recent_failures: list[JobView]
    """The latest jobs to end ``failed``, newest first, with their errors."""


def stats(db: Database, now: datetime) -> QueueStats:
    counted = queue.counts(db)
    metrics.record_depth(counted)
    with db.session() as session:
        oldest = session.scalars(
            select(Job).where(WAITING_JOBS, Job.run_at <= now).order_by(Job.run_at, Job.id).limit(1)
        ).first()
        failures = session.scalars(
            select(Job)
            .where(Job.state == State.FAILED)
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(RECENT_FAILURES)
        ).all()
        oldest_view = JobView.of(oldest) if oldest is not None else None
        failure_views = [JobView.of(row) for row in failures]
    return QueueStats(
        counts={state.value: counted.get(state.value, 0) for state in State},
        oldest_waiting=oldest_view,
        oldest_waiting_seconds=(now - oldest_view.run_at).total_seconds() if oldest_view else None,
        recent_failures=failure_views,
    )
