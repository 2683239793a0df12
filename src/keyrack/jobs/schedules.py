"""Periodic jobs, enqueued exactly once per period however many workers run.

Each schedule has a row in ``job_schedules`` holding the latest period it was
enqueued for. A worker that sees a new period moves that row forward with one
upsert guarded by ``period_start < :new`` and, only if it moved it, enqueues
the job in the same transaction; a racing worker's upsert waits for the first
to commit, then finds the period taken. The job's unique key
``periodic:<name>:<period start>`` names the period in listings. (The key
alone would not do: the unique index lets a key go once its job finishes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyrack.domain.jobs import DEFAULT_MAX_ATTEMPTS, Every, Priority, periodic_key
from keyrack.jobs import queue
from keyrack.jobs.queue import JobView
from keyrack.storage.database import Database
from keyrack.storage.tables.jobs import JobSchedule


@dataclass(frozen=True, slots=True)
class Schedule:
    """Enqueue ``kind`` once per ``period``; the job is due at the period's start."""

    name: str
    kind: str
    period: Every
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = Priority.ROUTINE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


def enqueue_due(db: Database, schedule: Schedule, now: datetime) -> JobView | None:
    """Enqueue the job of the period ``now`` falls in, unless some worker already did."""
    start = schedule.period.start(now)
    with db.transaction() as session:
        insert = queue.dialect_insert(session)(JobSchedule).values(
            name=schedule.name, period_start=start
        )
        moved = session.execute(
            insert.on_conflict_do_update(
                index_elements=[JobSchedule.name],
                set_={"period_start": insert.excluded.period_start},
                where=JobSchedule.period_start < insert.excluded.period_start,
            ).returning(JobSchedule.name)
        ).first()
        if moved is None:
            return None
        return queue.enqueue(
            session,
            schedule.kind,
            schedule.payload,
            unique_key=periodic_key(schedule.name, start),
            priority=schedule.priority,
            run_at=start,
            max_attempts=schedule.max_attempts,
            now=now,
        ).job
