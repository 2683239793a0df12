"""In-process key verification throughput, as a ratio to a bare SHA-256 + dict lookup.

Both are measured in the same run (machines here are noisy; absolute numbers drift).
What is measured is the verifier that serves requests (``CachedVerifier``, awaited as
the gateway awaits it) on a cache hit: length check, SHA-256, the cache read,
constant-time digest comparison, and the verdict rules. For scale, the uncached path
(a cache that keeps nothing: a SQLite lookup in a worker thread per verification) is
printed too.

Then the same hit path with 1k, 100k and 1M keys cached (``--sizes``): throughput
(random keys among those cached, as a ratio to the smallest size) should stay flat,
and the memory each cached key costs is printed, traced (``tracemalloc``: what the
entries allocate) and as the process's RSS growth.

    .venv/bin/python bench/verify.py [--sizes 1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from keyrack.cache.keycache import CachedVerifier, KeyCache
from keyrack.config import Settings
from keyrack.domain.keys import Environment, generate
from keyrack.domain.tenancy import Scope
from keyrack.domain.verification import KeyIdentity, KeyStatus
from keyrack.services import keys, tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.database import Database
from keyrack.storage.migrate import upgrade

ROUNDS = 5


def best_rate(fn: Callable[[], object], n: int) -> float:
    """Operations per second of ``fn``, best of ROUNDS runs of ``n`` calls."""
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


async def best_async_rate(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """``best_rate`` for a coroutine function, awaited in a running event loop."""
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def verifier(lookup: Callable[[str], KeyIdentity | None], ttl: float) -> CachedVerifier:
    """The server's verifier over a cache of ``lookup`` whose entries live ``ttl`` seconds."""
    cache: KeyCache[None] = KeyCache(lookup, lambda _: None, ttl=ttl)
    return CachedVerifier(cache, lambda: datetime.now(UTC))


async def measure(verify: Callable[[str], Awaitable[object]], secret: str, n: int) -> float:
    assert getattr(await verify(secret), "valid", False)  # and now it is cached
    return await best_async_rate(lambda: verify(secret), n)


def identity(digest: str, i: int) -> KeyIdentity:
    """A key as the database returns it: its own strings (ULID-long ref, a short name)."""
    return KeyIdentity(
        key_id=100_000 + i,
        ref=f"key_01JD{i:022d}",
        name=f"CRM sync {i}",
        org_id=1 + i % 50,
        org_slug="bench-" + str(i % 50),
        org_api_enabled=True,
        location_id=None,
        owner_id=None,
        environment=Environment.PRODUCTION,
        permissions=frozenset({"clients:read", "contacts:read"}),
        rate_per_second=5,
        concurrency=1,
        status=KeyStatus.ACTIVE,
        expires_at=None,
        secret_valid_until=None,
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def fill(size: int, made: list[tuple[str, str]]) -> KeyCache[None]:
    """A cache holding ``size`` keys, ``made`` (real (secret, digest) pairs) among them."""
    cache: KeyCache[None] = KeyCache(
        lambda _: None, lambda _: None, ttl=3600, max_entries=2 * size + 2 * len(made)
    )
    fillers = size - len(made)
    for i in range(fillers):
        digest = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        cache.put(digest, identity(digest, i))
    for j, (_, digest) in enumerate(made):
        cache.put(digest, identity(digest, fillers + j))
    assert len(cache) == size
    return cache


def traced_per_key(size: int, made: list[tuple[str, str]]) -> float:
    """Bytes the entries allocate, per key (``tracemalloc``, on a throwaway cache)."""
    gc.collect()
    tracemalloc.start()
    cache = fill(size, made)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del cache
    return traced / size


def at_scale(sizes: list[int], made: list[tuple[str, str]]) -> None:
    """Verification throughput with each of ``sizes`` keys cached, rounds interleaved
    (best of each), and the memory per key."""
    caches: dict[int, CachedVerifier] = {}
    rss: dict[int, float] = {}
    traced = {size: traced_per_key(min(size, 100_000), made) for size in sizes}
    for size in sizes:
        gc.collect()
        before = rss_bytes()
        cache = fill(size, made)
        gc.collect()
        rss[size] = (rss_bytes() - before) / size
        caches[size] = CachedVerifier(cache, lambda: datetime.now(UTC))
    gc.freeze()  # as the server does: long-lived objects out of the collector's sight
    secrets = [secret for secret, _ in made]
    random.Random(7).shuffle(secrets)
    best = dict.fromkeys(sizes, 0.0)

    async def rounds() -> None:
        n = 20_000
        for _ in range(ROUNDS):
            for size, check in caches.items():
                picks = iter(secrets * (n // len(secrets) + 1))
                assert (await check.verify(secrets[0])).valid
                start = time.perf_counter()
                for _ in range(n):
                    await check.verify(next(picks))
                best[size] = max(best[size], n / (time.perf_counter() - start))

    asyncio.run(rounds())
    gc.unfreeze()
    first = best[sizes[0]]
    for size in sizes:
        print(
            f"{size:>9,} keys cached: {best[size]:10,.0f} verifications/s  "
            f"ratio {best[size] / first:.2f}  {traced[size]:5.0f} B/key traced  "
            f"{rss[size]:5.0f} B/key RSS"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000,1000000")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    made = [generate(Environment.PRODUCTION) for _ in range(10_000)]
    table = {m.digest: identity(m.digest, i) for i, m in enumerate(made)}
    secret = made[4242].secret

    def baseline() -> object:
        return table.get(hashlib.sha256(secret.encode()).hexdigest())

    n = 100_000
    base = best_rate(baseline, n)
    cached = asyncio.run(measure(verifier(table.get, ttl=3600).verify, secret, n))

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        ctx = Context(settings=Settings(database_url=url), db=Database(url))
        actor = Actor.system("bench")
        org = tenancy.create_org(ctx, actor, name="Bench", slug="bench")
        _, db_secret = keys.create_key(ctx, actor, Scope(org.id), name="bench")
        uncached_verifier = verifier(lambda d: keys.find_identity(ctx, d), ttl=0)
        uncached = asyncio.run(measure(uncached_verifier.verify, db_secret, 2_000))
        ctx.db.dispose()

    print(f"baseline sha256 + dict lookup : {base:12,.0f} ops/s")
    print(
        f"verify, cache hit             : {cached:12,.0f} ops/s  "
        f"ratio {cached / base:.2f} of baseline  ({1e6 / cached:.2f} µs each)"
    )
    print(
        f"verify, SQLite lookup (no cache): {uncached:10,.0f} ops/s  "
        f"ratio {uncached / base:.3f} of baseline"
    )
    at_scale(sizes, [(m.secret, m.digest) for m in made[:1000]])


if __name__ == "__main__":
    main()
