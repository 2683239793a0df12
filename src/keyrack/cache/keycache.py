"""The verification cache: key identities by digest, and key views by id, in memory.

A hit is a dictionary read: no database, no thread hop. Entries live ``ttl``
seconds; ``KeyChanged`` / ``OrgChanged`` events (from this process's bus, and from
other instances through ``keyrack.cache.relay``) drop them at once. Unknown
digests are cached too (as None), so garbage that passes the checksum cannot
turn into one database query per request.

A miss is loaded in a worker thread, once however many requests wait for it. An
entry read in the last fifth of its life is reloaded in the background while it
keeps answering, so a busy key never waits for its own reload.

Reads happen on the event loop without a lock; invalidations may come from worker
threads and take ``_lock``. A load that raced an invalidation is read again
(generation check), so a stale row can never outlive the event that voided it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Container
from typing import Any, Generic, TypeVar

from anyio import to_thread

from keyrack.domain.events import Event, KeyChanged, OrgChanged
from keyrack.domain.verification import NO_IMPORTS, Clock, KeyIdentity, Verdict, check, verify

DEFAULT_MAX_ENTRIES = 100_000
REFRESH_AFTER = 0.8
"""Share of the TTL after which a hit starts a background reload."""

log = logging.getLogger(__name__)

K = TypeVar("K")
A = TypeVar("A")
T = TypeVar("T")
V = TypeVar("V")


class _Table(Generic[K, A, T]):
    """A bounded TTL map of ``key`` to ``load(arg)``; oldest insertions are evicted first.

    ``load`` is blocking and runs in a worker thread. Values are boxed in 1-tuples so
    a cached None is told apart from a miss without allocating on a hit.
    """

    def __init__(
        self,
        load: Callable[[A], T],
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float],
        lock: threading.Lock,
    ) -> None:
        self.entries: dict[K, tuple[float, float, tuple[T]]] = {}
        """key -> (refresh after, expires, boxed value), in monotonic seconds."""
        self.generation = 0
        """Bumped (under ``lock``) by every invalidation."""
        self._load = load
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._lock = lock
        self._loads: dict[K, asyncio.Task[T]] = {}

    def peek(self, key: K, arg: A) -> tuple[T] | None:
        """The boxed value if cached (starting a background reload near its expiry)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry[0]:
            if now >= entry[1]:
                return None
            if key not in self._loads:
                self._start(key, arg)
        return entry[2]

    async def get(self, key: K, arg: A) -> T:
        """The value from memory, else from the (shared) load."""
        boxed = self.peek(key, arg)
        if boxed is not None:
            return boxed[0]
        load = self._loads.get(key) or self._start(key, arg)
        return await asyncio.shield(load)  # a cancelled request leaves the load to the others

    async def wait_loads(self) -> None:
        await asyncio.gather(*self._loads.values(), return_exceptions=True)

    def _start(self, key: K, arg: A) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(self._fetch(key, arg))
        self._loads[key] = task
        task.add_done_callback(functools.partial(self._finished, key))
        return task

    def _finished(self, key: K, task: asyncio.Task[T]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("key cache load failed: %r", error)

    async def _fetch(self, key: K, arg: A) -> T:
        while True:
            generation, started = self.generation, self._clock()
            value = await to_thread.run_sync(self._load, arg)
            with self._lock:
                if generation == self.generation:  # the TTL counts from before the read
                    self._put(key, value, started)
                    return value

    def _put(self, key: K, value: T, loaded_at: float) -> None:
        entries = self.entries
        entries.pop(key, None)
        while len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        ttl = self._ttl
        entries[key] = (loaded_at + ttl * REFRESH_AFTER, loaded_at + ttl, (value,))


class KeyCache(Generic[V]):
    """Identities by digest (for verification) and views of them (introspection).

    ``load_view`` turns a verified identity into whatever the introspection routes
    show (read from the database); views are dropped with their key or org.
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
        self._identities: _Table[str, str, KeyIdentity | None] = _Table(
            load_identity, ttl=ttl, max_entries=max_entries, clock=clock, lock=self._lock
        )
        self._views: _Table[int, KeyIdentity, tuple[int, V]] = _Table(
            lambda identity: (identity.org_id, load_view(identity)),
            ttl=ttl,
            max_entries=max_entries,
            clock=clock,
            lock=self._lock,
        )

    def peek(self, digest: str) -> tuple[KeyIdentity | None] | None:
        """The boxed identity for ``digest`` when in memory (None inside: no such key)."""
        return self._identities.peek(digest, digest)

    async def identity(self, digest: str) -> KeyIdentity | None:
        """The identity for ``digest``: from memory, else loaded in a worker thread."""
        return await self._identities.get(digest, digest)

    async def view(self, identity: KeyIdentity) -> V:
        """The view of a verified key, cached like identities."""
        boxed = self._views.peek(identity.key_id, identity)
        if boxed is not None:
            return boxed[0][1]
        return (await self._views.get(identity.key_id, identity))[1]

    async def aclose(self) -> None:
        """Wait for loads in flight (at shutdown)."""
        await self._identities.wait_loads()
        await self._views.wait_loads()

    # -- invalidation -----------------------------------------------------------

    def invalidate(self, event: Event) -> None:
        """Drop what ``event`` may have changed. Safe to call from any thread."""
        with self._lock:
            self._identities.generation += 1
            self._views.generation += 1
            if isinstance(event, KeyChanged):
                for digest in event.digests:
                    self._identities.entries.pop(digest, None)
                self._views.entries.pop(event.key_id, None)
            elif isinstance(event, OrgChanged):
                self._drop_org(event.org_id)

    def clear(self) -> None:
        """Forget everything (e.g. after missing invalidations while disconnected)."""
        with self._lock:
            for table in (self._identities, self._views):
                table.generation += 1
                table.entries.clear()

    def _drop_org(self, org_id: int) -> None:
        identities = self._identities.entries
        for digest, (_, _, (identity,)) in list(identities.items()):
            if identity is not None and identity.org_id == org_id:
                del identities[digest]
        views = self._views.entries
        for key_id, (_, _, ((view_org_id, _view),)) in list(views.items()):
            if view_org_id == org_id:
                del views[key_id]

    def __len__(self) -> int:
        return len(self._identities.entries)


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
        self._known = cache.peek
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
        return check(await self.cache.identity(found.digest), found.digest, self._clock)
