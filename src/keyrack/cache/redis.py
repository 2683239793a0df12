"""Throttling shared by every instance through Redis: one Lua script, one round trip.

Each bucket owns two keys, hash-tagged so they share a cluster slot:
``<prefix>{<bucket>}:tokens`` (hash: ``tokens`` in millionths, ``stamp`` in µs) and
``<prefix>{<bucket>}:leases`` (sorted set: lease id scored by its expiry in µs).
Both carry TTLs, so idle buckets vanish on their own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis

from keyrack.cache.base import CONCURRENCY_RETRY_SECONDS, DEFAULT_LEASE_SECONDS, MICRO
from keyrack.domain.limits import Admission, Decision, RateLimitPolicy

log = logging.getLogger(__name__)

_TTL_SLACK_MS = 1000
"""Kept beyond the exact idle horizon, for callers that inject their own clock."""

# KEYS[1] token hash, KEYS[2] lease zset.
# ARGV: rate, concurrency, lease µs, new lease id, now µs ('' = Redis TIME),
#       then ids of leases this caller released whose ZREM may still be in flight.
# Returns {decision, remaining whole tokens, reset µs (0 when concurrency-limited)};
# decision 0 = allowed, 1 = concurrency-limited, 2 = rate-limited.
_ACQUIRE = f"""
local rate = tonumber(ARGV[1])
local concurrency = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * {MICRO} + tonumber(time[2])
end
if #ARGV > 5 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 6))
end

local capacity = rate * {MICRO}
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens, stamp = capacity, now
end
-- clamped: a bucket is full one second after its last admission anyway
local elapsed = math.min(math.max(now - stamp, 0), {MICRO})
tokens = math.min(capacity, tokens + elapsed * rate)

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= concurrency then
  return {{1, math.floor(tokens / {MICRO}), 0}}
end
if tokens < {MICRO} then
  return {{2, 0, math.ceil(({MICRO} - tokens) / rate)}}
end

tokens = tokens - {MICRO}
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', math.max(stamp, now))
redis.call('PEXPIRE', KEYS[1], {1000 + _TTL_SLACK_MS})
redis.call('ZADD', KEYS[2], now + lease_us, ARGV[4])
redis.call('PEXPIRE', KEYS[2], math.ceil(lease_us / 1000) + {_TTL_SLACK_MS})
return {{0, math.floor(tokens / {MICRO}), math.ceil((capacity - tokens) / rate)}}
"""

_DECISIONS = (Decision.ALLOWED, Decision.CONCURRENCY_LIMITED, Decision.RATE_LIMITED)


class RedisLimiter:
    """Limiter whose limits hold across every process sharing ``redis``.

    The caller owns ``redis`` and closes it after ``aclose``. Time comes from Redis
    ``TIME`` so instances on different hosts agree; ``clock`` (seconds, shared by
    every instance on the bucket) replaces it, which tests use to move time by hand.
    ``acquire`` raises ``redis.RedisError`` when Redis fails; the caller decides
    whether to fail open or closed.
    """

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        prefix: str = "keyrack:limit:",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._redis = redis
        self._script = redis.register_script(_ACQUIRE)
        self._lease_us = math.ceil(lease_seconds * MICRO)
        self._prefix = prefix
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._releasing: dict[str, set[str]] = {}
        """Lease key -> ids whose ZREM is in flight; the next acquire removes them too,
        so a release is never overtaken by this instance's following acquire."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        key = f"{self._prefix}{{{bucket}}}"
        leases_key = f"{key}:leases"
        lease = uuid.uuid4().hex
        now = "" if self._clock is None else round(self._clock() * MICRO)
        released = self._releasing.get(leases_key, ())
        result = await self._script(
            keys=(f"{key}:tokens", leases_key),
            args=(
                policy.rate_per_second,
                policy.concurrency,
                self._lease_us,
                lease,
                now,
                *released,
            ),
        )
        code, remaining, reset_us = cast(list[int], result)
        decision = _DECISIONS[code]
        if decision is Decision.CONCURRENCY_LIMITED:
            return Admission(decision, remaining, CONCURRENCY_RETRY_SECONDS, policy)
        return Admission(
            decision,
            remaining,
            reset_us / MICRO,
            policy,
            lease if decision is Decision.ALLOWED else None,
        )

    def release(self, bucket: str, lease: str) -> None:
        """Schedule the ZREM and return at once; a lost release expires after lease_seconds."""
        leases_key = f"{self._prefix}{{{bucket}}}:leases"
        self._releasing.setdefault(leases_key, set()).add(lease)
        task = asyncio.get_running_loop().create_task(self._zrem(leases_key, lease))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._released, leases_key, lease))

    async def aclose(self) -> None:
        """Wait for scheduled releases; does not close the Redis client."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _zrem(self, leases_key: str, lease: str) -> None:
        await self._redis.zrem(leases_key, lease)

    def _released(self, leases_key: str, lease: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        pending = self._releasing.get(leases_key)
        if pending is not None:
            pending.discard(lease)
            if not pending:
                del self._releasing[leases_key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("lease release failed, it will expire by itself: %r", error)
