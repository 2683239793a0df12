"""The verification cache: key identities by digest, and key views by id, in memory.

A hit is a dictionary read: no database, no thread hop. Entries live ``ttl``
seconds; ``KeyChanged`` / ``OrgChanged`` events (from this process's bus, and from
other instances through ``keyrack.cache.relay``) drop them at once. Unknown
digests are cached too (as None), so garbage that passes the checksum cannot
turn into one database query per request.

Reads happen on the event loop without a lock; loads and invalidations may come
from worker threads and take ``_lock``. A load that raced an invalidation is not
stored (generation check), so a stale row can never outlive the event that
voided it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from anyio import to_thread

from keyrack.domain import keys as keyformat
from keyrack.domain.verification import MALFORMED, Clock, KeyIdentity, KeyVerifier, Verdict
from keyrack.services.events import Event, KeyChanged, OrgChanged

DEFAULT_MAX_ENTRIES = 100_000

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class _Table(Generic[K, T]):
    """A bounded TTL map; oldest insertions are evicted first."""

    def __init__(self, max_entries: int) -> None:
        self.entries: dict[K, tuple[float, T]] = {}
        self.max_entries = max_entries

    def get(self, key: K, now: float) -> tuple[bool, T | None]:
        entry = self.entries.get(key)
        if entry is None or entry[0] <= now:
            return False, None
        return True, entry[1]

    def put(self, key: K, value: T, expires: float) -> None:
        entries = self.entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = (expires, value)


class KeyCache(Generic[V]):
    """Identities (``lookup``, for ``KeyVerifier``) and views of them (introspection).

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
        self._load_identity = load_identity
        self._load_view = load_view
        self.ttl = ttl
        self._clock = clock
        self._identities: _Table[str, KeyIdentity | None] = _Table(max_entries)
        self._views: _Table[int, tuple[int, V]] = _Table(max_entries)
        self._lock = threading.Lock()
        self._generation = 0
        self._loading: dict[str, asyncio.Future[None]] = {}

    # -- identities -------------------------------------------------------------

    def cached(self, digest: str) -> bool:
        """True when ``lookup(digest)`` will be answered from memory."""
        return self._identities.get(digest, self._clock())[0]

    def lookup(self, digest: str) -> KeyIdentity | None:
        """The identity for ``digest``: from memory, else loaded (blocking) and kept."""
        found, identity = self._identities.get(digest, self._clock())
        if found:
            return identity
        generation, started = self._generation, self._clock()
        identity = self._load_identity(digest)
        with self._lock:
            if generation == self._generation:  # the TTL counts from before the read
                self._identities.put(digest, identity, started + self.ttl)
        return identity

    async def preload(self, digest: str) -> None:
        """Load ``digest`` in a worker thread unless cached; concurrent calls share one load."""
        while not self.cached(digest):
            pending = self._loading.get(digest)
            if pending is None:
                await self._load(digest)
                return
            await asyncio.wait((pending,))

    async def _load(self, digest: str) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[digest] = done
        try:
            await to_thread.run_sync(self.lookup, digest)
        finally:
            del self._loading[digest]
            done.set_result(None)

    # -- views ------------------------------------------------------------------

    async def view(self, identity: KeyIdentity) -> V:
        """The view of a verified key, cached like identities (loaded in a worker thread)."""
        found, entry = self._views.get(identity.key_id, self._clock())
        if found and entry is not None:
            return entry[1]
        generation, started = self._generation, self._clock()
        view = await to_thread.run_sync(self._load_view, identity)
        with self._lock:
            if generation == self._generation:
                self._views.put(identity.key_id, (identity.org_id, view), started + self.ttl)
        return view

    # -- invalidation -----------------------------------------------------------

    def invalidate(self, event: Event) -> None:
        """Drop what ``event`` may have changed. Safe to call from any thread."""
        with self._lock:
            self._generation += 1
            if isinstance(event, KeyChanged):
                for digest in event.digests:
                    self._identities.entries.pop(digest, None)
                self._views.entries.pop(event.key_id, None)
            elif isinstance(event, OrgChanged):
                self._drop_org(event.org_id)

    def clear(self) -> None:
        """Forget everything (e.g. after missing invalidations while disconnected)."""
        with self._lock:
            self._generation += 1
            self._identities.entries.clear()
            self._views.entries.clear()

    def _drop_org(self, org_id: int) -> None:
        identities = self._identities.entries
        for digest, (_, identity) in list(identities.items()):
            if identity is not None and identity.org_id == org_id:
                del identities[digest]
        views = self._views.entries
        for key_id, (_, (view_org_id, _view)) in list(views.items()):
            if view_org_id == org_id:
                del views[key_id]

    def __len__(self) -> int:
        return len(self._identities.entries)


class CachedVerifier:
    """``KeyVerifier`` over a ``KeyCache`` for async callers (the gateway, ``keys/verify``).

    A hit is answered on the event loop; a miss is loaded once in a worker thread
    (concurrent misses for one digest share the load). ``on_miss`` is told of each.
    """

    def __init__(
        self, cache: KeyCache[Any], clock: Clock, *, on_miss: Callable[[], None] | None = None
    ) -> None:
        self.cache = cache
        self._verifier = KeyVerifier(cache.lookup, clock)
        self._on_miss = on_miss

    async def verify(self, presented: str) -> Verdict:
        """The verdict for ``presented``; raises only if the database cannot be read."""
        if not keyformat.is_well_formed(presented):
            return MALFORMED
        wanted = keyformat.digest(presented)
        if not self.cache.cached(wanted):
            if self._on_miss is not None:
                self._on_miss()
            await self.cache.preload(wanted)
        return self._verifier.verify_digest(wanted)
