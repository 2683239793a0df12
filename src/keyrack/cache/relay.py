"""Cache invalidation across instances: bus events relayed over Redis pub/sub.

``RedisPublisher`` is an ``EventBus`` subscriber: after a service commits, it
publishes the event on one channel. ``RedisListener`` runs in each server and
applies other instances' events to its ``KeyCache``. While it is subscribed every
change reaches the cache, so entries live the long ``live_ttl`` (a safety bound,
minutes). When the subscription is lost (Redis down, the connection killed) events
can be missed: the cache is flushed and entries live the short ``fallback_ttl``
(1 s) until the listener is subscribed again, when it is flushed once more. A quiet
channel is pinged twice a second, so a partition that leaves the socket open is
noticed within ``SILENT_SECONDS`` too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from keyrack.cache.keycache import KeyCache
from keyrack.domain.events import Event, KeyChanged, OrgChanged

log = logging.getLogger(__name__)

CHANNEL = "keyrack:events"
_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
HEARTBEAT_SECONDS = 0.5
SILENT_SECONDS = 1.5
"""A subscription this long without any message (not even a pong) is taken as lost."""


def encode(event: Event, origin: str) -> str:
    if isinstance(event, KeyChanged):
        return json.dumps({"origin": origin, "key_id": event.key_id, "digests": event.digests})
    return json.dumps({"origin": origin, "org_id": event.org_id})


def decode(data: bytes | str) -> tuple[str, Event] | None:
    """``(origin, event)`` of a relayed message, or None if it is not one."""
    try:
        message = json.loads(data)
        origin = str(message["origin"])
        if "org_id" in message:
            return origin, OrgChanged(int(message["org_id"]))
        digests = tuple(str(d) for d in message["digests"])
        return origin, KeyChanged(int(message["key_id"]), digests)
    except (ValueError, KeyError, TypeError):
        return None


class RedisPublisher:
    """Publishes bus events to ``channel`` (sync: services run in worker threads or CLIs)."""

    def __init__(self, url: str, *, origin: str | None = None, channel: str = CHANNEL) -> None:
        self.origin = origin or uuid.uuid4().hex
        self.channel = channel
        self._client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._closed = False

    def __call__(self, event: Event) -> None:
        if self._closed:
            return
        try:
            self._client.publish(self.channel, encode(event, self.origin))
        except redis.RedisError as exc:
            log.warning("could not relay %s; other instances rely on the cache TTL: %r", event, exc)

    def close(self) -> None:
        """Stop publishing (the bus keeps its subscribers) and close the connection."""
        self._closed = True
        self._client.close()


class RedisListener:
    """Applies events published by other instances to ``cache`` until cancelled."""

    def __init__(
        self,
        client: AsyncRedis,
        cache: KeyCache[Any],
        *,
        origin: str,
        live_ttl: float,
        fallback_ttl: float,
        channel: str = CHANNEL,
        also: Callable[[Event | None], None] | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._also = also
        """Told of each event applied (None: when the subscription comes or goes), e.g. the
        imported digests."""
        self._origin = origin
        self._live_ttl = live_ttl
        self._fallback_ttl = fallback_ttl
        self._channel = channel
        self.subscribed = asyncio.Event()
        self.losses = 0
        """How many times the subscription was lost (and the cache flushed)."""
        self._attempt = 0

    async def run(self) -> None:
        self._attempt = 0
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    await self._listen(pubsub)
                error: Exception = ConnectionError("subscription ended")
            except (redis.RedisError, OSError) as exc:
                error = exc
            self._lost()
            delay = _RETRY_SECONDS[min(self._attempt, len(_RETRY_SECONDS) - 1)]
            self._attempt += 1
            log.warning("cache invalidation channel lost, retrying in %ss: %r", delay, error)
            await asyncio.sleep(delay)

    async def _listen(self, pubsub: Any) -> None:
        """Handle messages; a quiet channel is pinged every ``HEARTBEAT_SECONDS``, and one
        that stays silent for ``SILENT_SECONDS`` counts as lost (a partition leaves the
        socket open, with nothing coming through it)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
            now = loop.time()
            if message is not None:
                heard = now
                self._attempt = 0
                self._handle(message)
            elif now - heard > SILENT_SECONDS:
                raise ConnectionError(f"no answer from Redis in {SILENT_SECONDS}s")
            else:
                await pubsub.ping()

    def _lost(self) -> None:
        """Events may be missed from now on: flush, and fall back to the short TTL."""
        self.losses += 1
        self.subscribed.clear()
        self._cache.set_ttl(self._fallback_ttl)
        if self._also is not None:
            self._also(None)

    def _handle(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # whatever happened while we were not listening is flushed with the short TTL
            self._cache.set_ttl(self._live_ttl)
            if self._also is not None:
                self._also(None)
            self.subscribed.set()
        elif kind == "message":
            data = message.get("data")
            decoded = decode(data) if isinstance(data, bytes | str) else None
            if decoded is not None and decoded[0] != self._origin:
                self._cache.invalidate(decoded[1])
                if self._also is not None:
                    self._also(decoded[1])
