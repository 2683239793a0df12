"""The digests of imported secrets, held in memory by every instance.

An imported key (``POST /api/v2/keys/import``) lacks the ``kr_`` shape, so the
shape check cannot tell it from garbage. Instead every instance holds the set of
imported digests: a presented string whose digest is not in it, and that is not
``kr_``-shaped, is refused without a lookup (``keyrack.domain.verification.verify``).

The set is read whole at startup, then grows by what was imported since the highest
id seen: at once when ``poke`` is called (by this process's bus after a key change,
and by the relay for other instances' changes and whenever its subscription comes or
goes, ``keyrack.cache.relay``), and otherwise every ``interval()`` seconds: the key
cache's TTL, so 1 s without a live relay and minutes with one, when a refresh could
only find what a poke already brought. Imported digests are never
taken out: one whose key is gone only costs a lookup, which says why it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence

from anyio import to_thread

log = logging.getLogger(__name__)

Load = Callable[[int], Sequence[tuple[int, str]]]
"""``(id, digest)`` of the imported secrets with an id above the one given."""


REFRESH_SECONDS = 1.0


class ImportedDigests:
    def __init__(
        self, load: Load, *, interval: Callable[[], float] = lambda: REFRESH_SECONDS
    ) -> None:
        self._load = load
        self.interval = interval
        self._digests: set[str] = set()
        self._after = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refreshing = asyncio.Lock()

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, digests: Iterable[str]) -> None:
        """Know these digests now (the importing instance, right after its commit)."""
        self._digests.update(digests)

    async def refresh(self) -> int:
        """Read what was imported since the last read; returns how many are new."""
        async with self._refreshing:
            rows = await to_thread.run_sync(self._load, self._after)
            before = len(self._digests)
            for row_id, digest in rows:
                self._digests.add(digest)
                self._after = max(self._after, row_id)
            return len(self._digests) - before

    async def start(self) -> None:
        """The first read, before serving; a failure is logged and ``run`` retries."""
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("serving before the imported key digests could be read: %r", exc)

    def poke(self, event: object = None) -> None:
        """Refresh soon (safe from any thread; ``event`` is ignored: a bus subscriber)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """Refresh every ``interval()`` seconds, or when poked, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval())
            wake.clear()
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("could not read imported key digests: %r", exc)
