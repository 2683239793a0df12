"""Console page render time at 1,000 keys and, on Settings → Integrations, 1,000 runs and
100,000 run records, against the /healthz baseline.

    .venv/bin/python bench/console.py [--database-url URL] [--rounds 200]

Seeds a fresh SQLite database (or the PostgreSQL URL given, into a throwaway schema)
with one organization holding 1,000 keys, 1,000 audit events and a HubSpot connection
with 1,000 runs and 100,000 run records (10,090 in its newest run), serves the real app
with uvicorn on a loopback socket in this process, signs in as an admin, and times
keep-alive GETs. Prints median and p95 milliseconds per page and the ratio to
``GET /healthz``. Target: every page under 200 ms.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from sqlalchemy import create_engine, insert, select, text

from keyrack.config import Settings
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Role
from keyrack.server import create_app
from keyrack.services import tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.database import Database, normalize_url
from keyrack.storage.migrate import upgrade
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.integrations import Integration, SyncRun, SyncRunRecord
from keyrack.storage.tables.keys import ApiKey

SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
PASSWORD = "bench-password-123456"
TARGET_MS = 200.0
KEYS = 1000
RUNS = 1000
RUN_RECORDS = 100_000
PER_RUN = 90
"""Records in each run but the newest, which holds the rest (10,090)."""


@contextmanager
def served(ctx: Context) -> Iterator[str]:
    config = uvicorn.Config(create_app(ctx=ctx), host="127.0.0.1", port=0, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def seed(ctx: Context) -> None:
    actor = Actor(label="bench", is_staff=True)
    org = tenancy.create_org(ctx, actor, name="Bench", slug="bench")
    tenancy.create_user(
        ctx, actor, org_slug="bench", email="admin@bench.test", role=Role.ADMIN, password=PASSWORD
    )
    now = ctx.clock()
    with ctx.db.transaction() as session:
        session.execute(
            insert(ApiKey),
            [
                {
                    "ref": new_ref("key"),
                    "org_id": org.id,
                    "name": f"Integration {i}",
                    "environment": "sandbox",
                    "prefix": "kr_test_",
                    "last4": f"{i:04d}",
                    "permissions": ["clients:read", "contacts:read"],
                    "allowed_cidrs": [],
                    "status": "active",
                    "created_at": now,
                    "created_by_label": "bench",
                    "inactivity_days": 90,
                }
                for i in range(KEYS)
            ],
        )
        session.execute(
            insert(AuditEvent),
            [
                {
                    "occurred_at": now,
                    "org_id": org.id,
                    "actor_label": "bench",
                    "action": "key.created",
                    "target_type": "key",
                    "target_ref": f"key_{i}",
                    "after": {"name": f"Integration {i}"},
                }
                for i in range(KEYS)
            ],
        )


def seed_integration(ctx: Context, org_id: int) -> tuple[str, str]:
    """A connection with ``RUNS`` runs and ``RUN_RECORDS`` records; its ref and its newest
    run's."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = Integration(
            ref=new_ref("int"),
            org_id=org_id,
            provider="hubspot",
            name="Bench HubSpot",
            status="active",
            connected_by="bench",
            created_at=now,
        )
        session.add(row)
        session.flush()
        counts = {"clients": {"inbound": {"synced": 80, "skipped": 6, "failed": 4}}}
        session.execute(
            insert(SyncRun),
            [
                {
                    "ref": new_ref("run"),
                    "integration_id": row.id,
                    "status": "partial",
                    "trigger": "schedule",
                    "requested_by": "schedule",
                    "counts": counts,
                    "api_calls": 4,
                    "rate_limit_wait_seconds": 0.0,
                    "watermark_before": {},
                    "watermark_after": {},
                    "done": {},
                    "created_at": now,
                }
                for _ in range(RUNS)
            ],
        )
        run_ids = list(
            session.scalars(
                select(SyncRun.id).where(SyncRun.integration_id == row.id).order_by(SyncRun.id)
            )
        )
        newest = session.get(SyncRun, run_ids[-1])
        assert newest is not None
        refs = (row.ref, newest.ref)
    sizes = [PER_RUN] * (RUNS - 1) + [RUN_RECORDS - PER_RUN * (RUNS - 1)]
    batch: list[dict[str, object]] = []
    for run_id, size in zip(run_ids, sizes, strict=True):
        for n in range(size):
            outcome = ("synced", "synced", "skipped", "failed")[n % 4]
            batch.append(
                {
                    "run_id": run_id,
                    "record_type": "clients",
                    "direction": "inbound",
                    "local_id": f"cli_{run_id:04d}{n:05d}",
                    "remote_id": str(run_id * 100_000 + n),
                    "name": f"Company {run_id}-{n}",
                    "outcome": outcome,
                    "result": "updated" if outcome == "synced" else None,
                    "error_message": "Property values were not valid"
                    if outcome == "failed"
                    else None,
                    "http_status": 400 if outcome == "failed" else None,
                    "created_at": now,
                }
            )
            if len(batch) == 5000:
                with ctx.db.transaction() as session:
                    session.execute(insert(SyncRunRecord), batch)
                batch = []
    if batch:
        with ctx.db.transaction() as session:
            session.execute(insert(SyncRunRecord), batch)
    return refs


def timed(client: httpx.Client, url: str, rounds: int) -> list[float]:
    for _ in range(5):
        client.get(url).raise_for_status()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return samples


def run(url: str, rounds: int) -> int:
    ctx = Context(
        settings=Settings(database_url=url, secret_key=SECRET_KEY, environment="test"),
        db=Database(url),
    )
    seed(ctx)
    org = tenancy.get_org(ctx, "bench")
    integration, newest = seed_integration(ctx, org.id)
    failed = 0
    with served(ctx) as base, httpx.Client(base_url=base) as client:
        login = client.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None
        client.post(
            "/console/login",
            data={"email": "admin@bench.test", "password": PASSWORD, "csrf_token": token.group(1)},
        )
        first = client.get("/console/settings/api").text
        cursor = re.search(r'rel="next" href="([^"]+)"', first)
        ref = re.search(r"key_[0-9A-Z]{26}", first)
        assert cursor is not None and ref is not None
        pages = {
            "GET /healthz (baseline)": "/healthz",
            "Settings → API, page 1 of 20": "/console/settings/api",
            "Settings → API, page 2 (cursor)": cursor.group(1).replace("&amp;", "&"),
            "key detail": f"/console/settings/api/keys/{ref.group(0)}",
            "Team": "/console/settings/team",
            "Audit log (1,000 events)": "/console/audit",
        }
        base_path = f"/console/settings/integrations/{integration}"
        run_path = f"{base_path}/runs/{newest}"
        records = client.get(run_path).text
        next_records = re.search(r'rel="next" href="([^"]+)"', records)
        assert next_records is not None
        needle = newest_record_name(records)
        pages |= {
            "Integrations list": "/console/settings/integrations",
            "connection (1,000 runs, chart)": base_path,
            "sync settings + history": f"{base_path}/syncs/clients/inbound",
            "run records (10,090), page 1": run_path,
            "run records, page 2 (cursor)": next_records.group(1).replace("&amp;", "&"),
            "run records, outcome=failed": f"{run_path}?outcome=failed",
            "run records, q=name": f"{run_path}?q={needle.replace(' ', '+')}",
            "run records, q=remote id": f"{run_path}?q={remote_id(records)}",
        }
        baseline = 0.0
        print(
            f"{ctx.db.dialect}, {KEYS} keys, {RUNS} runs, {RUN_RECORDS} run records, "
            f"{rounds} rounds; median / p95 ms, ratio to /healthz"
        )
        for label, path in pages.items():
            samples = timed(client, path, rounds)
            median = statistics.median(samples)
            p95 = statistics.quantiles(samples, n=20)[-1]
            baseline = baseline or median
            verdict = (
                ""
                if label.startswith("GET /healthz")
                else ("ok" if p95 < TARGET_MS else f"OVER {TARGET_MS:.0f} ms")
            )
            failed += verdict.startswith("OVER")
            print(
                f"  {label:36s} {median:7.2f} / {p95:7.2f}   x{median / baseline:5.1f}  {verdict}"
            )
    ctx.db.dispose()
    return failed


def newest_record_name(page: str) -> str:
    found = re.search(r'<th scope="row">(Company [0-9-]+)<br>', page)
    assert found is not None
    return found.group(1)


def remote_id(page: str) -> str:
    found = re.search(r"remote <code>([0-9]+)</code>", page)
    assert found is not None
    return found.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if args.database_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            return run(url, args.rounds)
    schema = f"kr_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize_url(args.database_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{sep}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        return run(url, args.rounds)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
