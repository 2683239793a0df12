"""The job queue: pickup latency and jobs per second per worker, on SQLite and PostgreSQL.

Against a baseline measured in the same run on the same engine: an empty
``SELECT 1`` round trip (pool checkout, statement, result). Pickup is the time
from the enqueuing commit to the handler starting, with the worker idle and its
poll set to 30 s, so it measures the wake-up path (in-process on SQLite,
LISTEN/NOTIFY on PostgreSQL). Throughput is one worker (4 threads) draining
2,000 no-op jobs; a job costs a claim and a finish, each its own transaction.

PostgreSQL: ``KEYRACK_BENCH_DATABASE_URL``, else ``KEYRACK_TEST_DATABASE_URL``,
else the local default, in a throwaway schema (skipped if unreachable).

    .venv/bin/python bench/jobs.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from keyrack.jobs import Handler, RunningJob, Worker, enqueue, wakeup
from keyrack.storage.database import Database, normalize_url
from keyrack.storage.migrate import upgrade

PICKUPS = 300
JOBS = 2000
ROUNDS = 3
CONCURRENCY = 4


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def select_one(db: Database, n: int = 1000) -> float:
    """Median seconds of one ``SELECT 1`` round trip."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def pickups(db: Database, enqueuer: Database, redis_url: str | None = None) -> list[float]:
    """Seconds from each enqueue's commit (through ``enqueuer``) to its handler starting.

    An ``enqueuer`` on another URL than the worker's is not in-process to it: only
    NOTIFY (PostgreSQL) or Redis reaches the worker, as from another process.
    """
    began: dict[int, float] = {}
    seen = threading.Event()

    def run(job: RunningJob) -> None:
        began[job.id] = time.perf_counter()
        seen.set()

    worker = Worker(
        db, [Handler("bench.pickup", run)], concurrency=CONCURRENCY, poll=30.0, redis_url=redis_url
    )
    worker.start()
    publisher = wakeup.RedisPublisher(redis_url) if redis_url else None
    if publisher is not None:
        wakeup.add_publisher(enqueuer.engine.url, publisher)
    samples = []
    try:
        time.sleep(0.2)
        for _ in range(PICKUPS):
            seen.clear()
            with enqueuer.transaction() as session:
                job_id = enqueue(session, "bench.pickup").job.id
            committed = time.perf_counter()
            if not seen.wait(10):
                raise RuntimeError("a job was not picked up within 10 s")
            samples.append(began[job_id] - committed)
            time.sleep(0.005)  # let the worker go idle again
    finally:
        worker.stop(grace=1)
        if publisher is not None:
            wakeup.remove_publisher(enqueuer.engine.url, publisher)
            publisher.close()
    return samples


class Countdown:
    """A handler that sets ``done`` once it has run ``n`` jobs."""

    def __init__(self, n: int) -> None:
        self.left, self.lock, self.done = n, threading.Lock(), threading.Event()

    def __call__(self, job: RunningJob) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.done.set()


def throughput(db: Database) -> float:
    """Jobs per second one worker drains, best of ROUNDS."""
    best = 0.0
    for _ in range(ROUNDS):
        countdown = Countdown(JOBS)
        with db.transaction() as session:
            for _ in range(JOBS):
                enqueue(session, "bench.noop")
        worker = Worker(db, [Handler("bench.noop", countdown)], concurrency=CONCURRENCY, poll=30.0)
        start = time.perf_counter()
        worker.start()
        try:
            if not countdown.done.wait(300):
                raise RuntimeError("jobs were not drained within 300 s")
            best = max(best, JOBS / (time.perf_counter() - start))
        finally:
            worker.stop(grace=1)
    return best


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def report(name: str, db: Database, paths: dict[str, tuple[Database, str | None]]) -> None:
    """Print the baseline, pickup over each wake-up path, and throughput, as ratios."""
    base = select_one(db)
    print(f"{name}: SELECT 1 round trip {base * 1e6:.0f} µs")
    for path, (enqueuer, redis_url) in paths.items():
        picked = pickups(db, enqueuer, redis_url)
        p50, p99 = percentile(picked, 0.5), percentile(picked, 0.99)
        print(
            f"  pickup after commit, {path}: p50 {ms(p50)}  p99 {ms(p99)}"
            f"  (p50 = {p50 / base:.1f} x SELECT 1)"
        )
    rate = throughput(db)
    print(
        f"  one worker, {CONCURRENCY} threads: {rate:.0f} jobs/s"
        f"  ({ms(1 / rate)} per job = {1 / rate / base:.1f} x SELECT 1)"
    )


@contextmanager
def databases(*urls: str) -> Iterator[list[Database]]:
    opened = [Database(url) for url in urls]
    try:
        yield opened
    finally:
        for db in opened:
            db.dispose()


def with_query(url: str, query: str) -> str:
    """The same database under another URL (so another key for in-process wake-ups)."""
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    admin = create_engine(normalize_url(url))
    schema = f"kr_bench_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_query(url, f"options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def reachable_redis() -> str | None:
    url = os.environ.get("KEYRACK_BENCH_REDIS_URL") or os.environ.get("KEYRACK_TEST_REDIS_URL")
    url = url or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url


def main() -> None:
    redis_url = reachable_redis()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        with databases(url, with_query(url, "timeout=5")) as (db, elsewhere):
            paths: dict[str, tuple[Database, str | None]] = {"in-process": (db, None)}
            if redis_url:
                paths["Redis (as from another process)"] = (elsewhere, redis_url)
            report("SQLite", db, paths)
    pg = (
        os.environ.get("KEYRACK_BENCH_DATABASE_URL")
        or os.environ.get("KEYRACK_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )
    if not Database(pg).ping():
        print(f"PostgreSQL: skipped ({pg.split('@')[-1]} unreachable)")
        return
    with postgres_schema(pg) as scoped:
        upgrade(scoped)
        other = with_query(scoped, "application_name=keyrack-bench-enqueuer")
        with databases(scoped, other) as (db, elsewhere):
            paths = {
                "in-process": (db, None),
                "LISTEN/NOTIFY (as from another process)": (elsewhere, None),
            }
            report("PostgreSQL", db, paths)


if __name__ == "__main__":
    main()
