"""Constant memory: exporting clients, and streaming the file, each keep their peak
(tracemalloc, tracing only the export or the download) flat as the row count grows tenfold,
on SQLite and PostgreSQL. A peak that grew with the rows would grow by a sizeable part of
the file; ``bench/export.py`` exports 100,000 rows and more."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import insert, update

from keyrack.domain.exports import Resource, Status
from keyrack.domain.ids import ulid
from keyrack.domain.tenancy import Scope
from keyrack.services import exports
from keyrack.services.context import Actor, Context
from keyrack.storage.tables.base import to_epoch_us
from keyrack.storage.tables.crm import ChangeClock, Client
from tests.crm.conftest import Crm
from tests.exports.conftest import drain

SMALL, LARGE = 3_000, 30_000
"""The export is read in chunks of 1,000 rows and written in 256 KiB parts (about 1,100
rows): both sizes reach the steady state, the larger with ten times the rows."""
START_US = to_epoch_us(datetime(2026, 1, 1, tzinfo=UTC))


def _clients(ctx: Context, org_id: int, first: int, last: int) -> None:
    """Clients ``first`` to ``last`` in one executemany, the change clock after them."""
    rows: list[dict[str, object]] = []
    for i in range(first, last):
        at = datetime.fromtimestamp((START_US + i) / 1e6, UTC)
        rows.append(
            {
                "ref": f"cli_{ulid(i)}",
                "org_id": org_id,
                "location_id": None,
                "name": f"Client number {i:06d}, of the bulk export test, with a long name",
                "status": "active",
                "owner_email": f"owner{i}@example.test",
                "arr_cents": i * 100,
                "health": i % 101,
                "custom_fields": {"tier": "gold" if i % 2 else "silver", "seats": i % 50},
                "created_at": at,
                "updated_at": at,
            }
        )
    with ctx.db.transaction() as session:
        session.execute(insert(Client), rows)
        if first == 0:
            session.execute(insert(ChangeClock).values(org_id=org_id, last_us=START_US + last))
        else:
            clock = update(ChangeClock).where(ChangeClock.org_id == org_id)
            session.execute(clock.values(last_us=START_US + last))


def _peak(work: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _export(ctx: Context, scope: Scope, rows: int) -> tuple[exports.ExportView, int]:
    view = exports.create_export(ctx, Actor(label="test"), scope, resource=Resource.CLIENTS)
    _, peak = _peak(lambda: drain(ctx))
    done = exports.get_export(ctx, scope, view.ref)
    assert done.status is Status.SUCCEEDED, done.error
    assert done.rows_done == rows
    return done, peak


def _download(api: httpx.Client, crm: Crm, done: exports.ExportView) -> int:
    def receive() -> tuple[int, int]:
        received = lines = 0
        with api.stream("GET", f"/api/v2/exports/{done.ref}/download", headers=crm.agency) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(done.bytes)
            for chunk in r.iter_bytes():
                received += len(chunk)
                lines += chunk.count(b"\n")  # a CRLF may straddle two chunks
        return received, lines

    (received, lines), peak = _peak(receive)
    assert (received, lines) == (done.bytes, done.rows_done + 1)
    return peak


def test_the_peak_memory_of_an_export_and_its_download_stays_flat_as_the_rows_grow(
    ctx: Context, crm: Crm, api: httpx.Client
) -> None:
    scope = Scope(crm.org.org_id)
    _clients(ctx, scope.org_id, 0, SMALL)
    small, small_export = _export(ctx, scope, SMALL)
    small_download = _download(api, crm, small)
    _clients(ctx, scope.org_id, SMALL, LARGE)
    large, large_export = _export(ctx, scope, LARGE)
    large_download = _download(api, crm, large)

    allowed = (large.bytes - small.bytes) // 10  # a tenth of what the file grew by
    peaks = f"{small_export / 2**20:.2f} → {large_export / 2**20:.2f} MiB"
    assert large_export - small_export < allowed, f"the export's peak grew: {peaks}"
    downloads = f"{small_download / 2**20:.2f} → {large_download / 2**20:.2f} MiB"
    assert large_download - small_download < allowed, f"the download's peak grew: {downloads}"
