"""The in-process worker on SQLite and PostgreSQL: real threads, the real clock."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, update
from starlette.applications import Starlette

from keyrack.cli import main
from keyrack.cli.common import console
from keyrack.config import Settings
from keyrack.domain.jobs import Backoff, Every, Priority, State
from keyrack.jobs import Discard, Handler, RunningJob, Schedule, Snooze, Worker, admin, enqueue
from keyrack.jobs.maintenance import PRUNE
from keyrack.jobs.queue import JobView
from keyrack.jobs.worker import LISTENING_POLL
from keyrack.services.context import Context
from keyrack.storage.database import Database
from keyrack.storage.tables.jobs import Job
from tests.conftest import REDIS_SKIP, REDIS_URL, MutableClock
from tests.jobs.conftest import KIND
from tests.live import serve_in_thread

FAST_RETRY = Backoff(base=timedelta(milliseconds=1), cap=timedelta(milliseconds=1))
QUIET_POLL = 30.0
"""A poll so long that any pickup within a test proves a wake-up path."""


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def add(db: Database, kind: str = KIND, **options: object) -> JobView:
    with db.transaction() as session:
        return enqueue(session, kind, **options).job  # type: ignore[arg-type]


def state_of(db: Database, job_id: int) -> State:
    return admin.get_job(db, job_id).state


def start(workers: list[Worker], db: Database, *handlers: Handler, **options: object) -> Worker:
    options.setdefault("poll", QUIET_POLL)
    worker = Worker(db, handlers, **options)  # type: ignore[arg-type]
    worker.start()
    workers.append(worker)
    return worker


def test_a_job_enqueued_while_the_worker_idles_starts_at_once_not_at_the_poll(
    db: Database, workers: list[Worker]
) -> None:
    started = threading.Event()
    start(workers, db, Handler(KIND, lambda job: started.set()))
    time.sleep(0.3)  # the worker has looked, found nothing, and sleeps for QUIET_POLL
    added = add(db)
    assert started.wait(10)
    eventually(lambda: state_of(db, added.id) is State.SUCCEEDED)
    done = admin.get_job(db, added.id)
    assert done.started_at is not None
    assert (done.started_at - done.created_at).total_seconds() < QUIET_POLL


def test_the_worker_runs_up_to_its_concurrency_at_once(db: Database, workers: list[Worker]) -> None:
    lock = threading.Lock()
    now_running, most = [0], [0]
    release = threading.Event()

    def run(job: RunningJob) -> None:
        with lock:
            now_running[0] += 1
            most[0] = max(most[0], now_running[0])
        release.wait(10)
        with lock:
            now_running[0] -= 1

    jobs = [add(db) for _ in range(5)]
    worker = start(workers, db, Handler(KIND, run), concurrency=3)
    eventually(lambda: len(worker.running) == 3)
    time.sleep(0.1)
    assert len(worker.running) == 3  # the other two wait for a free slot
    release.set()
    eventually(lambda: all(state_of(db, j.id) is State.SUCCEEDED for j in jobs))
    assert most[0] == 3


def test_a_delivery_does_not_wait_behind_a_long_export(db: Database, workers: list[Worker]) -> None:
    export_may_end = threading.Event()
    start(
        workers,
        db,
        Handler("export", lambda job: export_may_end.wait(10) or None),
        Handler("deliver", lambda job: None),
        concurrency=1,
        bulk_concurrency=1,
    )
    export = add(db, "export", priority=Priority.BULK)
    eventually(lambda: state_of(db, export.id) is State.RUNNING)
    delivery = add(db, "deliver", priority=Priority.DELIVERY)
    eventually(lambda: state_of(db, delivery.id) is State.SUCCEEDED)
    assert state_of(db, export.id) is State.RUNNING
    export_may_end.set()
    eventually(lambda: state_of(db, export.id) is State.SUCCEEDED)


def test_a_job_failing_every_time_ends_failed_and_shows_in_keyrack_jobs(
    db: Database,
    workers: list[Worker],
    ctx: Context,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[int] = []

    def run(job: RunningJob) -> None:
        calls.append(job.attempt)
        raise ValueError(f"provider refused (attempt {job.attempt})")

    start(workers, db, Handler(KIND, run, backoff=FAST_RETRY), poll=0.05)
    failing = add(db, max_attempts=3)
    eventually(lambda: state_of(db, failing.id) is State.FAILED)
    assert calls == [1, 2, 3]

    monkeypatch.setattr("keyrack.cli.queue.context", lambda: ctx)
    monkeypatch.setattr(console, "width", 160)

    def keyrack(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["keyrack", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        return int(exited.value.code or 0), capsys.readouterr().out

    code, out = keyrack("jobs", "list", "--state", "failed", "--json")
    assert code == 0
    [listed] = json.loads(out)["data"]
    assert listed["id"] == failing.id and listed["state"] == "failed" and listed["attempt"] == 3
    assert listed["last_error"] == "ValueError: provider refused (attempt 3)"
    code, out = keyrack("jobs", "list")
    assert code == 0 and str(failing.id) in out and "ValueError: provider" in out
    code, out = keyrack("jobs", "stats", "--json")
    assert json.loads(out)["counts"]["failed"] == 1
    code, out = keyrack("jobs", "stats")
    assert code == 0 and "Recent failures" in out

    assert keyrack("jobs", "retry", str(failing.id))[0] == 0
    eventually(lambda: len(calls) == 4)  # the one more attempt a retry gives
    eventually(lambda: state_of(db, failing.id) is State.FAILED)
    assert keyrack("jobs", "cancel", str(failing.id))[0] == 1  # finished: refused
    assert keyrack("jobs", "retry", "999999")[0] == 1  # no such job
    assert keyrack("jobs", "list", "--state", "stuck")[0] == 2  # bad usage


def test_a_handler_can_snooze_or_give_up(db: Database, workers: list[Worker]) -> None:
    seen: dict[int, int] = {}

    def snooze_once(job: RunningJob) -> None:
        seen[job.id] = seen.get(job.id, 0) + 1
        if seen[job.id] == 1:
            raise Snooze(0.05, "429: Retry-After")

    def hopeless(job: RunningJob) -> None:
        raise Discard("the endpoint was deleted")

    start(workers, db, Handler(KIND, snooze_once), Handler("hopeless", hopeless), poll=0.05)
    snoozing = add(db, max_attempts=1)
    discarded = add(db, "hopeless", max_attempts=5)
    eventually(lambda: state_of(db, snoozing.id) is State.SUCCEEDED)
    eventually(lambda: state_of(db, discarded.id) is State.FAILED)
    assert seen[snoozing.id] == 2 and admin.get_job(db, snoozing.id).attempt == 1
    gave_up = admin.get_job(db, discarded.id)
    assert gave_up.attempt == 1 and gave_up.last_error == "Discard: the endpoint was deleted"


def test_stopping_lets_quick_jobs_finish_and_hands_back_the_rest(
    db: Database, workers: list[Worker]
) -> None:
    stuck_may_end = threading.Event()
    quick_may_end = threading.Event()
    worker = start(
        workers,
        db,
        Handler("stuck", lambda job: stuck_may_end.wait(10) or None),
        Handler("quick", lambda job: quick_may_end.wait(10) or None),
        concurrency=2,
    )
    stuck, quick = add(db, "stuck"), add(db, "quick")
    eventually(lambda: len(worker.running) == 2)
    threading.Timer(0.05, quick_may_end.set).start()
    handed_back = worker.stop(grace=1.5)
    assert handed_back == [stuck.id]
    assert state_of(db, quick.id) is State.SUCCEEDED
    back = admin.get_job(db, stuck.id)
    assert (back.state, back.locked_by, back.lease_expires_at, back.attempt) == (
        State.AVAILABLE,
        None,
        None,
        0,
    )
    stuck_may_end.set()


def test_a_canceled_running_job_is_told_to_stop(db: Database, workers: list[Worker]) -> None:
    stopped = threading.Event()

    def long_export(job: RunningJob) -> None:
        rows = 0
        while not job.should_stop():
            rows += 1
            job.progress(rows_done=rows)
            time.sleep(0.02)
        stopped.set()

    start(workers, db, Handler(KIND, long_export), lease=1.5)
    running = add(db)
    eventually(lambda: (admin.get_job(db, running.id).progress or {}).get("rows_done", 0) > 2)
    with db.transaction() as session:
        admin.cancel(session, running.id, admin.get_job(db, running.id).run_at)
    assert stopped.wait(10)
    assert state_of(db, running.id) is State.CANCELED


def test_two_workers_enqueue_a_periodic_job_once_per_period(
    db: Database, database_url: str, workers: list[Worker]
) -> None:
    other = Database(database_url)
    try:
        schedule = Schedule("tick", KIND, Every(timedelta(seconds=0.5)))
        for database in (db, other):
            start(workers, database, Handler(KIND, lambda job: None), schedules=[schedule])
        time.sleep(1.2)
        eventually(
            lambda: all(j.state is State.SUCCEEDED for j in admin.list_jobs(db, kind=KIND).data)
        )
        for worker in workers:
            worker.stop(grace=1)
        keys = [j.unique_key for j in admin.list_jobs(db, kind=KIND, limit=100).data]
        assert len(keys) >= 2 and len(set(keys)) == len(keys)
    finally:
        other.dispose()


def test_the_worker_reports_pickup_latency_failures_and_queue_depth(
    db: Database, workers: list[Worker]
) -> None:
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    picked_up = sample("keyrack_job_pickup_latency_seconds_count")
    failed = sample("keyrack_job_failures_total", {"kind": "metered", "final": "true"})

    def refuse(job: RunningJob) -> None:
        raise Discard("no")

    start(workers, db, Handler("metered", refuse))
    refused = add(db, "metered")
    eventually(lambda: state_of(db, refused.id) is State.FAILED)
    assert sample("keyrack_job_pickup_latency_seconds_count") == picked_up + 1
    assert sample("keyrack_job_failures_total", {"kind": "metered", "final": "true"}) == failed + 1

    add(db, "nobody.handles.this")
    admin.stats(db, admin.get_job(db, refused.id).created_at)
    assert sample("keyrack_jobs", {"state": "available"}) == 1
    assert sample("keyrack_jobs", {"state": "failed"}) == 1


def test_a_worker_from_settings_prunes_finished_jobs(
    db: Database, workers: list[Worker], settings: Settings
) -> None:
    old = add(db, "record")
    with db.transaction() as session:  # finished long before the retention
        session.execute(
            update(Job)
            .where(Job.id == old.id)
            .values(state="succeeded", finished_at=old.created_at - timedelta(days=30))
        )
    recent = add(db, "nobody.handles.this")
    worker = Worker.from_settings(db, [], settings.model_copy(update={"job_poll_seconds": 0.05}))
    assert worker.concurrency == settings.job_concurrency == 4
    assert worker.lease == timedelta(seconds=settings.job_lease_seconds)
    worker.start()
    workers.append(worker)
    eventually(lambda: admin.list_jobs(db, kind=PRUNE).data != [])
    eventually(lambda: admin.list_jobs(db, kind=PRUNE).data[0].state is State.SUCCEEDED)
    [prune] = admin.list_jobs(db, kind=PRUNE).data
    assert prune.progress == {"deleted": 1}
    assert [j.id for j in admin.list_jobs(db).data] == [prune.id, recent.id]


def test_a_drain_runs_each_due_job_once_in_this_thread_and_says_how_it_ended(
    db: Database, ctx: Context, clock: MutableClock
) -> None:
    threads: set[str] = set()

    def note(job: RunningJob) -> None:
        threads.add(threading.current_thread().name)

    def fail(job: RunningJob) -> None:
        raise ValueError("try later")

    def give_up(job: RunningJob) -> None:
        raise Discard("no use")

    handlers = [Handler("ok", note), Handler("flaky", fail), Handler("hopeless", give_up)]
    now = clock()
    ok, flaky, hopeless = (add(db, kind, now=now) for kind in ("ok", "flaky", "hopeless"))
    later = add(db, "ok", now=now, run_at=now + timedelta(seconds=1))
    export = add(db, "ok", now=now, priority=Priority.BULK)

    outcomes = Worker(ctx, handlers).drain()  # on the test's clock

    ended = {outcome.job.id: outcome.state for outcome in outcomes}
    assert ended == {
        ok.id: State.SUCCEEDED,
        export.id: State.SUCCEEDED,
        flaky.id: State.SCHEDULED,  # once: its retry waits for its backoff
        hopeless.id: State.FAILED,
    }
    assert threads == {threading.current_thread().name}
    assert state_of(db, later.id) is State.SCHEDULED
    drained = Worker(ctx, handlers)
    assert drained.drain() == []
    with pytest.raises(RuntimeError, match="used already"):
        drained.drain()


def test_a_worker_runs_inside_an_asgi_server_from_its_lifespan(db: Database) -> None:
    ran = threading.Event()
    worker = Worker(db, [Handler(KIND, lambda job: ran.set())], poll=QUIET_POLL)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker.start()
        yield
        await asyncio.to_thread(worker.stop)

    with serve_in_thread(Starlette(lifespan=lifespan)):
        added = add(db)
        assert ran.wait(10)
        eventually(lambda: state_of(db, added.id) is State.SUCCEEDED)
    assert worker.stopping and worker.running == []


def test_an_idle_worker_with_a_wake_up_path_up_sends_almost_no_sql_and_still_starts_at_once(
    db: Database, workers: list[Worker]
) -> None:
    if not REDIS_URL:
        pytest.skip(REDIS_SKIP)
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    started = threading.Event()
    # a short poll, which a worker with no wake-up path up keeps to (a look every 0.1 s)
    start(workers, db, Handler(KIND, lambda job: started.set()), poll=0.1, redis_url=REDIS_URL)
    time.sleep(1.0)  # subscribed, looked once more, asleep
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        time.sleep(2.0)
        idle = statements
        added = add(db)
        announced = time.monotonic()
        assert started.wait(10)
        eventually(lambda: state_of(db, added.id) is State.SUCCEEDED)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert idle <= 4  # polling every 0.1 s would have sent about 60
    assert time.monotonic() - announced < LISTENING_POLL
