"""Records per second Keyrack → Keyrack through the ``keyrack`` connector, against a plain
SDK loop POSTing the same records, in the same run.

    .venv/bin/python bench/sync_connectors.py [--records 1000] [--rate 10000]

Starts three real Keyracks in this process, each on its own SQLite database and loopback
socket: a source seeded with ``--records`` clients, and two targets. Then, with keys
allowed ``--rate`` requests/second on each side:

* baseline: ``keyrack.Client`` iterates the source's changes (``updated_since``) and
  POSTs each client to the first target, with its external id;
* connector: ``changed_since`` on the source, ``upsert`` in ``batch_size`` batches into
  the second target (per record: a read by external id, then the POST);
* connector again from the start: every record read back and found ``unchanged``.

Prints records/s for each and the ratios to the baseline. The connector does twice the
baseline's calls per record (it looks each record up, so a rerun writes nothing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from keyrack.client import Client
from keyrack.config import Settings
from keyrack.domain.crm import RecordType
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope
from keyrack.integrations.connector import Direction, OutboundRecord, WriteResult
from keyrack.integrations.connectors.keyrack import KeyrackConnector
from keyrack.server import create_app
from keyrack.services import keys, tenancy
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.storage.database import Database
from keyrack.storage.migrate import upgrade
from keyrack.storage.tables.crm import Client as ClientRow

SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
ACTOR = Actor(label="bench", is_staff=True)
PERMISSIONS = ("clients:read", "clients:write")
CLIENTS = RecordType.CLIENTS
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@contextmanager
def keyrack(folder: Path, name: str, rate: int) -> Iterator[tuple[Context, int, str, str]]:
    """A Keyrack on its own database and socket: (ctx, org id, base URL, key secret)."""
    url = f"sqlite:///{folder / name}.db"
    upgrade(url)
    settings = Settings(database_url=url, secret_key=SECRET_KEY, environment="test")
    ctx = Context(settings=settings, db=Database(url))
    org = tenancy.create_org(ctx, ACTOR, name=name.title(), slug=name)
    _, secret = keys.create_key(
        ctx,
        ACTOR,
        Scope(org.id),
        name="Sync",
        permissions=PERMISSIONS,
        rate_per_second=rate,
        concurrency=4,
    )
    config = uvicorn.Config(create_app(ctx=ctx), host="127.0.0.1", port=0, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield ctx, org.id, f"http://127.0.0.1:{port}", secret
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ctx.db.dispose()


def seed(ctx: Context, org_id: int, count: int) -> None:
    scope = Scope(org_id)
    for start in range(0, count, 500):
        with ctx.db.transaction() as session:
            for n in range(start, min(start + 500, count)):
                at = records.stamp(session, org_id, ctx.clock())
                row = ClientRow(
                    ref=new_ref("cli"),
                    org_id=org_id,
                    location_id=None,
                    name=f"Client {n}",
                    status="active",
                    owner_email=f"owner{n}@example.com",
                    arr_cents=n * 100,
                    health=n % 101,
                    custom_fields={},
                )
                records.created(session, scope, CLIENTS, row, at=at, external_id_changes={})


FIELDS = [m.remote for m in KeyrackConnector.mappings[(CLIENTS, Direction.OUTBOUND)]]


def baseline(source: str, source_key: str, target: str, target_key: str, rate: int) -> int:
    written = 0
    with (
        Client(source_key, source, rate_per_second=rate) as reader,
        Client(target_key, target, rate_per_second=rate) as writer,
    ):
        for record in reader.clients.iter(updated_since=EPOCH, limit=200):
            fields = {f: record[f] for f in FIELDS}
            writer.clients.create(**fields, external_ids={"keyrack": record["id"]})
            written += 1
    return written


def through_connector(
    source: str, source_key: str, target: str, target_key: str
) -> tuple[int, dict[WriteResult, int]]:
    results: dict[WriteResult, int] = {}
    calls = 0
    with httpx.Client(timeout=30) as http:
        reader = KeyrackConnector(credential={"api_key": source_key}, http=http, base_url=source)
        writer = KeyrackConnector(credential={"api_key": target_key}, http=http, base_url=target)
        batch: list[OutboundRecord] = []

        def flush() -> None:
            for outcome in writer.upsert(CLIENTS, batch):
                results[outcome.result] = results.get(outcome.result, 0) + 1
            batch.clear()

        for record in reader.changed_since(CLIENTS, None):
            batch.append(OutboundRecord(record.remote_id, {f: record.fields[f] for f in FIELDS}))
            if len(batch) == writer.batch_size:
                flush()
        flush()
        calls = reader.stats.api_calls + writer.stats.api_calls
    return calls, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10_000, help="each key's requests/second")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        keyrack(Path(tmp), "source", args.rate) as (source_ctx, source_org, source, source_key),
        keyrack(Path(tmp), "plain", args.rate) as (_, _, plain, plain_key),
        keyrack(Path(tmp), "synced", args.rate) as (_, _, synced, synced_key),
    ):
        seed(source_ctx, source_org, args.records)
        print(f"{args.records} clients, keys at {args.rate} requests/s")

        started = time.perf_counter()
        written = baseline(source, source_key, plain, plain_key, args.rate)
        plain_s = time.perf_counter() - started
        assert written == args.records
        plain_rate = written / plain_s
        print(f"SDK loop POSTing     {plain_rate:8.1f} records/s  ({plain_s:.2f} s)")

        rows = []
        for label in ("connector (created)", "connector (unchanged)"):
            started = time.perf_counter()
            calls, results = through_connector(source, source_key, synced, synced_key)
            took = time.perf_counter() - started
            assert sum(results.values()) == args.records, results
            rate = args.records / took
            rows.append(rate)
            shown = ", ".join(f"{k.value} {v}" for k, v in sorted(results.items()))
            print(
                f"{label:21s}{rate:8.1f} records/s  ({took:.2f} s, {calls} calls; {shown})"
                f"  ratio {rate / plain_rate:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
