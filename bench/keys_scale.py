"""Scale with the number of keys: PostgreSQL + Redis, a paced load of 400 req/s
spread over 20, 2,000 and 20,000 keys.

    .venv/bin/python bench/keys_scale.py [--rate 400] [--seconds 30] [--rounds 3]
                                         [--keys 20,2000,20000]

For each key count: a fresh PostgreSQL database (``KEYRACK_BENCH_DATABASE_URL``'s
server, else ``KEYRACK_TEST_DATABASE_URL``'s, else postgresql://postgres@127.0.0.1:5432;
``keyrack_bench_scale_<count>`` is dropped and created), a private ``redis-server`` (so
no other server's invalidations or buckets reach it) and one ``keyrack serve``, every
server pinned to CPU 0 when ``taskset`` exists. All of them run at once. Each is warmed
up (every key once, then a few seconds at the paced rate) and its idle statements
counted; then the measured load goes to each in turn, ``--rounds`` times, a
``--seconds``/``--rounds`` segment at a time, so the machine's drift falls on every
count alike. The load is open-loop at ``--rate`` requests per second of ``GET
/api/v2/keys/self``, round robin over the keys (each with limits out of the way),
latency counted from each request's scheduled time. Prints, per key count over its
segments: the achieved rate, p50/p99, the server's CPU per request, SQL statements per
request (the server's own count, ``keyrack_db_statements_total`` on ``/metrics``, in
total and beyond what the same server sends idle: its job worker's polls), key cache
misses per request, and PostgreSQL's transactions and rows per request
(``pg_stat_database`` deltas); then the largest count against the smallest, with the
ratio of each round. Target: within 10 % on throughput and CPU per request, under 0.01
statements per request in all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import insert

from keyrack.config import Settings
from keyrack.domain.keys import Environment, generate
from keyrack.services import tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.migrate import upgrade
from keyrack.storage.tables.keys import ApiKey, KeySecret

SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
DATABASE = "keyrack_bench_scale"
"""Databases are this and the key count."""
CONNECTIONS = 64


@dataclass
class Run:
    keys: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float
    xacts: float
    statements: float
    """SQL statements per request, all of the server's (the job worker's polls included)."""
    net_statements: float
    """Per request, less what the same server sends idle (its job worker's polls)."""
    misses: float
    rows_read: float
    rows_written: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_base() -> str:
    url = (
        os.environ.get("KEYRACK_BENCH_DATABASE_URL")
        or os.environ.get("KEYRACK_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    return url.rsplit("/", 1)[0]


def fresh_database(base: str, name: str) -> str:
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def seed(url: str, count: int) -> list[str]:
    """An organization and ``count`` keys (bulk-inserted, limits out of the way)."""
    ctx = Context.from_settings(Settings(database_url=url, secret_key=SECRET_KEY))
    org = tenancy.create_org(ctx, Actor(label="bench", is_staff=True), name="Bench", slug="bench")
    now = datetime.now(UTC)
    made = [generate(Environment.PRODUCTION) for _ in range(count)]
    with ctx.db.transaction() as session:
        ids = session.scalars(
            insert(ApiKey).returning(ApiKey.id),
            [
                {
                    "ref": f"key_bench{i:021d}",
                    "org_id": org.id,
                    "name": f"integration {i}",
                    "environment": Environment.PRODUCTION.value,
                    "prefix": m.secret[:8],
                    "last4": m.last4,
                    "permissions": [],
                    "rate_per_second": 1000,
                    "concurrency": 100,
                    "allowed_cidrs": [],
                    "status": "active",
                    "created_at": now,
                    "created_by_label": "bench",
                }
                for i, m in enumerate(made)
            ],
        ).all()
        session.execute(
            insert(KeySecret),
            [
                {"key_id": key_id, "digest": m.digest, "last4": m.last4, "created_at": now}
                for key_id, m in zip(ids, made, strict=True)
            ],
        )
    ctx.db.dispose()
    return [m.secret for m in made]


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from keyrack.cli import main; main()"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def pg_counters(base: str, name: str) -> tuple[int, int, int]:
    """(transactions, rows read, rows written) of database ``name`` so far."""
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched,"
            " tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


_LENGTH = re.compile(rb"(?i)content-length: (\d+)")
_COUNTER = re.compile(r"^(keyrack_db_statements_total|keyrack_key_cache_misses_total) (\S+)$", re.M)


def server_counters(port: int) -> dict[str, float]:
    """The server's own counts: SQL statements sent and key cache misses."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {name: float(value) for name, value in _COUNTER.findall(text)}


class Load:
    """Open-loop paced requests over a pool of keep-alive connections."""

    def __init__(self, port: int, secrets: list[str]) -> None:
        self.port = port
        self.requests = [
            (
                f"GET /api/v2/keys/self HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {s}\r\n\r\n"
            ).encode()
            for s in secrets
        ]
        self.latencies: list[float] = []
        self.errors = 0
        self.next = 0

    async def run(self, rate: float, seconds: float) -> float:
        """Send ``rate * seconds`` requests on schedule; returns the elapsed time."""
        queue: asyncio.Queue[float] = asyncio.Queue()
        total = int(rate * seconds)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(CONNECTIONS)]
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(due)
        await queue.join()
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return elapsed

    async def _worker(self, queue: asyncio.Queue[float]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while True:
                due = await queue.get()
                request = self.requests[self.next % len(self.requests)]
                self.next += 1
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    found = _LENGTH.search(head)
                    await reader.readexactly(int(found.group(1)) if found else 0)
                    if not head.startswith(b"HTTP/1.1 200"):
                        self.errors += 1
                    self.latencies.append(time.perf_counter() - due)
                finally:
                    queue.task_done()
        finally:
            writer.close()


class Served:
    """One key count's database, Redis and server, warmed up, and its segments so far."""

    def __init__(self, count: int, rate: float, base: str, tmp: str) -> None:
        self.count = count
        self.base = base
        self.database = f"{DATABASE}_{count}"
        url = fresh_database(base, self.database)
        upgrade(url)
        self.secrets = seed(url, count)
        self.redis, redis_url = start_redis(tmp)
        env = {
            **os.environ,
            "KEYRACK_DATABASE_URL": url,
            "KEYRACK_SECRET_KEY": SECRET_KEY,
            "KEYRACK_REDIS_URL": redis_url,
            "KEYRACK_LOG_LEVEL": "INFO",
        }
        self.port = free_port()
        self.server = start_server(env, self.port)
        self.segments: list[Run] = []
        self.next_key = count // 2
        # warm-up: every key once (misses), then a few seconds at the paced rate
        load = Load(self.port, self.secrets)
        asyncio.run(load.run(min(1000.0, max(rate, count / 20)), max(1.0, count / 1000)))
        asyncio.run(Load(self.port, self.secrets).run(rate, 5))

    def count_idle(self, seconds: float = 10) -> None:
        """What the server sends without requests (its job worker's polls), per second."""
        before = server_counters(self.port)["keyrack_db_statements_total"]
        time.sleep(seconds)
        after = server_counters(self.port)["keyrack_db_statements_total"]
        self.idle_rate = (after - before) / seconds

    def segment(self, rate: float, seconds: float) -> Run:
        """Load the server for ``seconds``; the figures of that segment."""
        before_pg = pg_counters(self.base, self.database)
        before = server_counters(self.port)
        before_cpu = cpu_seconds(self.server.pid)
        load = Load(self.port, self.secrets)
        load.next = self.next_key
        elapsed = asyncio.run(load.run(rate, seconds))
        cpu = cpu_seconds(self.server.pid) - before_cpu
        after = server_counters(self.port)
        self.next_key = load.next
        time.sleep(1.5)  # PostgreSQL's statistics are reported behind
        after_pg = pg_counters(self.base, self.database)
        done = len(load.latencies)
        latencies = sorted(load.latencies)
        xacts, read, written = (a - b for a, b in zip(after_pg, before_pg, strict=True))
        statements = after["keyrack_db_statements_total"] - before["keyrack_db_statements_total"]
        misses = after["keyrack_key_cache_misses_total"] - before["keyrack_key_cache_misses_total"]
        run = Run(
            keys=self.count,
            rate=done / elapsed,
            p50_ms=latencies[done // 2] * 1000,
            p99_ms=latencies[int(done * 0.99)] * 1000,
            errors=load.errors,
            cpu_us=cpu / done * 1e6,
            xacts=xacts / done,
            statements=statements / done,
            net_statements=max(0.0, statements - self.idle_rate * elapsed) / done,
            misses=misses / done,
            rows_read=read / done,
            rows_written=written / done,
        )
        self.segments.append(run)
        return run

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=30)
        self.redis.terminate()
        self.redis.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--seconds", type=float, default=30, help="per key count, in all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", default="20,2000,20000")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.keys.split(",")})
    base = server_base()
    print(
        f"paced {args.rate:.0f} req/s for {args.seconds:.0f} s per key count in {args.rounds} "
        f"rounds, GET /api/v2/keys/self; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    served: list[Served] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for count in counts:
                served.append(Served(count, args.rate, base, tmp))
            for each in served:
                each.count_idle()
            for _ in range(args.rounds):
                for each in served:
                    each.segment(args.rate, args.seconds / args.rounds)
        finally:
            for each in served:
                each.stop()
    runs = {each.count: mean_run(each.segments) for each in served}
    for run in runs.values():
        print(
            f"{run.keys:>7,} keys: {run.rate:6.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
            f"p99 {run.p99_ms:7.2f} ms  server CPU {run.cpu_us:6.0f} µs/req  "
            f"SQL {run.statements:.4f}/req ({run.net_statements:.4f} beyond idle)  "
            f"cache misses {run.misses:.4f}/req  PostgreSQL {run.xacts:.4f} xact, "
            f"{run.rows_read:.2f} rows read, {run.rows_written:.3f} written /req  "
            f"non-200 {run.errors}"
        )
    first, last = runs[counts[0]], runs[counts[-1]]
    rounds = " ".join(
        f"{b.cpu_us / a.cpu_us:.2f}"
        for a, b in zip(served[0].segments, served[-1].segments, strict=True)
    )
    print(
        f"\n{last.keys:,} vs {first.keys:,} keys: throughput ratio "
        f"{last.rate / first.rate:.2f}, CPU per request ratio {last.cpu_us / first.cpu_us:.2f} "
        f"(each round: {rounds}), {last.statements:.4f} statements per request in all, "
        f"{last.net_statements:.4f} beyond idle (target < 0.01)"
    )
    ok = (
        last.rate >= 0.9 * first.rate
        and last.cpu_us <= 1.1 * first.cpu_us
        and last.statements < 0.01
    )
    return 0 if ok else 1


def mean_run(segments: list[Run]) -> Run:
    """A count's segments as one: the mean of each figure, the non-200 answers summed."""
    figures = {
        name: sum(getattr(run, name) for run in segments) / len(segments)
        for name in Run.__dataclass_fields__
        if name not in ("keys", "errors")
    }
    return Run(keys=segments[0].keys, errors=sum(run.errors for run in segments), **figures)


if __name__ == "__main__":
    raise SystemExit(main())
