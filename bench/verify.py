"""In-process key verification throughput, as a ratio to a bare SHA-256 + dict lookup.

Both are measured in the same run (machines here are noisy; absolute numbers drift).
What is measured is the verifier that serves requests (``CachedVerifier``, awaited as
the gateway awaits it) on a cache hit: length check, SHA-256, the cache read,
constant-time digest comparison, and the verdict rules. For scale, the uncached path
(a cache that keeps nothing: a SQLite lookup in a worker thread per verification) is
printed too.

    .venv/bin/python bench/verify.py
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
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
    return KeyIdentity(
        digest=digest,
        key_id=i,
        ref=f"key_{i}",
        name="bench",
        org_id=1,
        org_slug="bench",
        org_api_enabled=True,
        location_id=None,
        owner_id=None,
        environment=Environment.PRODUCTION,
        permissions=frozenset({"clients:read"}),
        rate_per_second=5,
        concurrency=1,
        status=KeyStatus.ACTIVE,
        expires_at=None,
        secret_valid_until=None,
    )


def main() -> None:
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


if __name__ == "__main__":
    main()
