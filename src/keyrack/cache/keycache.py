"""The verification cache: key identities by digest, and key views by id, in memory.

A hit is a dictionary read: no database, no thread hop. Entries live at most
``ttl`` seconds; ``KeyChanged`` / ``OrgChanged`` events (from this process's bus,
and from other instances through ``keyrack.cache.relay``) drop them at once. While
the relay is subscribed the TTL is a long safety bound (minutes); when it is not,
the cache is flushed and the TTL is the short one (1 s) until it is back. Unknown
digests are cached too (as None), so garbage that passes the checksum cannot
turn into one database query per request.

Entries are compact: keyed by the digest's 32 raw bytes, the identity itself (three
slots, ``KeyIdentity``) in one of two generation dictionaries (no per-entry timestamp
or box), with what many keys share (``KeyProfile``) stored once.

A miss is loaded in a worker thread, once however many requests wait for it. An
entry read in the last half of its life is reloaded in the background while it
keeps answering, so a busy key never waits for its own reload; at most
``REFRESHES_IN_FLIGHT`` such reloads run at once per table (a hit finding them all
busy leaves its entry to a later hit). Loads run on the cache's own threads
(``LOAD_THREADS``), not on the thread pool the endpoints and flushes share: when
20,000 entries turned stale together, their reloads once queued by the thousand
there, and a ``/metrics`` scrape waited behind them for good.

Reads happen on the event loop without a lock; invalidations may come from worker
threads and take ``_lock``. A load that raced an invalidation is read again
(generation check), so a stale row can never outlive the event that voided it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from keyrack.domain.events import Event, KeyChanged, OrgChanged
from keyrack.domain.verification import NO_IMPORTS, Clock, KeyIdentity, Verdict, check, verify

DEFAULT_MAX_ENTRIES = 1_000_000
_ABSENT: Any = object()
"""What a table holds for a key it does not know (a cached None is a known unknown)."""
_NONE_BOX: tuple[None] = (None,)
_MAX_SHARED = 10_000
LOAD_THREADS = 8
"""Threads loading entries (misses and reloads) for one cache."""
REFRESHES_IN_FLIGHT = 4
"""Background reloads running at once, per table."""

log = logging.getLogger(__name__)

K = TypeVar("K")
A = TypeVar("A")
T = TypeVar("T")
V = TypeVar("V")


class _Table(Generic[K, A, T]):
    """A bounded map of ``key`` to ``load(arg)`` in two generations, so an entry lives
    between ``ttl / 2`` and ``ttl`` seconds without a per-entry timestamp.

    New entries go into ``current``; every ``ttl / 2`` seconds ``current`` becomes
    ``previous`` and ``previous`` is dropped. A hit in ``previous`` (the last half of its
    life) still answers, and starts a background reload into ``current``. Each generation
    holds at most half of ``max_entries``: a full ``current`` rotates early, so eviction
    is O(1) amortized however far over the bound the working set is. Values are stored bare; ``_ABSENT`` tells a
    cached None apart from a miss.

    ``load`` is blocking and runs in a worker thread.
    """

    def __init__(
        self,
        load: Callable[[A], T],
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float],
        lock: threading.Lock,
        threads: Callable[[], ThreadPoolExecutor],
    ) -> None:
        self.current: dict[K, T] = {}
        self.previous: dict[K, T] = {}
        self.generation = 0
        """Bumped (under ``lock``) by every invalidation."""
        self._load = load
        self._max_entries = max(2, max_entries)
        self._clock = clock
        self._lock = lock
        self._threads = threads
        self._loads: dict[K, asyncio.Task[T]] = {}
        self._refreshing = 0
        """Background reloads in flight."""
        self._half = ttl / 2
        self._rotate_at = clock() + self._half

    def set_ttl(self, ttl: float) -> None:
        """Entries live ``ttl`` from now on; the caller clears what was cached."""
        self._half = ttl / 2
        self._rotate_at = self._clock() + self._half

    def lookup(self, key: K, arg: A) -> object:
        """The cached value, or ``_ABSENT`` (starting a reload in its last half-life)."""
        if self._clock() >= self._rotate_at:
            self._rotate()
        value = self.current.get(key, _ABSENT)
        if value is _ABSENT:
            value = self.previous.get(key, _ABSENT)
            if (
                value is not _ABSENT
                and key not in self._loads
                and self._refreshing < REFRESHES_IN_FLIGHT
            ):
                self._refreshing += 1
                self._start(key, arg).add_done_callback(self._refreshed)
        return value

    async def get(self, key: K, arg: A) -> T:
        """The value from memory, else from the (shared) load."""
        value = self.lookup(key, arg)
        if value is not _ABSENT:
            return value  # type: ignore[return-value]
        load = self._loads.get(key) or self._start(key, arg)
        return await asyncio.shield(load)  # a cancelled request leaves the load to the others

    async def wait_loads(self) -> None:
        await asyncio.gather(*self._loads.values(), return_exceptions=True)

    def items(self) -> list[tuple[dict[K, T], K, T]]:
        """Every entry with the generation holding it (a copy; call under ``lock``)."""
        return [(table, k, v) for table in (self.previous, self.current) for k, v in table.items()]

    def drop(self, key: K) -> None:
        self.current.pop(key, None)
        self.previous.pop(key, None)

    def clear(self) -> None:
        self.current = {}
        self.previous = {}

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def _rotate(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._rotate_at:
                return
            if now >= self._rotate_at + self._half:  # idle for a whole half-life: all stale
                self.previous = {}
            else:
                self.previous = self.current
            self.current = {}
            self._rotate_at = now + self._half

    def _start(self, key: K, arg: A) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(self._fetch(key, arg))
        self._loads[key] = task
        task.add_done_callback(functools.partial(self._finished, key))
        return task

    def _refreshed(self, _task: asyncio.Task[T]) -> None:
        self._refreshing -= 1

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("key cache load failed: %r", error)

    async def _fetch(self, key: K, arg: A) -> T:
        loop = asyncio.get_running_loop()
        while True:
            generation = self.generation
            load = functools.partial(contextvars.copy_context().run, self._load, arg)
            value = await loop.run_in_executor(self._threads(), load)
            with self._lock:
                if generation == self.generation:
                    self._put(key, value)
                    return value

    def _put(self, key: K, value: T) -> None:
        self.previous.pop(key, None)
        if len(self.current) >= self._max_entries // 2 and key not in self.current:
            self.previous, self.current = self.current, {}  # the older half goes first
        self.current[key] = value


class KeyCache(Generic[V]):
    """Identities by digest (for verification) and views of them (introspection).

    ``load_view`` turns a verified identity into whatever the introspection routes
    show (read from the database); views are dropped with their key or org.
    ``set_ttl`` switches how long entries may live (the relay lengthens it while it
    is known to deliver every invalidation, and shortens it when it is not).
    """

    def __init__(
        self,
        load_identity: Callable[[str], KeyIdentity | None],
        load_view: Callable[[KeyIdentity], V],
        *,
        ttl: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self.ttl = ttl
        self._shared: dict[object, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._identities: _Table[bytes, bytes, KeyIdentity | None] = _Table(
            lambda raw: self._compact(load_identity(raw.hex())),
            ttl=ttl,
            max_entries=max_entries,
            clock=clock,
            lock=self._lock,
            threads=self._threads,
        )
        self._views: _Table[int, KeyIdentity, tuple[int, V]] = _Table(
            lambda identity: (identity.org_id, load_view(identity)),
            ttl=ttl,
            max_entries=max_entries,
            clock=clock,
            lock=self._lock,
            threads=self._threads,
        )

    def peek(self, digest: str) -> tuple[KeyIdentity | None] | None:
        """The boxed identity for ``digest`` (hex) when in memory (None inside: no such key)."""
        return self.known(bytes.fromhex(digest))

    def known(self, raw: bytes) -> tuple[KeyIdentity | None] | None:
        """``peek`` by the digest's raw bytes (the verifier's hit path)."""
        value = self._identities.lookup(raw, raw)
        if value is _ABSENT:
            return None
        return _NONE_BOX if value is None else (value,)  # type: ignore[return-value]

    def put(self, digest: str, identity: KeyIdentity | None) -> None:
        """Cache what is known of ``digest`` without a load (warming up, benchmarks)."""
        with self._lock:
            self._identities._put(bytes.fromhex(digest), self._compact(identity))

    async def identity(self, digest: str) -> KeyIdentity | None:
        """The identity for ``digest`` (hex): from memory, else loaded in a worker thread."""
        raw = bytes.fromhex(digest)
        return await self._identities.get(raw, raw)

    async def view(self, identity: KeyIdentity) -> V:
        """The view of a verified key, cached like identities."""
        return (await self._views.get(identity.key_id, identity))[1]

    async def aclose(self) -> None:
        """Wait for loads in flight (at shutdown), and let the load threads go."""
        await self._identities.wait_loads()
        await self._views.wait_loads()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _threads(self) -> ThreadPoolExecutor:
        """The cache's load threads (started on the first load, again after ``aclose``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="keyrack-key-cache")
        return self._pool

    # -- invalidation -----------------------------------------------------------

    def invalidate(self, event: Event) -> None:
        """Drop what ``event`` may have changed. Safe to call from any thread."""
        with self._lock:
            self._identities.generation += 1
            self._views.generation += 1
            if isinstance(event, KeyChanged):
                for digest in event.digests:
                    if (raw := _raw(digest)) is not None:
                        self._identities.drop(raw)
                self._views.drop(event.key_id)
            elif isinstance(event, OrgChanged):
                self._drop_org(event.org_id)

    def clear(self) -> None:
        """Forget everything (e.g. after missing invalidations while disconnected)."""
        with self._lock:
            for table in (self._identities, self._views):
                table.generation += 1
                table.clear()

    def set_ttl(self, ttl: float) -> None:
        """Forget everything, and let what is cached from now on live ``ttl`` seconds."""
        with self._lock:
            self.ttl = ttl
            for table in (self._identities, self._views):
                table.generation += 1
                table.clear()
                table.set_ttl(ttl)

    def _drop_org(self, org_id: int) -> None:
        for table, digest, identity in self._identities.items():
            if identity is not None and identity.org_id == org_id:
                del table[digest]
        for views, key_id, (view_org_id, _view) in self._views.items():
            if view_org_id == org_id:
                del views[key_id]

    def __len__(self) -> int:
        return len(self._identities)

    def _compact(self, identity: KeyIdentity | None) -> KeyIdentity | None:
        """``identity`` with one copy of what many keys share (organization, limits,
        permissions, address ranges)."""
        if identity is None:
            return None
        if len(self._shared) > _MAX_SHARED:
            self._shared.clear()  # a pathological variety of values: sharing stops paying off
        return identity.shared(self._shared)


def _raw(digest: str) -> bytes | None:
    """The raw bytes of a hex digest (None for anything else: it cannot be cached)."""
    try:
        return bytes.fromhex(digest)
    except ValueError:
        return None


class CachedVerifier:
    """Key verification over a ``KeyCache`` for async callers (the gateway, ``keys/verify``):
    ``keyrack.domain.verification.verify`` on what the cache holds, a miss read once.

    A hit is answered on the event loop; a miss is loaded once in a worker thread
    (concurrent misses for one digest share the load). ``on_miss`` is told of each.
    """

    def __init__(
        self,
        cache: KeyCache[Any],
        clock: Clock,
        *,
        on_miss: Callable[[], None] | None = None,
        imported: Container[str] = NO_IMPORTS,
    ) -> None:
        self.cache = cache
        self._known = cache.known
        self._clock = clock
        self._on_miss = on_miss
        self.imported = imported
        """Digests of imported secrets (``keyrack.cache.imported``): they may cost a read."""

    async def verify(self, presented: str) -> Verdict:
        """The verdict for ``presented``; raises only if the database cannot be read."""
        found = verify(presented, self._known, self._clock, self.imported)
        if isinstance(found, Verdict):
            return found
        if self._on_miss is not None:
            self._on_miss()
        return check(await self.cache.identity(found.digest), self._clock)
