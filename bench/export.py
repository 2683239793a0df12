"""Bulk export and upload: rows per second of a CSV export of clients, and of a CSV upload
of as many new clients (then of the same file again, every row unchanged), on SQLite and
PostgreSQL.

Against a baseline measured in the same run on the same rows: a bare SQLAlchemy Core
``select`` of the same columns (streamed, ``yield_per``) into Python's ``csv`` writer,
discarding the text. The export does what a real one does besides: the scope filter,
the change-clock watermark, external ids per chunk, the custom-field header pass, and
storing the file in the database in 256 KiB parts with progress. The median of
``ROUNDS`` runs each. The upload's baseline: the same rows read by ``csv.DictReader`` and
inserted by one Core ``executemany``, without validation, matching or outcomes.

PostgreSQL: ``KEYRACK_BENCH_DATABASE_URL``, else ``KEYRACK_TEST_DATABASE_URL``, else the
local default, in a throwaway schema (skipped if unreachable). ``KEYRACK_BENCH_ROWS``
sets the row count (default 100,000).

    .venv/bin/python bench/export.py
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import postgres_schema  # bench/jobs.py: a throwaway schema
from keyrack.config import Settings
from keyrack.domain.exports import PART_SIZE, Format, Resource, Status
from keyrack.domain.ids import ulid
from keyrack.domain.tenancy import Scope
from keyrack.services import exports, imports, jobs, tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.database import Database
from keyrack.storage.migrate import upgrade
from keyrack.storage.tables.base import to_epoch_us
from keyrack.storage.tables.crm import ChangeClock, Client

ROWS = int(os.environ.get("KEYRACK_BENCH_ROWS", "100000"))
ROUNDS = 3
ACTOR = Actor(label="bench")
START_US = to_epoch_us(datetime(2026, 1, 1, tzinfo=UTC))
COLUMNS = (
    Client.ref,
    Client.name,
    Client.status,
    Client.location_id,
    Client.owner_email,
    Client.arr_cents,
    Client.health,
    Client.custom_fields,
    Client.created_at,
    Client.updated_at,
)


def seed(ctx: Context) -> Scope:
    org = tenancy.create_org(ctx, ACTOR, name="Bench", slug="bench")
    with ctx.db.transaction() as session:
        for first in range(0, ROWS, 10_000):
            batch = []
            for i in range(first, min(first + 10_000, ROWS)):
                at = datetime.fromtimestamp((START_US + i) / 1e6, UTC)
                batch.append(
                    {
                        "ref": f"cli_{ulid(i)}",
                        "org_id": org.id,
                        "location_id": None,
                        "name": f"Client {i:06d}, a customer account",
                        "status": "active",
                        "owner_email": f"owner{i}@example.test",
                        "arr_cents": i * 100,
                        "health": i % 101,
                        "custom_fields": {"tier": "gold" if i % 2 else "silver", "seats": i},
                        "created_at": at,
                        "updated_at": at,
                    }
                )
            session.execute(insert(Client), batch)
        session.execute(insert(ChangeClock).values(org_id=org.id, last_us=START_US + ROWS))
    return Scope(org.id)


def baseline(ctx: Context, scope: Scope) -> float:
    """Seconds for a bare Core select of the rows into ``csv.writer``."""
    start = time.perf_counter()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    stmt = (
        select(*COLUMNS)
        .where(Client.org_id == scope.org_id)
        .order_by(Client.updated_at, Client.id)
        .execution_options(stream_results=True, yield_per=1000)
    )
    with ctx.db.engine.connect() as conn:
        for chunk in conn.execute(stmt).partitions():
            writer.writerows(chunk)
            text.seek(0)
            text.truncate()
    return time.perf_counter() - start


def export(ctx: Context, scope: Scope) -> float:
    """Seconds from a queued CSV export to its file stored, run by a worker's drain."""
    view = exports.create_export(ctx, ACTOR, scope, resource=Resource.CLIENTS)
    start = time.perf_counter()
    jobs.worker(ctx).drain()
    elapsed = time.perf_counter() - start
    done = exports.get_export(ctx, scope, view.ref)
    assert done.status is Status.SUCCEEDED and done.rows_done == ROWS, done
    return elapsed


def upload_file() -> bytes:
    """``ROWS`` new clients as CSV, each with an external id (so a second upload matches)."""
    out = io.StringIO()
    out.write("name,status,arr_cents,health,custom.tier,external_ids.legacy\r\n")
    for i in range(ROWS):
        out.write(f'"Upload {i}, Ltd",active,{i},{i % 101},t{i % 3},U{i}\r\n')
    return out.getvalue().encode()


def upload_baseline(ctx: Context, scope: Scope, body: bytes) -> float:
    """Seconds for the file read by ``csv.DictReader`` into one Core executemany (rolled back)."""
    start = time.perf_counter()
    rows = [
        {
            "ref": f"cli_{ulid(10_000_000 + i)}",
            "org_id": scope.org_id,
            "name": raw["name"],
            "status": raw["status"],
            "arr_cents": int(raw["arr_cents"]),
            "health": int(raw["health"]),
            "custom_fields": {"tier": raw["custom.tier"]},
            "created_at": datetime.now(UTC),
            "updated_at": datetime.now(UTC),
        }
        for i, raw in enumerate(csv.DictReader(io.StringIO(body.decode(), newline="")))
    ]
    with ctx.db.engine.connect() as conn:
        conn.execute(insert(Client), rows)
        elapsed = time.perf_counter() - start
        conn.rollback()
    return elapsed


def upload(ctx: Context, scope: Scope, body: bytes) -> tuple[float, imports.ImportView]:
    """Seconds from the stored file to its job done (the upload's transfer not counted)."""
    import_id = imports.begin_upload(
        ctx, ACTOR, scope, resource=Resource.CLIENTS, format=Format.CSV
    )
    for seq, at in enumerate(range(0, len(body), PART_SIZE)):
        imports.add_part(ctx, import_id, seq, body[at : at + PART_SIZE])
    view = imports.finish_upload(ctx, ACTOR, import_id)
    start = time.perf_counter()
    jobs.worker(ctx).drain()
    elapsed = time.perf_counter() - start
    done = imports.get_import(ctx, scope, view.ref)
    assert done.status.value == "succeeded" and done.rows_done == ROWS, done
    return elapsed, done


def report(name: str, url: str) -> None:
    settings = Settings(
        database_url=url,
        secret_key="bench-0123456789abcdefghijklmnopqrstuvwxyz",
        environment="test",
    )
    ctx = Context(settings=settings, db=Database(url))
    try:
        scope = seed(ctx)
        base = statistics.median(baseline(ctx, scope) for _ in range(ROUNDS))
        ours = statistics.median(export(ctx, scope) for _ in range(ROUNDS))
        body = upload_file()
        bare = statistics.median(upload_baseline(ctx, scope, body) for _ in range(ROUNDS))
        first, made = upload(ctx, scope, body)
        again, same = upload(ctx, scope, body)
        assert (made.created, same.unchanged) == (ROWS, ROWS), (made, same)
    finally:
        ctx.db.dispose()
    print(f"{name}, {ROWS:,} clients, CSV:")
    print(f"  baseline (Core select -> csv.writer): {ROWS / base:,.0f} rows/s")
    print(f"  export job (file stored in parts):    {ROWS / ours:,.0f} rows/s")
    print(f"  ratio: the export takes {ours / base:.2f} x the baseline's time")
    print(f"{name}, {ROWS:,} clients uploaded, CSV:")
    print(f"  baseline (csv.DictReader -> Core executemany): {ROWS / bare:,.0f} rows/s")
    print(f"  upload job, every row created:   {ROWS / first:,.0f} rows/s")
    print(f"  upload job, every row unchanged: {ROWS / again:,.0f} rows/s")
    print(f"  ratio: the first upload takes {first / bare:.2f} x the baseline's time")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        report("SQLite", url)
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
        report("PostgreSQL", scoped)


if __name__ == "__main__":
    main()
