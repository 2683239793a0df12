"""Write-behind for ``last_used_at`` / ``last_used_ip``: never one write per request.

The gateway calls ``note`` (a dictionary assignment) on every admitted request. Uses
are kept to the second: finer would tell nobody anything, and it lets ``keys/self``
render its last-use fields once per second rather than once per request.
``run`` flushes the latest use per key in one transaction every ``interval``
seconds, or sooner once ``max_pending`` keys wait; ``aclose`` flushes what is
left, so a clean shutdown loses nothing. A failed flush keeps its batch for the
next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from anyio import to_thread

from keyrack.services import keys
from keyrack.services.context import Context

log = logging.getLogger(__name__)

Use = tuple[datetime, str | None]


class LastUsedBuffer:
    def __init__(
        self, ctx: Context, *, interval: float | None = None, max_pending: int = 1000
    ) -> None:
        self._ctx = ctx
        self.interval = interval if interval is not None else ctx.settings.last_used_flush_seconds
        self.max_pending = max_pending
        self._pending: dict[int, Use] = {}
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()

    def note(self, key_id: int, at: datetime, ip: str | None) -> None:
        """Remember a use, to the second (event loop only; cheap)."""
        self._pending[key_id] = (at.replace(microsecond=0), ip)
        if len(self._pending) >= self.max_pending:
            self._full.set()

    def pending(self, key_id: int) -> Use | None:
        """The latest use of ``key_id`` not yet written, if any."""
        return self._pending.get(key_id)

    async def flush(self) -> int:
        """Write every pending use now; returns how many keys were written."""
        async with self._flushing:
            batch, self._pending = self._pending, {}
            self._full.clear()
            if not batch:
                return 0
            try:
                await to_thread.run_sync(keys.record_last_used, self._ctx, batch)
            except Exception:
                log.exception(
                    "last-used flush failed; keeping %d uses for the next one", len(batch)
                )
                for key_id, use in batch.items():
                    newer = self._pending.get(key_id)
                    if newer is None or newer[0] < use[0]:
                        self._pending[key_id] = use
                return 0
            return len(batch)

    async def run(self) -> None:
        """Flush by interval or size until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), timeout=self.interval)
            await self.flush()

    async def aclose(self) -> None:
        """The final flush, at shutdown."""
        await self.flush()
