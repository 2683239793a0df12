"""Constant memory: exporting 200,000 clients, and streaming the file, each keep their
peak (tracemalloc) within a bound far below the file's size, on SQLite and PostgreSQL."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import insert

from keyrack.domain.exports import Resource, Status
from keyrack.domain.ids import ulid
from keyrack.domain.tenancy import Scope
from keyrack.services import exports
from keyrack.services.context import Actor, Context
from keyrack.storage.tables.base import to_epoch_us
from keyrack.storage.tables.crm import ChangeClock, Client
from tests.crm.conftest import Crm
from tests.exports.conftest import drain

ROWS = 200_000
BOUND = 8 * 1024 * 1024
"""Peak traced memory allowed: a fraction of the file (about 44 MB)."""
START_US = to_epoch_us(datetime(2026, 1, 1, tzinfo=UTC))


def _batches(org_id: int) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    for i in range(ROWS):
        at = datetime.fromtimestamp((START_US + i) / 1e6, UTC)
        batch.append(
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
        if len(batch) == 10_000:
            yield batch
            batch = []


def _bulk_clients(ctx: Context, org_id: int) -> None:
    """200,000 clients through Core (one executemany per 10,000), the change clock after them."""
    with ctx.db.transaction() as session:
        for batch in _batches(org_id):
            session.execute(insert(Client), batch)
        session.execute(insert(ChangeClock).values(org_id=org_id, last_us=START_US + ROWS))


@pytest.mark.timeout(900)
def test_exporting_and_downloading_200000_clients_keeps_memory_bounded(
    ctx: Context, crm: Crm, api: httpx.Client
) -> None:
    scope = Scope(crm.org.org_id)
    _bulk_clients(ctx, scope.org_id)
    view = exports.create_export(ctx, Actor(label="test"), scope, resource=Resource.CLIENTS)

    tracemalloc.start()
    try:
        drain(ctx)
        _, export_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    done = exports.get_export(ctx, scope, view.ref)
    assert done.status is Status.SUCCEEDED, done.error
    assert done.rows_done == ROWS
    assert done.bytes > 4 * BOUND  # the file could not have been held in memory
    assert export_peak < BOUND, f"the export peaked at {export_peak / 2**20:.1f} MiB"

    received = lines = 0
    tracemalloc.start()
    try:
        url = f"/api/v2/exports/{view.ref}/download"
        with api.stream("GET", url, headers=crm.agency) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(done.bytes)
            for chunk in response.iter_bytes():
                received += len(chunk)
                lines += chunk.count(b"\n")  # a CRLF may straddle two chunks
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (received, lines) == (done.bytes, ROWS + 1)
    assert download_peak < BOUND, f"the download peaked at {download_peak / 2**20:.1f} MiB"
