"""The server's key verifier for synchronous tests, reading the database on every call."""

from __future__ import annotations

import asyncio

from keyrack.cache.keycache import CachedVerifier, KeyCache
from keyrack.domain.verification import Clock, Verdict
from keyrack.services import keys
from keyrack.services.context import Context


class Verifier:
    """``CachedVerifier`` (the code that serves requests) over a cache that keeps nothing,
    so each verdict is the database's now, at ``clock`` (``ctx.clock`` by default)."""

    def __init__(self, ctx: Context, clock: Clock | None = None) -> None:
        self._ctx = ctx
        self._clock = clock or ctx.clock

    def verify(self, presented: str) -> Verdict:
        cache: KeyCache[None] = KeyCache(
            lambda digest: keys.find_identity(self._ctx, digest), lambda _: None, ttl=0
        )
        return asyncio.run(CachedVerifier(cache, self._clock).verify(presented))
