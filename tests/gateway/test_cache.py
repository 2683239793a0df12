"""The verification cache: hits touch no database; changes take effect at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from anyio import to_thread
from sqlalchemy import event

from keyrack.cache.keycache import REFRESHES_IN_FLIGHT, KeyCache
from keyrack.config import Settings
from keyrack.domain.events import KeyChanged, OrgChanged
from keyrack.domain.verification import KeyIdentity
from keyrack.server import create_app
from keyrack.services import keys, tenancy
from keyrack.services.context import Context
from keyrack.storage.database import Database
from tests.conftest import OPERATOR, REDIS_SKIP, REDIS_URL, MutableClock, Seeded
from tests.gateway.conftest import FakeMonotonic, Serve, problem_code
from tests.redis_proxy import RedisProxy

IMPORTED_REFRESH = "WHERE key_secrets.imported ="
"""The imported-digest set's once-a-second refresh (``cache/imported.py``): a timer's
query, not a request's, so a slow run may see it while requests are served."""


@contextmanager
def statements(ctx: Context) -> Iterator[list[str]]:
    """The statements run while the block runs, other than the timed imported refresh."""
    seen: list[str] = []

    def listener(*args: object) -> None:
        if IMPORTED_REFRESH not in str(args[2]):
            seen.append(str(args[2]))

    event.listen(ctx.db.engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", listener)


def test_a_cache_hit_runs_no_database_query(api: httpx.Client, seeded: Seeded) -> None:
    _, fast = seeded.new_key(rate_per_second=100)
    assert api.get("/api/v2/keys/self", headers=seeded.headers(fast)).status_code == 200
    with statements(seeded.ctx) as seen:
        for _ in range(20):
            assert api.get("/api/v2/keys/self", headers=seeded.headers(fast)).status_code == 200
            assert api.get("/api/v2/health", headers=seeded.headers(fast)).status_code == 200
    assert seen == []


def test_a_miss_is_one_indexed_read_outside_any_transaction(seeded: Seeded) -> None:
    from keyrack.domain.keys import digest

    _, secret = seeded.new_key(rate_per_second=100)
    seen: list[tuple[str, bool]] = []

    def listener(conn: Any, _cursor: Any, statement: str, *_args: object) -> None:
        driver = conn.connection.dbapi_connection
        autocommit = getattr(driver, "autocommit", None)
        if not isinstance(autocommit, bool):  # the sqlite3 module: no isolation level
            autocommit = driver.isolation_level is None
        seen.append((statement, autocommit))

    event.listen(seeded.ctx.db.engine, "before_cursor_execute", listener)
    try:
        found = keys.find_identity(seeded.ctx, digest(secret))
        assert keys.find_identity(seeded.ctx, digest(secret + "x")) is None
    finally:
        event.remove(seeded.ctx.db.engine, "before_cursor_execute", listener)
    assert found is not None and found.rate_per_second == 100
    assert len(seen) == 2
    for statement, autocommit in seen:
        assert "FROM key_secrets" in statement and "WHERE key_secrets.digest =" in statement
        assert autocommit  # no BEGIN / ROLLBACK around it


def test_unknown_keys_are_cached_too(api: httpx.Client, seeded: Seeded) -> None:
    from keyrack.domain.keys import Environment, generate

    unknown = generate(Environment.PRODUCTION).secret
    assert api.get("/api/v2/health", headers=seeded.headers(unknown)).status_code == 401
    with statements(seeded.ctx) as seen:
        for _ in range(5):
            assert api.get("/api/v2/health", headers=seeded.headers(unknown)).status_code == 401
    assert seen == []


def test_a_roll_voids_the_cached_old_secret_at_once(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200
    _, new_secret = keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref)
    old = api.get("/api/v2/health", headers=seeded.headers())
    assert old.status_code == 401 and problem_code(old) == "revoked-key"
    assert "replaced by a newer secret" in old.json()["detail"]
    assert api.get("/api/v2/health", headers=seeded.headers(new_secret)).status_code == 200


def test_a_permission_change_applies_to_the_next_request(
    api: httpx.Client, seeded: Seeded, limiter_clock: FakeMonotonic
) -> None:
    assert api.get("/api/v2/keys", headers=seeded.headers()).status_code == 200
    assert api.get("/api/v2/keys/self", headers=seeded.headers()).json()["permissions"] == [
        "keys:manage"
    ]
    keys.update_key(
        seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, permissions=["clients:read"]
    )
    limiter_clock.advance(1)
    refused = api.get("/api/v2/keys", headers=seeded.headers())
    assert refused.status_code == 403 and problem_code(refused) == "insufficient-permission"
    me = api.get("/api/v2/keys/self", headers=seeded.headers()).json()
    assert me["permissions"] == ["clients:read"]


def test_keys_self_describes_the_key_with_its_latest_use(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    first = api.get("/api/v2/keys/self", headers=seeded.headers()).json()
    clock.advance(timedelta(minutes=5))
    me = api.get("/api/v2/keys/self", headers=seeded.headers()).json()
    assert me["ref"] == seeded.key.ref and me["name"] == "Seed key"
    assert me["last4"] == seeded.secret[-4:] and seeded.secret not in str(me)
    assert me["environment"] == "sandbox" and me["status"] == "active"
    assert me["scope"] == {
        "organization": {"id": seeded.org_id, "slug": "acme", "name": "Acme"},
        "location_id": None,
    }
    assert me["rate_limit"] == {"rate_per_second": 5, "concurrency": 1}
    assert me["last_used_at"] == "2026-01-05T09:05:00Z" and me["last_used_ip"] == "127.0.0.1"
    assert me["inactivity_deadline"] == "2026-04-05T09:05:00Z"
    assert first["created_at"] == me["created_at"] == "2026-01-05T09:00:00Z"


def _identity(digest: str, org_id: int = 1) -> KeyIdentity:
    from keyrack.domain.keys import Environment
    from keyrack.domain.verification import KeyStatus

    return KeyIdentity(
        key_id=7,
        ref="key_x",
        name="x",
        org_id=org_id,
        org_slug="acme",
        org_api_enabled=True,
        location_id=None,
        owner_id=None,
        environment=Environment.SANDBOX,
        permissions=frozenset(),
        rate_per_second=5,
        concurrency=1,
        status=KeyStatus.ACTIVE,
        expires_at=None,
        secret_valid_until=None,
    )


@pytest.mark.anyio
async def test_without_invalidation_an_entry_lives_at_most_its_ttl() -> None:
    loads: list[str] = []
    clock = FakeMonotonic()

    def load(digest: str) -> KeyIdentity:
        loads.append(digest)
        return _identity(digest)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=1.0, clock=clock)
    await cache.identity("d1")
    clock.advance(0.49)
    await cache.identity("d1")
    assert loads == ["d1"]
    clock.advance(0.51)  # one whole TTL after the load
    assert cache.peek("d1") is None
    await cache.identity("d1")
    assert loads == ["d1", "d1"]


@pytest.mark.anyio
async def test_a_busy_entry_is_reloaded_in_the_background_before_it_expires() -> None:
    versions = iter(range(1, 100))
    clock = FakeMonotonic()
    reloaded = threading.Event()

    def load(digest: str) -> KeyIdentity:
        version = next(versions)
        if version > 1:
            reloaded.set()
        return _identity(digest).replace(key_id=version)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=1.0, clock=clock)
    first = await cache.identity("d1")
    assert first is not None and first.key_id == 1
    clock.advance(0.6)  # in the last half of its life: answered, and reloaded behind
    assert cache.peek("d1") == (first,)
    await cache.aclose()  # waits for the reload
    assert reloaded.is_set()
    clock.advance(0.5)  # the first load would have expired by now; the reload has not
    boxed = cache.peek("d1")
    assert boxed is not None and boxed[0] is not None and boxed[0].key_id == 2


@pytest.mark.anyio
async def test_many_stale_entries_reload_a_few_at_a_time_on_the_caches_own_threads() -> None:
    """20,000 entries turning stale together once queued their reloads by the thousand
    on the thread pool the endpoints share: a ``/metrics`` scrape waited behind them."""
    clock = FakeMonotonic()
    release = threading.Event()
    first_loads_at = clock()
    started: list[str] = []

    def load(digest: str) -> KeyIdentity:
        if clock() > first_loads_at:  # a reload: held until released
            started.append(digest)
            release.wait(10)
        return _identity(digest)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=1.0, clock=clock)
    digests = [f"{n:064x}" for n in range(200)]
    for digest in digests:
        await cache.identity(digest)
    clock.advance(0.6)  # every entry in the last half of its life
    for digest in digests:
        assert cache.peek(digest) is not None  # still answered from memory
    await asyncio.sleep(0.2)
    assert len(started) == REFRESHES_IN_FLIGHT  # not 200 reloads queued
    assert await asyncio.wait_for(to_thread.run_sync(lambda: "free"), 2) == "free"
    release.set()
    await cache.aclose()
    for digest in digests[:10]:  # the reloads done, the next hits start the next ones
        cache.peek(digest)
    await cache.aclose()
    assert len(started) == 2 * REFRESHES_IN_FLIGHT


@pytest.mark.anyio
async def test_a_longer_ttl_keeps_entries_and_switching_flushes() -> None:
    loads: list[str] = []
    clock = FakeMonotonic()

    def load(digest: str) -> KeyIdentity:
        loads.append(digest)
        return _identity(digest)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=1.0, clock=clock)
    cache.set_ttl(600.0)  # the relay is subscribed
    await cache.identity("d1")
    clock.advance(299)
    assert cache.peek("d1") is not None and loads == ["d1"]
    cache.set_ttl(1.0)  # the relay is lost: flushed, and short-lived from now on
    assert cache.peek("d1") is None and len(cache) == 0
    await cache.identity("d1")
    clock.advance(1.0)
    assert cache.peek("d1") is None


@pytest.mark.anyio
async def test_cached_identities_share_what_many_keys_have_in_common() -> None:
    cache: KeyCache[None] = KeyCache(
        lambda d: _identity(d).replace(permissions=frozenset({"clients:read"})),
        lambda _: None,
        ttl=60,
    )
    first, second = await cache.identity("ab" * 32), await cache.identity("cd" * 32)
    assert first is not None and second is not None
    assert first.profile is second.profile and first.permissions is second.permissions


@pytest.mark.anyio
async def test_concurrent_misses_share_one_load() -> None:
    loads: list[str] = []
    release = threading.Event()

    def load(digest: str) -> KeyIdentity:
        loads.append(digest)
        release.wait(5)
        return _identity(digest)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=60)
    waiters = [asyncio.create_task(cache.identity("d1")) for _ in range(10)]
    await asyncio.sleep(0.05)
    release.set()
    found = await asyncio.gather(*waiters)
    assert loads == ["d1"] and all(identity is found[0] for identity in found)


@pytest.mark.anyio
async def test_a_failed_load_reaches_its_waiters_and_is_not_kept() -> None:
    attempts: list[str] = []

    def load(digest: str) -> KeyIdentity:
        attempts.append(digest)
        if len(attempts) == 1:
            raise OSError("database unreachable")
        return _identity(digest)

    cache: KeyCache[None] = KeyCache(load, lambda _: None, ttl=60)
    with pytest.raises(OSError, match="unreachable"):
        await cache.identity("d1")
    assert cache.peek("d1") is None
    assert await cache.identity("d1") is not None and len(attempts) == 2


@pytest.mark.anyio
async def test_events_drop_entries_by_digest_and_by_organization() -> None:
    cache: KeyCache[None] = KeyCache(
        lambda d: _identity(d, org_id=2 if d == "ee" else 1), lambda _: None, ttl=60
    )
    for digest in ("aa", "bb", "ee"):
        await cache.identity(digest)
    cache.invalidate(KeyChanged(7, ("aa", "not hex")))
    assert cache.peek("aa") is None and cache.peek("bb") is not None
    cache.invalidate(OrgChanged(1))
    assert cache.peek("bb") is None and cache.peek("ee") is not None


@pytest.mark.anyio
async def test_a_load_that_raced_an_invalidation_is_read_again() -> None:
    cache: KeyCache[None]
    reads: list[str] = []

    def load(digest: str) -> KeyIdentity | None:
        reads.append(digest)
        if len(reads) == 1:
            cache.invalidate(KeyChanged(7, (digest,)))  # the key changes while we read it
            return _identity(digest)  # what the first read saw: stale
        return None  # what it is now: gone

    cache = KeyCache(load, lambda _: None, ttl=60)
    assert await cache.identity("aa") is None and len(reads) == 2
    assert cache.peek("aa") == (None,)


@pytest.mark.anyio
async def test_the_cache_is_bounded() -> None:
    cache: KeyCache[None] = KeyCache(lambda d: None, lambda _: None, ttl=60, max_entries=4)
    for digest in ("0a", "0b", "0c", "0d", "0e", "0f", "1a", "1b", "1c", "1d"):
        await cache.identity(digest)
        assert len(cache) <= 4
    assert cache.peek("0a") is None and cache.peek("1d") == (None,)


@pytest.mark.skipif(not REDIS_URL, reason=REDIS_SKIP)
def test_a_revoke_on_one_instance_reaches_another_through_redis(
    ctx: Context, settings: Settings, seeded: Seeded, serve: Serve
) -> None:
    shared = settings.model_copy(update={"redis_url": REDIS_URL})
    one = Context(settings=shared, db=Database(shared.database_url), clock=ctx.clock)
    two = Context(settings=shared, db=Database(shared.database_url), clock=ctx.clock)
    try:
        _, secret = keys.create_key(one, OPERATOR, seeded.scope, name="Shared", rate_per_second=100)
        with serve(create_app(ctx=one)) as api_one, serve(create_app(ctx=two)) as api_two:
            assert api_two.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
            ref = api_one.get("/api/v2/keys/self", headers=seeded.headers(secret)).json()["ref"]
            keys.revoke_key(one, OPERATOR, seeded.scope, ref, reason="rotated out")
            deadline = time.monotonic() + 1.0
            while True:
                status = api_two.get("/api/v2/health", headers=seeded.headers(secret)).status_code
                if status == 401 or time.monotonic() > deadline:
                    break
            assert status == 401
    finally:
        one.db.dispose()
        two.db.dispose()


@pytest.mark.skipif(not REDIS_URL, reason=REDIS_SKIP)
def test_a_lost_relay_flushes_the_cache_and_a_revoke_still_lands_within_a_second(
    ctx: Context, settings: Settings, seeded: Seeded, serve: Serve
) -> None:
    import redis

    shared = settings.model_copy(update={"redis_url": REDIS_URL, "key_cache_ttl_seconds": 1.0})
    one = Context(settings=shared, db=Database(shared.database_url), clock=ctx.clock)
    two = Context(settings=shared, db=Database(shared.database_url), clock=ctx.clock)
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        _, secret = keys.create_key(one, OPERATOR, seeded.scope, name="Shared", rate_per_second=100)
        app_two = create_app(ctx=two)
        with serve(create_app(ctx=one)) as api_one, serve(app_two) as api_two:
            cache, relay = app_two.state.key_cache, app_two.state.relay
            assert cache.ttl == 600  # subscribed: entries live until an event drops them
            assert api_two.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
            time.sleep(1.1)  # longer than the short TTL: still a hit
            with statements(two) as seen:
                assert (
                    api_two.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
                )
            assert seen == []
            ref = api_one.get("/api/v2/keys/self", headers=seeded.headers(secret)).json()["ref"]

            name = f"keyrack-relay-{relay._origin}"
            ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
            assert len(ids) == 1
            admin.execute_command("CLIENT", "KILL", "ID", ids[0])
            keys.revoke_key(one, OPERATOR, seeded.scope, ref, reason="rotated out")
            revoked_at = time.monotonic()
            while True:
                status = api_two.get("/api/v2/health", headers=seeded.headers(secret)).status_code
                if status == 401 or time.monotonic() - revoked_at > 1.5:
                    break
                time.sleep(0.02)
            assert status == 401 and time.monotonic() - revoked_at <= 1.05
            assert relay.losses >= 1  # the loss was seen: the cache was flushed
            deadline = time.monotonic() + 5
            while not relay.subscribed.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay.subscribed.is_set() and cache.ttl == 600  # back, and long-lived again
    finally:
        admin.close()
        one.db.dispose()
        two.db.dispose()


def test_org_changes_reach_cached_keys(api: httpx.Client, seeded: Seeded) -> None:
    assert api.get("/api/v2/health", headers=seeded.headers()).json()["organization"] == "Acme"
    tenancy.update_org(seeded.ctx, OPERATOR, "acme", api_enabled=False)
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 403


@pytest.mark.skipif(not REDIS_URL, reason=REDIS_SKIP)
@pytest.mark.anyio
async def test_a_partition_that_leaves_the_socket_open_is_noticed_by_the_heartbeat() -> None:
    from redis.asyncio import Redis as AsyncRedis

    from keyrack.cache.relay import SILENT_SECONDS, RedisListener

    told: list[object] = []
    async with RedisProxy(str(REDIS_URL)) as proxy:
        client = AsyncRedis(host="127.0.0.1", port=proxy.port)
        cache: KeyCache[None] = KeyCache(lambda d: _identity(d), lambda _: None, ttl=1.0)
        listener = RedisListener(
            client, cache, origin="test", live_ttl=600, fallback_ttl=1.0, also=told.append
        )
        task = asyncio.create_task(listener.run())
        try:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
            assert cache.ttl == 600 and told.count(None) == 1  # the imported digests are told too
            await cache.identity("d1")
            await asyncio.sleep(SILENT_SECONDS + 1.0)  # quiet, but pings are answered: still up
            assert listener.losses == 0 and cache.peek("d1") is not None
            proxy.partition()  # bytes vanish, sockets stay open
            lost_by = time.monotonic() + SILENT_SECONDS + 1.0
            while listener.losses == 0 and time.monotonic() < lost_by:
                await asyncio.sleep(0.05)
            assert listener.losses >= 1 and cache.ttl == 1.0 and cache.peek("d1") is None
            assert told.count(None) == 2  # ...and told of the loss, to read at the short TTL
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
