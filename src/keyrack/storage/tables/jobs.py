"""The job queue: one row per job, and the last period each schedule enqueued."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.domain.jobs import ACTIVE, WAITING, State
from keyrack.storage.tables.base import Base


def _states(states: tuple[State, ...]) -> str:
    return "state IN (" + ", ".join(f"'{state}'" for state in states) + ")"


WAITING_JOBS = text(_states(WAITING))
RUNNING_JOBS = text(f"state = '{State.RUNNING}'")
UNIQUE_WHILE_ACTIVE = text(f"unique_key IS NOT NULL AND {_states(ACTIVE)}")
"""The partial unique index's predicate; ON CONFLICT names it to find the index."""


class Job(Base):
    """A unit of deferred work. ``payload`` holds ids, never a secret (handlers read sealed rows).

    ``state`` is ``available``/``scheduled`` (waiting for ``run_at``), ``running``
    (held by ``locked_by`` until ``lease_expires_at``, which its heartbeat moves on),
    ``succeeded``, ``failed`` or ``canceled``. ``attempt`` counts the runs begun,
    a run cut short by a dead worker included.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # the claim: waiting jobs in (priority, run_at, id) order
        Index(
            "ix_jobs_waiting",
            "priority",
            "run_at",
            "id",
            postgresql_where=WAITING_JOBS,
            sqlite_where=WAITING_JOBS,
        ),
        # the rescue: running jobs whose lease has run out
        Index(
            "ix_jobs_running_lease",
            "lease_expires_at",
            postgresql_where=RUNNING_JOBS,
            sqlite_where=RUNNING_JOBS,
        ),
        # at most one queued or running job per unique key
        Index(
            "uq_jobs_unique_key",
            "unique_key",
            unique=True,
            postgresql_where=UNIQUE_WHILE_ACTIVE,
            sqlite_where=UNIQUE_WHILE_ACTIVE,
        ),
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime]
    unique_key: Mapped[str | None] = mapped_column(String(200))
    locked_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(2000))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobSchedule(Base):
    """The latest period a periodic job was enqueued for: moving it forward is the lock."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    period_start: Mapped[datetime]
