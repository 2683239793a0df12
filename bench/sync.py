"""Sync throughput and memory: Keyrack → the HubSpot fake through the engine, against a
plain httpx loop POSTing the same records in the same batches, in the same run.

    .venv/bin/python bench/sync.py [--sizes 10000,100000]

The HubSpot fake (tests/fakes/hubspot.py, HubSpot's wire protocol, its limits lifted)
runs in a child process on a loopback socket, so this process holds the engine alone.
For each size, a fresh SQLite database gets that many clients; then

* baseline: a plain loop reads them 100 at a time and POSTs each batch to
  ``/crm/v3/objects/companies/batch/upsert`` (what a hand-written sync does);
* engine: one outbound run through ``integration.run`` (probe, filters, mappings, the
  connector's read-back so unchanged records are not written again, one outcome row per
  record, the checkpoint after each batch, the write-back of the remote ids);

and prints records per second for each, their ratio, and the engine's peak Python
memory (``tracemalloc``, in a second run of the same size) — flat across sizes when it
streams.

Then a Keyrack → Keyrack row (``--keyrack-records``, 1000 by default; 0 leaves it out):
two far Keyracks on their own SQLite databases and loopback sockets (threads of this
process), keys at 10,000 requests/s, and

* baseline: the SDK (``keyrack.Client``) POSTs each near client to the first, with its
  external id (what a hand-written sync does);
* engine: one outbound run of a ``keyrack`` connection to the second (the connector
  reads each record back by external id before it writes, so a rerun writes nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyrack.config import Settings  # noqa: E402
from keyrack.domain.ids import new_ref  # noqa: E402
from keyrack.domain.tenancy import Scope  # noqa: E402
from keyrack.services import jobs, tenancy  # noqa: E402
from keyrack.services.context import Actor, Context  # noqa: E402
from keyrack.services.crm import records  # noqa: E402
from keyrack.services.integrations import connections, runs, syncs  # noqa: E402
from keyrack.storage.database import Database  # noqa: E402
from keyrack.storage.migrate import upgrade  # noqa: E402
from keyrack.storage.tables.crm import Client  # noqa: E402

SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
BATCH = 100
SEED_CHUNK = 5_000
KEYRACK_RATE = 10_000
ACTOR = Actor(label="bench")


def serve_fake() -> None:
    """The child: the HubSpot fake on a free port; prints its URL and a token, then serves."""
    from tests.fakes.base import serve
    from tests.fakes.hubspot import HubSpotFake

    fake = HubSpotFake(rate_limit=(10**9, 10.0), search_rate_limit=(10**9, 1.0))
    fake.add_property("companies", "keyrack_id", unique=True)
    token = fake.private_app_token()
    with serve(fake.app) as url:
        fake.base_url = url
        print(json.dumps({"url": url, "token": token}), flush=True)
        sys.stdin.read()  # until the parent closes it


@contextmanager
def fake_hubspot() -> Iterator[tuple[str, str]]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert child.stdout is not None
        started = json.loads(child.stdout.readline())
        yield started["url"], started["token"]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


def seeded_context(folder: Path, count: int) -> tuple[Context, int]:
    url = f"sqlite:///{folder / f'bench-{count}-{time.monotonic_ns()}.db'}"
    upgrade(url)
    settings = Settings(
        database_url=url,
        secret_key=SECRET_KEY,
        environment="test",
        redis_url=None,
        smtp_url=None,
        webhook_allow_private_targets=True,
    )
    ctx = Context(settings=settings, db=Database(url))
    org = tenancy.create_org(ctx, ACTOR, name="Bench", slug="bench")
    for start in range(0, count, SEED_CHUNK):
        with ctx.db.transaction() as session:
            at = records.stamp(session, org.id, ctx.clock())
            session.add_all(
                Client(
                    ref=new_ref("cli"),
                    org_id=org.id,
                    name=f"Client {n}",
                    status="active",
                    arr_cents=100 * n,
                    custom_fields={},
                    created_at=at,
                    updated_at=at,
                )
                for n in range(start, min(count, start + SEED_CHUNK))
            )
    return ctx, org.id


def baseline(ctx: Context, org_id: int, url: str, token: str) -> float:
    """Records per second of a plain loop: read 100, POST them, until done."""
    sent, last = 0, 0
    start = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            with ctx.db.session() as session:
                rows = session.execute(
                    select(Client.id, Client.ref, Client.name, Client.arr_cents)
                    .where(Client.org_id == org_id, Client.id > last)
                    .order_by(Client.id)
                    .limit(BATCH)
                ).all()
            if not rows:
                break
            last = rows[-1].id
            inputs = [
                {
                    "idProperty": "keyrack_id",
                    "id": f"base-{row.ref}",
                    "properties": {"name": row.name, "annualrevenue": str(row.arr_cents / 100)},
                }
                for row in rows
            ]
            answer = http.post("/crm/v3/objects/companies/batch/upsert", json={"inputs": inputs})
            answer.raise_for_status()
            sent += len(rows)
    return sent / (time.perf_counter() - start)


def engine_run(ctx: Context, org_id: int, url: str, token: str) -> tuple[float, runs.RunView]:
    scope = Scope(org_id)
    ref = connections.create(
        ctx,
        ACTOR,
        scope,
        provider="hubspot",
        name=f"bench {time.monotonic_ns()}",
        base_url=url,
        credential={"api_key": token},
    ).id
    syncs.put_sync(ctx, ACTOR, scope, ref, "clients", "outbound", enabled=True)
    run = runs.request_run(ctx, ACTOR, scope, ref)
    start = time.perf_counter()
    jobs.worker(ctx).drain()
    elapsed = time.perf_counter() - start
    done = runs.get_run(ctx, scope, ref, run.id)
    if done.status != "succeeded":
        raise RuntimeError(f"the run ended {done.status}: {done.error}")
    synced = done.counts["clients"]["outbound"]["synced"]
    return synced / elapsed, done


def keyrack_row(folder: Path, count: int) -> None:
    """The Keyrack → Keyrack row: the SDK loop against the engine, in the same run."""
    from bench.sync_connectors import keyrack

    from keyrack.client import Client as Sdk

    ctx, org_id = seeded_context(folder, count)
    with (
        keyrack(folder, "plain", KEYRACK_RATE) as (_, _, plain_url, plain_key),
        keyrack(folder, "target", KEYRACK_RATE) as (far, far_org, far_url, far_key),
    ):
        sent, last = 0, 0
        start = time.perf_counter()
        with Sdk(plain_key, plain_url, rate_per_second=KEYRACK_RATE) as writer:
            while True:
                with ctx.db.session() as session:
                    rows = session.execute(
                        select(Client.id, Client.ref, Client.name, Client.arr_cents)
                        .where(Client.org_id == org_id, Client.id > last)
                        .order_by(Client.id)
                        .limit(BATCH)
                    ).all()
                if not rows:
                    break
                last = rows[-1].id
                for row in rows:
                    writer.clients.create(
                        name=row.name, arr_cents=row.arr_cents, external_ids={"keyrack": row.ref}
                    )
                    sent += 1
        plain = sent / (time.perf_counter() - start)

        scope = Scope(org_id)
        ref = connections.create(
            ctx,
            ACTOR,
            scope,
            provider="keyrack",
            name="bench keyrack",
            base_url=far_url,
            credential={"api_key": far_key},
        ).id
        syncs.put_sync(ctx, ACTOR, scope, ref, "clients", "outbound", enabled=True)
        run = runs.request_run(ctx, ACTOR, scope, ref)
        start = time.perf_counter()
        jobs.worker(ctx).drain()
        elapsed = time.perf_counter() - start
        done = runs.get_run(ctx, scope, ref, run.id)
        if done.status != "succeeded":
            raise RuntimeError(f"the run ended {done.status}: {done.error}")
        rate = done.counts["clients"]["outbound"]["synced"] / elapsed
        with far.db.session() as session:
            held = len(session.scalars(select(Client.id).where(Client.org_id == far_org)).all())
    ctx.db.dispose()
    print(f"Keyrack → Keyrack (threads, SQLite each side, keys at {KEYRACK_RATE} req/s)")
    print(
        f"  {count:>7} records: SDK loop {plain:,.0f} rec/s, engine {rate:,.0f} rec/s"
        f" ({rate / plain:.2f} x the SDK loop; {done.api_calls} API calls;"
        f" far side holds {held})"
    )
    print(f"           run counts {json.dumps(done.counts)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--keyrack-records", type=int, default=1000)
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_fake:
        serve_fake()
        return
    sizes = [int(s) for s in options.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, fake_hubspot() as (url, token):
        print(f"Keyrack → HubSpot fake (child process, {url}), SQLite, batches of {BATCH}")
        for count in sizes:
            ctx, org_id = seeded_context(Path(tmp), count)
            plain = baseline(ctx, org_id, url, token)
            rate, run = engine_run(ctx, org_id, url, token)
            ctx.db.dispose()
            ctx, org_id = seeded_context(Path(tmp), count)
            tracemalloc.start()
            engine_run(ctx, org_id, url, token)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            ctx.db.dispose()
            print(
                f"  {count:>7} records: plain loop {plain:,.0f} rec/s, engine {rate:,.0f} rec/s"
                f" ({rate / plain:.2f} x the plain loop; {run.api_calls} API calls),"
                f" engine peak Python memory {peak / 2**20:.1f} MiB"
            )
            print(f"           run counts {json.dumps(run.counts)}")
        if options.keyrack_records:
            keyrack_row(Path(tmp), options.keyrack_records)


if __name__ == "__main__":
    main()
