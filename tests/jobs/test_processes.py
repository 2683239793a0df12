"""Worker processes sharing one database, as a deployment runs them.

Three processes on PostgreSQL: a thousand jobs each run exactly once, a worker
killed with SIGKILL mid-job has its job run again after the lease and not
before, a SIGTERM hands a held job back at once, a periodic job is enqueued
once per period, and an idle worker starts a new job without waiting for its
poll. On SQLite: a separate process beside the in-process worker, woken
through Redis. Each handler run is a row in ``job_runs`` (see worker_process).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from keyrack.domain.jobs import State
from keyrack.jobs import Worker, admin, enqueue, wakeup
from keyrack.storage.database import Database
from keyrack.storage.tables.jobs import Job
from tests.conftest import REDIS_SKIP, REDIS_URL
from tests.jobs import worker_process
from tests.jobs.worker_process import runs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POLL = 30.0
"""The poll interval of every process here: a pickup sooner than this came from a wake-up."""

postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: BinaryIO

    @property
    def pid(self) -> int:
        return self.popen.pid


Spawn = Callable[..., list[Process]]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    runs.drop(database.engine, checkfirst=True)
    runs.create(database.engine)
    yield database
    runs.drop(database.engine, checkfirst=True)
    database.dispose()


@pytest.fixture
def spawn(database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes and wait until each says it is working; all are killed after."""
    started: list[Process] = []

    def start(count: int, *options: str) -> list[Process]:
        batch = []
        for index in range(count):
            log = (tmp_path / f"worker-{len(started) + index}.log").open("ab")
            command = [sys.executable, "-m", "tests.jobs.worker_process", database_url]
            command += ["--poll", str(POLL), *options]
            popen = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
            batch.append(Process(popen, log))
        started.extend(batch)
        for process in batch:
            assert process.popen.stdout is not None
            ready, _, _ = select.select([process.popen.stdout], [], [], 30)
            line = process.popen.stdout.readline() if ready else b""
            assert line == b"ready\n", (tmp_path / "worker-0.log").read_text()
        return batch

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait(10)
        assert process.popen.stdout is not None
        process.popen.stdout.close()
        process.log.close()


def add(db: Database, kind: str, count: int = 1, **options: Any) -> list[int]:
    with db.transaction() as session:
        return [enqueue(session, kind, **options).job.id for _ in range(count)]


def recorded(db: Database) -> list[Any]:
    with db.session() as session:
        return list(session.execute(sql_select(runs).order_by(runs.c.id)))


def count(db: Database, *where: Any) -> int:
    with db.session() as session:
        return int(session.scalar(sql_select(func.count()).select_from(Job).where(*where)) or 0)


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@postgres_only
def test_a_thousand_jobs_run_exactly_once_across_three_workers(db: Database, spawn: Spawn) -> None:
    workers = spawn(3)
    ids = [job_id for _ in range(10) for job_id in add(db, "record", 100)]
    eventually(lambda: count(db, Job.state == State.SUCCEEDED) == 1000)
    rows = recorded(db)
    assert sorted(row.job_id for row in rows) == sorted(ids)  # each once, none twice
    assert {row.attempt for row in rows} == {1}
    assert {row.pid for row in rows} <= {w.pid for w in workers}
    assert len({row.pid for row in rows}) > 1  # shared out, not one worker doing it all


@postgres_only
def test_a_job_whose_worker_was_killed_runs_again_after_its_lease_and_not_before(
    db: Database, spawn: Spawn
) -> None:
    workers = {process.pid: process for process in spawn(3, "--lease", "2")}
    [job_id] = add(db, "hang")
    eventually(lambda: len(recorded(db)) == 1)
    [first] = recorded(db)
    os.kill(first.pid, signal.SIGKILL)
    assert workers[first.pid].popen.wait(10) == -signal.SIGKILL
    lease_end = admin.get_job(db, job_id).lease_expires_at  # set by its last heartbeat
    assert lease_end is not None

    eventually(lambda: admin.get_job(db, job_id).state is State.SUCCEEDED)
    [_, second] = recorded(db)
    assert second.attempt == 2 and second.pid != first.pid
    assert second.started_at >= lease_end
    assert admin.get_job(db, job_id).attempt == 2


@postgres_only
def test_a_terminated_worker_hands_its_job_back_at_once(db: Database, spawn: Spawn) -> None:
    [holder] = spawn(1, "--grace", "0.2")
    [job_id] = add(db, "hold", payload={"seconds": 60})
    eventually(lambda: len(recorded(db)) == 1)
    lease_end = admin.get_job(db, job_id).lease_expires_at
    assert lease_end is not None
    holder.popen.send_signal(signal.SIGTERM)
    assert holder.popen.wait(15) == 0
    back = admin.get_job(db, job_id)
    assert (back.state, back.locked_by, back.attempt) == (State.AVAILABLE, None, 0)

    spawn(1)
    eventually(lambda: len(recorded(db)) == 2)
    second = recorded(db)[1]
    assert second.attempt == 1 and second.started_at < lease_end  # no lease to wait out


@postgres_only
def test_a_periodic_job_is_enqueued_once_per_period_with_three_workers(
    db: Database, spawn: Spawn
) -> None:
    spawn(3, "--tick-every", "0.5")
    time.sleep(2.5)
    with db.session() as session:
        jobs = list(session.scalars(sql_select(Job).where(Job.kind == "tick")))
    periods = [job.unique_key for job in jobs]
    assert len(periods) >= 3 and len(set(periods)) == len(periods)
    eventually(lambda: count(db, Job.kind == "tick", Job.state == State.SUCCEEDED) >= len(jobs))
    ran = [row.job_id for row in recorded(db)]
    assert sorted(set(ran)) == sorted(ran)  # and each period's job ran once


@postgres_only
def test_an_idle_worker_process_starts_a_new_job_without_waiting_for_its_poll(
    db: Database, spawn: Spawn
) -> None:
    spawn(3)
    time.sleep(0.5)  # every worker has looked, found nothing, and sleeps for POLL
    [job_id] = add(db, "record")
    eventually(lambda: len(recorded(db)) == 1)
    job = admin.get_job(db, job_id)
    assert job.started_at is not None
    assert (job.started_at - job.created_at).total_seconds() < POLL


@sqlite_only
def test_on_sqlite_a_worker_process_and_the_in_process_worker_share_the_jobs(
    db: Database, spawn: Spawn
) -> None:
    [other] = spawn(1, "--poll", "0.2")  # no wake-up path reaches it: it polls
    here = Worker(db, worker_process.handlers(db), poll=POLL)
    here.start()
    try:
        ids = [job_id for _ in range(4) for job_id in add(db, "record", 50)]
        eventually(lambda: count(db, Job.state == State.SUCCEEDED) == 200)
    finally:
        here.stop(grace=1)
    rows = recorded(db)
    assert sorted(row.job_id for row in rows) == sorted(ids)
    assert {row.pid for row in rows} == {os.getpid(), other.pid}


@sqlite_only
@pytest.mark.skipif(not REDIS_URL, reason=REDIS_SKIP)
def test_on_sqlite_redis_wakes_a_separate_worker_process(db: Database, spawn: Spawn) -> None:
    assert REDIS_URL
    spawn(1, "--redis", REDIS_URL)
    time.sleep(0.5)  # the worker has looked, found nothing, and sleeps for POLL
    publisher = wakeup.RedisPublisher(REDIS_URL)
    wakeup.add_publisher(db.engine.url, publisher)
    try:
        [job_id] = add(db, "record")
        eventually(lambda: len(recorded(db)) == 1)
    finally:
        wakeup.remove_publisher(db.engine.url, publisher)
        publisher.close()
    job = admin.get_job(db, job_id)
    assert job.started_at is not None
    assert (job.started_at - job.created_at).total_seconds() < POLL
