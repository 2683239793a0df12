"""Write-behind for ``last_used_at`` / ``last_used_ip`` and usage analytics: never one
write per request.

The gateway calls ``note`` (a dictionary assignment) on every admitted request, and
``count`` on every request made with a known key (admitted or refused). Uses are kept
to the second: finer would tell nobody anything, and it lets ``keys/self`` render its
last-use fields once per second rather than once per request. Counts are tallied per
key and minute (``keyrack.domain.usage``). ``run`` flushes both every ``interval``
seconds, or sooner once ``max_pending`` keys wait: the latest use per key with one
statement per few hundred keys, the tallies with one upsert per few hundred rows.
``aclose`` flushes what is left, so a clean shutdown loses nothing. A failed flush
keeps its batch for the next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from anyio import to_thread

from keyrack.domain import usage
from keyrack.services import key_usage, keys
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
        self._tallies: dict[tuple[int, int], list[int]] = {}
        """(key id, minute since the epoch) → tally."""
        self._problems: dict[tuple[int, int, str], int] = {}
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()

    def note(self, key_id: int, at: datetime, ip: str | None) -> None:
        """Remember a use, to the second (event loop only; cheap)."""
        self._pending[key_id] = (at.replace(microsecond=0), ip)
        if len(self._pending) >= self.max_pending:
            self._full.set()

    def count(
        self, key_id: int, minute: int, status: int, code: str | None, seconds: float
    ) -> None:
        """Tally one request of ``key_id`` in ``minute`` (since the epoch): its status,
        4xx problem code if any, and latency (event loop only; cheap)."""
        tallies = self._tallies.get((key_id, minute))
        if tallies is None:
            tallies = self._tallies[(key_id, minute)] = usage.new_tally()
            if len(self._tallies) >= self.max_pending:
                self._full.set()
        usage.tally(tallies, status, seconds)
        if code is not None:
            problem = (key_id, minute, code)
            self._problems[problem] = self._problems.get(problem, 0) + 1

    def pending(self, key_id: int) -> Use | None:
        """The latest use of ``key_id`` not yet written, if any."""
        return self._pending.get(key_id)

    async def flush(self) -> int:
        """Write every pending use and tally now; returns how many keys' uses were written."""
        async with self._flushing:
            batch, self._pending = self._pending, {}
            tallies, self._tallies = self._tallies, {}
            problems, self._problems = self._problems, {}
            self._full.clear()
            if not batch and not tallies:
                return 0
            try:
                await to_thread.run_sync(self._write, batch, tallies, problems)
            except Exception:
                log.exception(
                    "write-behind flush failed; keeping %d uses and %d tallies for the next one",
                    len(batch),
                    len(tallies),
                )
                self._keep(batch, tallies, problems)
                return 0
            return len(batch)

    def _write(
        self,
        batch: dict[int, Use],
        tallies: dict[tuple[int, int], list[int]],
        problems: dict[tuple[int, int, str], int],
    ) -> None:
        keys.record_last_used(self._ctx, batch)
        minutes: dict[int, datetime] = {}

        def at(minute: int) -> datetime:
            found = minutes.get(minute)
            if found is None:
                found = minutes[minute] = datetime.fromtimestamp(minute * 60, UTC)
            return found

        try:
            key_usage.record(
                self._ctx,
                {(key_id, at(minute)): counts for (key_id, minute), counts in tallies.items()},
                {(key_id, at(minute), code): n for (key_id, minute, code), n in problems.items()},
            )
        except Exception:
            batch.clear()  # written: only the tallies are kept for the next attempt
            raise

    def _keep(
        self,
        batch: dict[int, Use],
        tallies: dict[tuple[int, int], list[int]],
        problems: dict[tuple[int, int, str], int],
    ) -> None:
        for key_id, use in batch.items():
            newer = self._pending.get(key_id)
            if newer is None or newer[0] < use[0]:
                self._pending[key_id] = use
        for where, counts in tallies.items():
            kept = self._tallies.setdefault(where, usage.new_tally())
            usage.add(kept, counts)
        for problem, n in problems.items():
            self._problems[problem] = self._problems.get(problem, 0) + n

    async def run(self) -> None:
        """Flush by interval or size until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), timeout=self.interval)
            await self.flush()

    async def aclose(self) -> None:
        """The final flush, at shutdown."""
        await self.flush()
