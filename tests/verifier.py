"""The server's key verifier for synchronous tests, reading the database on every call."""

from __future__ import annotations

import asyncio

from keyrack.cache.imported import ImportedDigests
from keyrack.cache.keycache import CachedVerifier, KeyCache
from keyrack.domain.verification import Clock, Verdict
from keyrack.services import key_import, keys
from keyrack.services.context import Context


class Verifier:
    """``CachedVerifier`` (the code that serves requests) over a cache that keeps nothing,
    so each verdict is the database's now, at ``clock`` (``ctx.clock`` by default).

    With ``imports``, each call first reads the imported keys' digests, as a server does
    at startup (one more query)."""

    def __init__(self, ctx: Context, clock: Clock | None = None, *, imports: bool = False) -> None:
        self._ctx = ctx
        self._clock = clock or ctx.clock
        self._imports = imports

    def verify(self, presented: str) -> Verdict:
        cache: KeyCache[None] = KeyCache(
            lambda digest: keys.find_identity(self._ctx, digest), lambda _: None, ttl=0
        )

        async def run() -> Verdict:
            imported = ImportedDigests(lambda after: key_import.imported_since(self._ctx, after))
            if self._imports:
                await imported.refresh()
            return await CachedVerifier(cache, self._clock, imported=imported).verify(presented)

        return asyncio.run(run())
