"""Last use is written behind: no write per request, a batch per flush, nothing lost at shutdown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import event

from keyrack.services import keys
from keyrack.services.context import Context
from keyrack.services.last_used import LastUsedBuffer
from tests.conftest import MutableClock, Seeded
from tests.gateway.conftest import Serve


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_requests_write_nothing_and_shutdown_flushes_the_latest_use(
    app: FastAPI, serve: Serve, seeded: Seeded, clock: MutableClock
) -> None:
    writes: list[str] = []

    def listener(*args: object) -> None:
        if "UPDATE api_keys" in str(args[2]):
            writes.append(str(args[2]))

    with serve(app) as api:
        api.get("/api/v2/health", headers=seeded.headers())
        event.listen(seeded.ctx.db.engine, "before_cursor_execute", listener)
        for _ in range(3):
            clock.advance(timedelta(seconds=1))
            assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200
        assert writes == []
        assert keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref).last_used_at is None
    event.remove(seeded.ctx.db.engine, "before_cursor_execute", listener)
    assert len(writes) == 1  # the shutdown flush: one batch
    view = keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref)
    assert view.last_used_at == clock.now and view.last_used_ip == "127.0.0.1"


@pytest.mark.anyio
async def test_a_full_buffer_flushes_without_waiting_for_the_interval(
    ctx: Context, seeded: Seeded, clock: MutableClock
) -> None:
    import anyio

    buffer = LastUsedBuffer(ctx, interval=3600, max_pending=2)
    other, _ = seeded.new_key()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(buffer.run)
        buffer.note(seeded.key.id, clock.now, "192.0.2.1")
        buffer.note(other.id, clock.now, "192.0.2.2")
        with anyio.fail_after(10):
            while buffer.pending(other.id) is not None:
                await anyio.sleep(0)
            while keys.get_key(ctx, seeded.scope, other.ref).last_used_ip != "192.0.2.2":
                await anyio.sleep(0)
        tasks.cancel_scope.cancel()
    assert keys.get_key(ctx, seeded.scope, seeded.key.ref).last_used_ip == "192.0.2.1"


@pytest.mark.anyio
async def test_a_failed_flush_keeps_the_uses_for_the_next_one(
    ctx: Context, seeded: Seeded, clock: MutableClock
) -> None:
    buffer = LastUsedBuffer(ctx)
    buffer.note(seeded.key.id, clock.now, "192.0.2.1")
    ctx.db.engine.dispose()
    good_url = ctx.db.engine.url
    broken = ctx.db.engine
    event.listen(broken, "before_cursor_execute", _explode)
    try:
        assert await buffer.flush() == 0
    finally:
        event.remove(broken, "before_cursor_execute", _explode)
    assert good_url == ctx.db.engine.url
    assert buffer.pending(seeded.key.id) == (clock.now, "192.0.2.1")
    assert await buffer.flush() == 1
    assert keys.get_key(ctx, seeded.scope, seeded.key.ref).last_used_ip == "192.0.2.1"


def _explode(*args: object) -> None:
    raise RuntimeError("database is down")


def test_a_flush_is_one_statement_per_batch_of_keys(seeded: Seeded, clock: MutableClock) -> None:
    made = [seeded.new_key()[0] for _ in range(3)]
    earlier = clock.now - timedelta(hours=1)
    keys.record_last_used(seeded.ctx, {made[0].id: (clock.now, "192.0.2.9")})
    statements: list[str] = []

    def listener(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(seeded.ctx.db.engine, "before_cursor_execute", listener)
    try:
        keys.record_last_used(
            seeded.ctx,
            {
                made[0].id: (earlier, "198.51.100.1"),  # older than what is stored: kept
                made[1].id: (clock.now, "198.51.100.2"),
                made[2].id: (clock.now, None),
            },
        )
    finally:
        event.remove(seeded.ctx.db.engine, "before_cursor_execute", listener)
    assert len([s for s in statements if "UPDATE api_keys" in s]) == 1
    seen = [keys.get_key(seeded.ctx, seeded.scope, key.ref) for key in made]
    assert [(v.last_used_at, v.last_used_ip) for v in seen] == [
        (clock.now, "192.0.2.9"),
        (clock.now, "198.51.100.2"),
        (clock.now, None),
    ]


def test_a_large_flush_is_split_into_batches(
    seeded: Seeded, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "LAST_USED_BATCH", 2)
    made = [seeded.new_key()[0] for _ in range(5)]
    updates: list[str] = []

    def listener(*args: object) -> None:
        if "UPDATE api_keys" in str(args[2]):
            updates.append(str(args[2]))

    event.listen(seeded.ctx.db.engine, "before_cursor_execute", listener)
    try:
        keys.record_last_used(seeded.ctx, {key.id: (clock.now, "192.0.2.1") for key in made})
    finally:
        event.remove(seeded.ctx.db.engine, "before_cursor_execute", listener)
    assert len(updates) == 3
    assert all(
        keys.get_key(seeded.ctx, seeded.scope, key.ref).last_used_at == clock.now for key in made
    )
