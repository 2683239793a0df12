"""The durable job queue: jobs are rows in Keyrack's own database.

``enqueue(session, kind, payload)`` adds a job inside the caller's transaction
(it commits with the change that asked for it, or not at all). ``Worker`` claims
due jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one atomic UPDATE on SQLite),
holds each under a lease its heartbeat renews, retries failures with full-jitter
backoff and ends them ``failed`` with their last error; a job whose worker died
runs again once its lease is over. ``Schedule`` enqueues periodic jobs once per
period, however many workers run. Workers wake within moments of a commit
(in-process, PostgreSQL ``LISTEN``, Redis), polling only as a fallback;
``Worker.drain()`` runs what is due once, in the calling thread.
``admin`` lists, retries, cancels and counts. See ``queue`` for the statements.
"""

from keyrack.domain.jobs import Backoff, Every, Priority, State
from keyrack.jobs.handler import AttemptFailed, Discard, Handler, RunningJob, Snooze
from keyrack.jobs.queue import Enqueued, JobView, enqueue
from keyrack.jobs.schedules import Schedule
from keyrack.jobs.worker import Outcome, Worker

__all__ = [
    "AttemptFailed",
    "Backoff",
    "Discard",
    "Enqueued",
    "Every",
    "Handler",
    "JobView",
    "Outcome",
    "Priority",
    "RunningJob",
    "Schedule",
    "Snooze",
    "State",
    "Worker",
    "enqueue",
]
