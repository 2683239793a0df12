"""Every statement the queue runs: enqueue, claim, lease, finish, rescue.

``enqueue`` writes into the caller's session, so a job commits (or vanishes)
with the business change that asked for it. Everything else runs in its own
short transaction and is guarded by ``locked_by`` and ``state``: a worker that
lost its lease (it stalled, or the job was canceled) cannot overwrite what
happened since. The claim is one statement on both databases::

    WITH locked AS MATERIALIZED (
        SELECT id FROM jobs
        WHERE state IN ('available', 'scheduled') AND run_at <= :now
          AND kind IN (:kinds) AND priority < 30      -- (the bulk band: >= 30)
        ORDER BY priority, run_at, id LIMIT :n
        FOR UPDATE SKIP LOCKED                       -- PostgreSQL only
    )
    UPDATE jobs SET state = 'running', attempt = attempt + 1, locked_by = :worker,
                    started_at = :now, lease_expires_at = :lease_end
    WHERE id IN (SELECT id FROM locked) RETURNING *

PostgreSQL's workers skip each other's locked rows; SQLite runs one writer at
a time, so the statement is atomic there as it stands.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyrack.domain.jobs import (
    ACTIVE,
    DEFAULT_MAX_ATTEMPTS,
    FINISHED,
    MAX_ERROR_LENGTH,
    Priority,
    State,
    waiting_state,
)
from keyrack.errors import Conflict, InvalidInput
from keyrack.jobs import wakeup
from keyrack.logging import redact
from keyrack.storage.database import Database
from keyrack.storage.tables.jobs import RUNNING_JOBS, UNIQUE_WHILE_ACTIVE, WAITING_JOBS, Job

JOBS = cast(Table, Job.__table__)
"""Updates go to the table, not the ORM entity: no session to synchronize, no per-row cost."""
MAX_KIND_LENGTH = 100
MAX_UNIQUE_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    kind: str
    payload: dict[str, Any]
    priority: int
    state: State
    attempt: int
    max_attempts: int
    run_at: datetime
    unique_key: str | None
    locked_by: str | None
    """The worker holding the job, or the one that ran it last."""
    lease_expires_at: datetime | None
    last_error: str | None
    progress: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> JobView:
        """From a ``Job`` or a result row holding its columns."""
        values = {name: getattr(row, name) for name in _FIELDS}
        return cls(**{**values, "state": State(values["state"])})


_FIELDS = tuple(f.name for f in fields(JobView))
COLUMNS = tuple(Job.__table__.c[name] for name in _FIELDS)


class Enqueued(NamedTuple):
    job: JobView
    created: bool
    """False when a job with the same unique key was already queued or running: that one."""


def dialect_insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _check(kind: str, unique_key: str | None, max_attempts: int) -> None:
    if not 0 < len(kind) <= MAX_KIND_LENGTH:
        raise InvalidInput(f"a job kind has 1 to {MAX_KIND_LENGTH} characters")
    if unique_key is not None and not 0 < len(unique_key) <= MAX_UNIQUE_KEY_LENGTH:
        raise InvalidInput(f"a unique key has 1 to {MAX_UNIQUE_KEY_LENGTH} characters")
    if max_attempts < 1:
        raise InvalidInput("a job needs at least one attempt")


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    unique_key: str | None = None,
    priority: int = Priority.ROUTINE,
    run_at: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
    replace: bool = False,
) -> Enqueued:
    """Add a job in the caller's transaction; workers are woken once it commits.

    ``payload`` is JSON and never a secret. With ``unique_key``, a job already
    queued or running under that key is returned (``created=False``) instead
    of a second one; with ``replace`` too, a waiting one is canceled and this
    job takes its place (a running one is still returned: it cannot be undone).
    """
    _check(kind, unique_key, max_attempts)
    now = now or datetime.now(UTC)
    run_at = run_at or now
    if replace and unique_key is not None:
        session.execute(
            update(JOBS)
            .where(Job.unique_key == unique_key, WAITING_JOBS)
            .values(state=State.CANCELED, finished_at=now, last_error="replaced by a newer job")
        )
    values = {
        "kind": kind,
        "payload": payload or {},
        "priority": int(priority),
        "state": waiting_state(run_at, now),
        "attempt": 0,
        "max_attempts": max_attempts,
        "run_at": run_at,
        "unique_key": unique_key,
        "created_at": now,
    }
    insert = dialect_insert(session)(Job).values(**values)
    if unique_key is not None:
        insert = insert.on_conflict_do_nothing(
            index_elements=[Job.unique_key], index_where=UNIQUE_WHILE_ACTIVE
        )
    for _ in range(3):
        row = session.execute(insert.returning(*COLUMNS)).first()
        if row is not None:
            wakeup.on_commit(session)
            return Enqueued(JobView.of(row), created=True)
        holder = session.execute(
            select(*COLUMNS).where(Job.unique_key == unique_key, Job.state.in_(ACTIVE))
        ).first()
        if holder is not None:
            return Enqueued(JobView.of(holder), created=False)
        # the holder finished between the two statements: the key is free again
    raise Conflict(f"the unique key {unique_key!r} is busy; try again")


_BANDS = (Job.priority < Priority.BULK, Job.priority >= Priority.BULK)


@functools.cache
def _claim_statement(bands: tuple[bool, ...]) -> Update:
    """The claim for the bands asked for (built once per shape; values are parameters)."""
    now = bindparam("now", type_=Job.run_at.type)
    locked = [
        select(Job.id)
        .where(
            WAITING_JOBS,
            Job.run_at <= now,
            Job.kind.in_(bindparam("kinds", expanding=True)),
            band,
        )
        .order_by(Job.priority, Job.run_at, Job.id)
        .limit(bindparam(f"limit_{index}", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte(f"locked_{index}")
        .prefix_with("MATERIALIZED")
        for index, (band, wanted) in enumerate(zip(_BANDS, bands, strict=True))
        if wanted
    ]
    return (
        update(JOBS)
        .where(or_(*(Job.id.in_(select(cte.c.id)) for cte in locked)))
        .values(
            state=State.RUNNING,
            attempt=Job.attempt + 1,
            locked_by=bindparam("worker_id"),
            started_at=now,
            lease_expires_at=bindparam("lease_end", type_=Job.run_at.type),
        )
        .returning(*COLUMNS)
    )


def claim(
    db: Database,
    *,
    worker_id: str,
    kinds: Collection[str],
    now: datetime,
    lease: timedelta,
    limit: int,
    bulk_limit: int = 0,
) -> list[JobView]:
    """Take up to ``limit`` due jobs below the bulk band and ``bulk_limit`` in it, in order."""
    limits = (limit, bulk_limit)
    if not kinds or not any(limits):
        return []
    parameters: dict[str, Any] = {f"limit_{i}": n for i, n in enumerate(limits) if n > 0}
    parameters |= {"now": now, "kinds": list(kinds), "worker_id": worker_id}
    with db.transaction() as session:
        rows = session.execute(
            _claim_statement(tuple(n > 0 for n in limits)),
            {**parameters, "lease_end": now + lease},
        ).all()
    return sorted((JobView.of(row) for row in rows), key=lambda j: (j.priority, j.run_at, j.id))


def rescue(db: Database, now: datetime) -> int:
    """Give back running jobs whose lease ran out (their worker died): retried, or failed
    when that was their last attempt. Returns how many."""
    expired = and_(RUNNING_JOBS, Job.lease_expires_at <= now)
    lost = "its worker stopped renewing the lease (" + Job.locked_by + ")"
    with db.transaction() as session:
        retried = session.execute(
            update(JOBS)
            .where(expired, Job.attempt < Job.max_attempts)
            .values(state=State.AVAILABLE, run_at=now, lease_expires_at=None, last_error=lost)
        )
        failed = session.execute(
            update(JOBS)
            .where(expired, Job.attempt >= Job.max_attempts)
            .values(state=State.FAILED, finished_at=now, lease_expires_at=None, last_error=lost)
        )
    return int(retried.rowcount + failed.rowcount)  # type: ignore[attr-defined]


def _held(job_ids: Collection[int], worker_id: str) -> ColumnElement[bool]:
    return and_(Job.id.in_(job_ids), Job.locked_by == worker_id, Job.state == State.RUNNING)


def heartbeat(
    db: Database, worker_id: str, job_ids: Collection[int], now: datetime, lease: timedelta
) -> set[int]:
    """Renew the leases of ``job_ids``; returns those still held (a canceled one is not)."""
    if not job_ids:
        return set()
    with db.transaction() as session:
        rows = session.execute(
            update(JOBS)
            .where(_held(job_ids, worker_id))
            .values(lease_expires_at=now + lease)
            .returning(Job.id)
        )
        return {row.id for row in rows}


def _finish(db: Database, job_id: int, worker_id: str, **values: Any) -> bool:
    with db.transaction() as session:
        result = session.execute(update(JOBS).where(_held([job_id], worker_id)).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def succeed(db: Database, job_id: int, worker_id: str, now: datetime) -> bool:
    """Record success; False when the job was no longer this worker's to finish."""
    return _finish(
        db, job_id, worker_id, state=State.SUCCEEDED, finished_at=now, lease_expires_at=None
    )


def fail(
    db: Database,
    job: JobView,
    worker_id: str,
    now: datetime,
    error: str,
    *,
    retry_in: timedelta | None,
) -> State | None:
    """Record a failed attempt: retried after ``retry_in``, or ``failed`` when ``retry_in``
    is None or the attempts are used up. Returns the new state (None: no longer ours)."""
    if retry_in is None or job.attempt >= job.max_attempts:
        values: dict[str, Any] = {"state": State.FAILED, "finished_at": now}
    else:
        run_at = now + retry_in
        values = {"state": waiting_state(run_at, now), "run_at": run_at}
    done = _finish(
        db, job.id, worker_id, lease_expires_at=None, last_error=scrub_error(error), **values
    )
    return State(values["state"]) if done else None


def snooze(
    db: Database,
    job_id: int,
    worker_id: str,
    now: datetime,
    delay: timedelta,
    reason: str | None = None,
) -> State | None:
    """Run the job again after ``delay`` without counting this attempt; returns its new state
    (None: no longer ours)."""
    run_at = now + delay
    state = waiting_state(run_at, now)
    values: dict[str, Any] = {"state": state, "run_at": run_at}
    if reason is not None:
        values["last_error"] = scrub_error(reason)
    done = _finish(db, job_id, worker_id, attempt=Job.attempt - 1, lease_expires_at=None, **values)
    return state if done else None


def release(db: Database, worker_id: str, job_ids: Collection[int], now: datetime) -> int:
    """Hand back jobs a stopping worker still holds: due at once, the attempt not counted."""
    if not job_ids:
        return 0
    with db.transaction() as session:
        result = session.execute(
            update(JOBS)
            .where(_held(job_ids, worker_id))
            .values(
                state=State.AVAILABLE,
                run_at=now,
                attempt=Job.attempt - 1,
                locked_by=None,
                lease_expires_at=None,
            )
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


def report_progress(db: Database, job_id: int, worker_id: str, progress: dict[str, Any]) -> bool:
    with db.transaction() as session:
        result = session.execute(
            update(JOBS).where(_held([job_id], worker_id)).values(progress=progress)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def next_due(db: Database, kinds: Collection[str], *, main: bool, bulk: bool) -> datetime | None:
    """When the next waiting job of ``kinds`` in the bands asked for is due, or a lease ends."""
    bands = [
        band
        for band, wanted in (
            (Job.priority < Priority.BULK, main),
            (Job.priority >= Priority.BULK, bulk),
        )
        if wanted
    ]
    moments: list[Any] = [
        select(func.min(Job.lease_expires_at)).where(RUNNING_JOBS).scalar_subquery()
    ]
    if bands and kinds:
        moments.append(
            select(func.min(Job.run_at))
            .where(WAITING_JOBS, Job.kind.in_(kinds), or_(*bands))
            .scalar_subquery()
        )
    with db.session() as session:
        row = session.execute(select(*(m.label(f"m{i}") for i, m in enumerate(moments)))).one()
    found = [_as_utc(value) for value in row if value is not None]
    return min(found) if found else None


def _as_utc(value: Any) -> datetime:
    """A bare aggregate skips the column type: SQLite hands back text, PostgreSQL an aware time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def prune(db: Database, before: datetime, *, batch: int = 1000) -> int:
    """Delete jobs that finished before ``before``, ``batch`` rows per transaction."""
    removed = 0
    while True:
        with db.transaction() as session:
            old = (
                select(Job.id)
                .where(Job.state.in_(FINISHED), Job.finished_at < before)
                .limit(batch)
                .scalar_subquery()
            )
            result = session.execute(delete(JOBS).where(Job.id.in_(old)))
        count = int(result.rowcount)  # type: ignore[attr-defined]
        removed += count
        if count < batch:
            return removed


_WEBHOOK_SECRET = re.compile(r"whsec_[0-9A-Za-z_\-]+")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")


def scrub_error(text: str) -> str:
    """An error as stored: key-shaped tokens, webhook secrets and URL passwords removed, bounded."""
    cleaned = _URL_CREDENTIALS.sub("[redacted]@", _WEBHOOK_SECRET.sub("whsec_[redacted]", text))
    cleaned = redact(cleaned)
    if len(cleaned) > MAX_ERROR_LENGTH:
        cleaned = cleaned[: MAX_ERROR_LENGTH - 1] + "…"
    return cleaned


def counts(db: Database, states: Collection[State] | None = None) -> dict[str, int]:
    """How many jobs are in each state (of ``states``, default all)."""
    stmt = select(Job.state, func.count()).group_by(Job.state)
    if states is not None:
        stmt = stmt.where(Job.state.in_(states))
    with db.session() as session:
        return {state: int(n) for state, n in session.execute(stmt)}
