"""The worker: claims due jobs, runs each in a thread under a lease, records the outcome.

Threads rather than asyncio: handlers are plain synchronous code over
SQLAlchemy and httpx, a thread per running job lets a slow one block nothing
else, and a worker started inside the server (``start()``/``stop()`` from its
lifespan) never shares the server's event loop with a handler.

Around the running jobs, one dispatcher thread claims (rescuing expired leases
about once a second and enqueueing due periodic jobs), one heartbeat thread
renews the leases every third of a lease, and a listener thread per wake-up
path (PostgreSQL ``LISTEN``, Redis) sets the dispatcher's event. An idle
dispatcher sleeps until whichever comes first: a wake-up, the next due job or
lease end it knows of, the next period of a schedule, or ``poll`` seconds, which
stretch to ``LISTENING_POLL`` while a wake-up path is up (every enqueue anywhere
wakes it then, so an idle server sends almost no SQL).

``drain()`` runs the due jobs once in the calling thread instead (``keyrack sweep``,
tests). A worker only listens for wake-ups; announcing new jobs (in-process, and
through Redis) is the enqueuing process's part (``wakeup``). What a handler may do
is in ``handler``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

import psycopg
import redis

from keyrack.config import Settings
from keyrack.domain.jobs import ACTIVE, State, is_bulk
from keyrack.errors import KeyrackError
from keyrack.jobs import maintenance, metrics, queue, wakeup
from keyrack.jobs.handler import AttemptFailed, Discard, Handler, RunningJob, Snooze
from keyrack.jobs.queue import JobView
from keyrack.jobs.schedules import Schedule, enqueue_due
from keyrack.storage.database import Database

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RESCUE_EVERY = 1.0
"""Seconds between two looks for expired leases by one worker (with no wake-up path up;
``LISTENING_POLL`` with one: it also wakes at the lease ends it knows of)."""
LISTENING_POLL = 30.0
"""Longest idle sleep while a wake-up path is up: a safety net for a lost wake-up."""
IDLE_FLOOR = 0.05
"""Shortest idle sleep: a due job locked by another worker's claim is gone by then."""
DEPTH_EVERY = 10.0
"""Seconds between two refreshes of the queue-depth gauge by one worker."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Runtime(Protocol):
    """A service context: its database and clock (``keyrack.services.context.Context``)."""

    @property
    def db(self) -> Database: ...

    @property
    def clock(self) -> Clock: ...


class Outcome(NamedTuple):
    """How one run of a job ended: its new state (None: it was no longer this worker's)."""

    job: JobView
    state: State | None


def _log_failure(what: str, exc: Exception) -> None:
    """An unreachable database is one line (it is retried); anything else has its trace."""
    if isinstance(exc, KeyrackError):
        log.error("%s: %s; trying again in a moment", what, exc.for_operator)
    else:
        log.exception("%s; trying again in a moment", what)


class Worker:
    """Runs up to ``concurrency`` jobs at once, plus ``bulk_concurrency`` in the bulk band."""

    def __init__(
        self,
        runtime: Database | Runtime,
        handlers: Iterable[Handler],
        *,
        concurrency: int = 4,
        bulk_concurrency: int = 1,
        schedules: Sequence[Schedule] = (),
        lease: float = 30.0,
        poll: float = 1.0,
        grace: float = 10.0,
        redis_url: str | None = None,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1 or bulk_concurrency < 0:
            raise ValueError("a worker runs at least one job at a time")
        if isinstance(runtime, Database):
            self.db, self._clock = runtime, _utcnow
        else:
            self.db, self._clock = runtime.db, runtime.clock
        self.handlers = {handler.kind: handler for handler in handlers}
        unknown = {s.kind for s in schedules} - set(self.handlers)
        if unknown:
            raise ValueError(f"schedules of kinds without a handler: {sorted(unknown)}")
        self.schedules = tuple(schedules)
        self.concurrency, self.bulk_concurrency = concurrency, bulk_concurrency
        self.lease = timedelta(seconds=lease)
        self.poll, self.grace = poll, grace
        self.redis_url = redis_url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = threading.Event()
        self._listening: set[str] = set()
        """The wake-up paths up now (listener thread names)."""
        self._stopping = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, tuple[RunningJob, threading.Thread]] = {}
        self._periods: dict[str, datetime] = {}
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(
        cls,
        runtime: Database | Runtime,
        handlers: Iterable[Handler],
        settings: Settings,
        schedules: Sequence[Schedule] = (),
    ) -> Worker:
        """A worker as the deployment configures it, pruning finished jobs hourly too."""
        db = runtime if isinstance(runtime, Database) else runtime.db
        retention = timedelta(days=settings.job_retention_days)
        return cls(
            runtime,
            [*handlers, maintenance.prune_handler(db, retention)],
            concurrency=settings.job_concurrency,
            bulk_concurrency=settings.job_bulk_concurrency,
            schedules=[*schedules, maintenance.PRUNE_HOURLY],
            lease=settings.job_lease_seconds,
            poll=settings.job_poll_seconds,
            grace=settings.job_shutdown_grace_seconds,
            redis_url=settings.redis_url,
        )

    # -- life cycle -------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> list[int]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._running)

    def start(self) -> None:
        """Start claiming in background threads; returns at once."""
        if self._threads:
            raise RuntimeError("this worker has been started already")
        wakeup.subscribe(self.db.engine.url, self._wake)
        loops: list[Callable[[], None]] = [self._dispatch, self._beat]
        if self.db.dialect == "postgresql":
            loops.append(self._listen_postgres)
        if self.redis_url:
            loops.append(self._listen_redis)
        for loop in loops:
            thread = threading.Thread(target=loop, name=f"jobs-{loop.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace: float | None = None) -> list[int]:
        """Stop claiming, give running jobs ``grace`` seconds, then hand back the rest.

        Returns the ids of the jobs still running when the grace ran out: their
        leases are cleared, so any worker takes them at once (a handler still
        running here can no longer record an outcome for them).
        """
        if self._closing.is_set() or not self._threads:
            return []
        self._stopping.set()
        self._wake.set()
        self._threads[0].join()  # the dispatcher: nothing new is claimed from here on
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        for _, thread in self._running_jobs():
            thread.join(max(0.0, deadline - time.monotonic()))
        held = self.running
        if held:
            try:
                queue.release(self.db, self.worker_id, held, self._clock())
                log.info("worker stopped; jobs handed back", extra={"jobs": held})
            except Exception:
                log.exception("could not hand back jobs; they return when their leases end")
        for job, _ in self._running_jobs():
            job.lost.set()
        self._closing.set()
        for thread in self._threads[1:]:
            thread.join()
        wakeup.unsubscribe(self.db.engine.url, self._wake)
        return held

    def run(self, started: Callable[[], None] | None = None) -> None:
        """Work until SIGTERM or SIGINT, then stop gracefully (call from the main thread).

        ``started`` is called once the worker is working (e.g. to say so).
        """
        asked = threading.Event()

        def _ask(signum: int, frame: object) -> None:
            asked.set()

        previous = {sig: signal.signal(sig, _ask) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.start()
        try:
            if started is not None:
                started()
            while not asked.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wake(self) -> None:
        self._wake.set()

    def drain(self, now: datetime | None = None) -> list[Outcome]:
        """Run every job due at ``now`` (default: the clock's now) here, one after another,
        until none is left, and say how each ended: ``keyrack sweep`` and tests.

        No schedules and no wake-ups, but the same claim, lease (renewed while a job
        runs) and outcome as ``start()``. A job that fails waits its backoff, so it
        runs once per drain. Use a worker for one drain, or start it: not both.
        """
        if self._threads or self._closing.is_set():
            raise RuntimeError("this worker has been used already")
        moment = now or self._clock()
        beat = threading.Thread(target=self._beat, name="jobs-drain-beat", daemon=True)
        beat.start()
        outcomes: list[Outcome] = []
        try:
            queue.rescue(self.db, moment)
            while claimed := self._claim(moment, 1, min(1, self.bulk_concurrency)):
                for job in claimed:
                    with self._lock:
                        self._running[job.id] = (job, threading.current_thread())
                    outcomes.append(Outcome(job.view, self._execute(job)))
        finally:
            self._closing.set()
            beat.join()
        return outcomes

    # -- dispatcher -------------------------------------------------------------------

    def _running_jobs(self) -> list[tuple[RunningJob, threading.Thread]]:
        with self._lock:
            return list(self._running.values())

    def _free(self) -> tuple[int, int]:
        """Free slots below the bulk band and in it."""
        with self._lock:
            bulk = sum(1 for job, _ in self._running.values() if is_bulk(job.view.priority))
            main = len(self._running) - bulk
        return max(0, self.concurrency - main), max(0, self.bulk_concurrency - bulk)

    def _dispatch(self) -> None:
        next_rescue = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            timeout = self._idle_poll()
            try:
                now = self._clock()
                upcoming = self._enqueue_schedules(now)
                if time.monotonic() >= next_rescue:
                    queue.rescue(self.db, now)
                    next_rescue = time.monotonic() + (
                        LISTENING_POLL if self._listening else RESCUE_EVERY
                    )
                free, free_bulk = self._free()
                due: datetime | None = None
                if free or free_bulk:
                    claimed = self._claim(now, free, free_bulk)
                    for job in claimed:
                        self._spawn(job)
                    if claimed and len(claimed) == free + free_bulk:
                        continue  # every free slot filled: look again when one frees up
                    if not claimed:  # nothing due now: sleep until something is
                        due = queue.next_due(
                            self.db, self.handlers, main=free > 0, bulk=free_bulk > 0
                        )
                        if due is not None and due <= now:
                            next_rescue = 0.0  # most likely a lease that just ran out
                timeout = self._until(now, [due, upcoming])
            except Exception as exc:
                _log_failure("job dispatch failed", exc)
            self._wake.wait(timeout)

    def _idle_poll(self) -> float:
        return max(self.poll, LISTENING_POLL) if self._listening else self.poll

    def _until(self, now: datetime, moments: Iterable[datetime | None]) -> float:
        soonest = min((m for m in moments if m is not None), default=None)
        poll = self._idle_poll()
        if soonest is None:
            return poll
        return min(poll, max(IDLE_FLOOR, (soonest - now).total_seconds()))

    def _claim(self, now: datetime, free: int, free_bulk: int) -> list[RunningJob]:
        claimed = queue.claim(
            self.db,
            worker_id=self.worker_id,
            kinds=list(self.handlers),
            now=now,
            lease=self.lease,
            limit=free,
            bulk_limit=free_bulk,
        )
        for view in claimed:
            metrics.PICKUP_LATENCY.observe(max(0.0, (now - view.run_at).total_seconds()))
        return [
            RunningJob(view, self.db, self.worker_id, lambda: self.stopping) for view in claimed
        ]

    def _spawn(self, job: RunningJob) -> None:
        """Run ``job`` in a thread of its own."""
        thread = threading.Thread(
            target=self._execute, args=(job,), name=f"job-{job.id}", daemon=True
        )
        with self._lock:
            self._running[job.id] = (job, thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the lease lapses, another worker runs it
            with self._lock:
                self._running.pop(job.id, None)
            raise

    def _enqueue_schedules(self, now: datetime) -> datetime | None:
        """Enqueue each schedule's new period once; returns when the next period begins."""
        upcoming: datetime | None = None
        for schedule in self.schedules:
            start = schedule.period.start(now)
            if self._periods.get(schedule.name) != start:
                enqueue_due(self.db, schedule, now)
                self._periods[schedule.name] = start
            following = start + schedule.period.every
            upcoming = following if upcoming is None else min(upcoming, following)
        return upcoming

    # -- one job ----------------------------------------------------------------------

    def _execute(self, job: RunningJob) -> State | None:
        """Run ``job``'s handler and record how it ended; returns the job's new state."""
        handler = self.handlers[job.kind]
        outcome: State | None = None
        try:
            try:
                handler.run(job)
            except Snooze as snoozed:
                outcome = queue.snooze(
                    self.db,
                    job.id,
                    self.worker_id,
                    self._clock(),
                    timedelta(seconds=max(0.0, snoozed.seconds)),
                    snoozed.reason,
                )
            except Discard as discarded:
                outcome = self._failed(job, discarded, None)
            except Exception as exc:
                outcome = self._failed(job, exc, handler.backoff.delay(job.attempt))
            else:
                if queue.succeed(self.db, job.id, self.worker_id, self._clock()):
                    outcome = State.SUCCEEDED
        except Exception:
            log.exception("could not record a job's outcome; it runs again after its lease")
        finally:
            with self._lock:
                self._running.pop(job.id, None)
            self._wake.set()
        return outcome

    def _failed(
        self, job: RunningJob, exc: BaseException, retry_in: timedelta | None
    ) -> State | None:
        error = f"{type(exc).__name__}: {exc}"
        state = queue.fail(
            self.db, job.view, self.worker_id, self._clock(), error, retry_in=retry_in
        )
        final = state is State.FAILED
        metrics.FAILURES.labels(job.kind, str(final).lower()).inc()
        foreseen = isinstance(exc, AttemptFailed | Discard)
        log.warning(
            "job failed: %s" if final else "job attempt failed; retrying: %s",
            error,
            exc_info=None if foreseen else exc,
            extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempt},
        )
        return state

    # -- heartbeat and wake-ups -------------------------------------------------------

    def _beat(self) -> None:
        every = self.lease.total_seconds() / 3
        next_depth = 0.0
        while not self._closing.wait(every):
            try:
                running = self._running_jobs()
                if running:
                    held = queue.heartbeat(
                        self.db,
                        self.worker_id,
                        [job.id for job, _ in running],
                        self._clock(),
                        self.lease,
                    )
                    for job, _ in running:
                        if job.id not in held:
                            job.lost.set()
                if time.monotonic() >= next_depth:
                    metrics.record_depth(queue.counts(self.db, ACTIVE), ACTIVE)
                    next_depth = time.monotonic() + DEPTH_EVERY
            except Exception as exc:
                _log_failure("job heartbeat failed", exc)

    def _listen_postgres(self) -> None:
        conninfo = self.db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._closing.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {wakeup.CHANNEL}")
                    self._listening.add("postgres")
                    self._wake.set()  # whatever was enqueued while we were not listening
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._wake.set()
            except psycopg.Error:
                log.warning("job wake-ups: PostgreSQL LISTEN lost; polling meanwhile")
                self._closing.wait(1.0)
            finally:
                self._lost_wakeups("postgres")

    def _listen_redis(self) -> None:
        assert self.redis_url is not None
        while not self._closing.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
            try:
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(wakeup.CHANNEL)
                    self._listening.add("redis")
                    self._wake.set()
                    while not self._closing.is_set():
                        if pubsub.get_message(timeout=0.5) is not None:
                            self._wake.set()
            except redis.RedisError:
                log.warning("job wake-ups: Redis subscription lost; polling meanwhile")
                self._closing.wait(1.0)
            finally:
                self._lost_wakeups("redis")
                client.close()

    def _lost_wakeups(self, path: str) -> None:
        """A wake-up path is down: poll at the short interval again, starting now."""
        self._listening.discard(path)
        self._wake.set()
