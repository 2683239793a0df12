"""A worker process for the multi-process tests: ``python -m tests.jobs.worker_process URL``.

Its handlers write each run they begin into ``job_runs`` (job id, attempt,
pid, time), so a test counts how often each job ran and where. It prints
``ready`` once it is working, and stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from keyrack.domain.jobs import Every
from keyrack.jobs import Handler, RunningJob, Schedule, Worker
from keyrack.storage.database import Database
from keyrack.storage.tables.base import UTCDateTime

metadata = MetaData()
runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
)


def record(db: Database, job: RunningJob) -> None:
    with db.transaction() as session:
        session.execute(
            insert(runs).values(
                job_id=job.id,
                kind=job.kind,
                attempt=job.attempt,
                pid=os.getpid(),
                started_at=datetime.now(UTC),
            )
        )


def handlers(db: Database) -> list[Handler]:
    def hang_first(job: RunningJob) -> None:
        """Runs forever on its first attempt (until the process is killed)."""
        record(db, job)
        while job.attempt == 1:
            time.sleep(1)

    def hold(job: RunningJob) -> None:
        """Holds the job ``payload["seconds"]``, ignoring a stopping worker."""
        record(db, job)
        time.sleep(float(job.payload.get("seconds", 30)))

    return [
        Handler("record", lambda job: record(db, job)),
        Handler("tick", lambda job: record(db, job)),
        Handler("hang", hang_first),
        Handler("hold", hold),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=30.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--tick-every", type=float, default=None)
    parser.add_argument("--redis", default=None)
    options = parser.parse_args()
    db = Database(options.url)
    schedules = (
        [Schedule("tick", "tick", Every(timedelta(seconds=options.tick_every)))]
        if options.tick_every
        else []
    )
    worker = Worker(
        db,
        handlers(db),
        concurrency=options.concurrency,
        schedules=schedules,
        lease=options.lease,
        poll=options.poll,
        grace=options.grace,
        redis_url=options.redis,
    )

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    worker.run(started=ready)
    db.dispose()


if __name__ == "__main__":
    main()
