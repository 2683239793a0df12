"""Cache invalidation across instances: bus events relayed over Redis pub/sub.

``RedisPublisher`` is an ``EventBus`` subscriber: after a service commits, it
publishes the event on one channel. ``RedisListener`` runs in each server and
applies other instances' events to its ``KeyCache``. While the listener is not
subscribed (Redis down, reconnecting) events can be missed, so it clears the
cache on every (re)subscription; the cache TTL bounds staleness meanwhile.
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
        channel: str = CHANNEL,
        also: Callable[[Event | None], None] | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._also = also
        """Told of each event applied (None: on (re)subscribing), e.g. the imported digests."""
        self._origin = origin
        self._channel = channel
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        attempt = 0
                        self._handle(message)
            except (redis.RedisError, OSError) as exc:
                self.subscribed.clear()
                delay = _RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)]
                attempt += 1
                log.warning("cache invalidation channel lost, retrying in %ss: %r", delay, exc)
                await asyncio.sleep(delay)

    def _handle(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self._cache.clear()  # whatever happened while we were not listening
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
