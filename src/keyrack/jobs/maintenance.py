"""The queue's own periodic work: forgetting finished jobs after the retention period."""

from __future__ import annotations

from datetime import timedelta

from keyrack.domain.jobs import Every
from keyrack.jobs import queue
from keyrack.jobs.handler import Handler, RunningJob
from keyrack.jobs.schedules import Schedule
from keyrack.storage.database import Database

PRUNE = "jobs.prune"


def prune_handler(db: Database, retention: timedelta) -> Handler:
    """Deletes jobs finished more than ``retention`` before the period the job is for."""

    def run(job: RunningJob) -> None:
        job.progress(deleted=queue.prune(db, job.view.run_at - retention))

    return Handler(PRUNE, run)


PRUNE_HOURLY = Schedule(PRUNE, PRUNE, Every(timedelta(hours=1)))
