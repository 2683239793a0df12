"""Throttling shared by every instance through Redis: one Lua script per acquire.

Each bucket owns two keys, hash-tagged so they share a cluster slot:
``<prefix>{<bucket>}:tokens`` (hash: ``tokens`` in millionths, ``stamp`` in µs) and
``<prefix>{<bucket>}:leases`` (sorted set: lease id scored by its expiry in µs).
Both carry TTLs, so idle buckets vanish on their own.

Releases cost no round trip of their own when they can help it: a released lease id
waits (at most ``_FLUSH_SECONDS``) in a queue; the next acquire on the same bucket
carries it to its script, and whatever is still queued when the timer fires goes out
in one pipeline with one ``ZREM`` per bucket. Likewise the acquires made in one
event-loop tick (concurrent requests) share one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import secrets
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from keyrack.cache.base import CONCURRENCY_RETRY_SECONDS, DEFAULT_LEASE_SECONDS, MICRO
from keyrack.domain.limits import Admission, Decision, RateLimitPolicy

log = logging.getLogger(__name__)

_TTL_SLACK_MS = 1000
"""Kept beyond the exact idle horizon, for callers that inject their own clock."""

DEFAULT_TIMEOUT_SECONDS = 1.0
"""How long one round trip (a tick's pipelined calls) may take before it fails with
``TimeoutError``; one timer per round trip, so the client needs no per-command
``socket_timeout``."""

_FLUSH_SECONDS = 0.001
"""How long a release may wait for an acquire on its bucket to carry it to Redis."""

# KEYS[1] token hash, KEYS[2] lease zset.
# ARGV: rate, concurrency, lease µs, new lease id, now µs ('' = Redis TIME),
#       then, optionally, the space-separated ids of leases this caller released that
#       may still be in Redis (one argument, however many: cheap to encode).
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
if ARGV[6] then
  local released = {{}}
  for id in string.gmatch(ARGV[6], '%S+') do
    released[#released + 1] = id
    if #released == 1000 then  -- unpack() has a stack limit
      redis.call('ZREM', KEYS[2], unpack(released))
      released = {{}}
    end
  end
  if #released > 0 then
    redis.call('ZREM', KEYS[2], unpack(released))
  end
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

_HEAD_ARGUMENTS = 8
"""EVALSHA, sha, key count, two keys, rate, concurrency, lease µs."""
_MAX_HEADS = 10_000


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


_DECISIONS = (Decision.ALLOWED, Decision.CONCURRENCY_LIMITED, Decision.RATE_LIMITED)


class RedisLimiter:
    """Limiter whose limits hold across every process sharing ``redis``.

    The caller owns ``redis`` and closes it after ``aclose``. Time comes from Redis
    ``TIME`` so instances on different hosts agree; ``clock`` (seconds, shared by
    every instance on the bucket) replaces it, which tests use to move time by hand.
    ``acquire`` raises ``redis.RedisError`` when Redis fails, or ``TimeoutError`` when
    it takes over ``timeout`` seconds to answer; the caller decides whether to fail
    open or closed.
    """

    def __init__(
        self,
        redis: Redis,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        prefix: str = "keyrack:limit:",
        clock: Callable[[], float] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._timeout = timeout
        self._redis = redis
        self._sha = hashlib.sha1(_ACQUIRE.encode(), usedforsecurity=False).hexdigest()
        self._lease_us = math.ceil(lease_seconds * MICRO)
        self._prefix = prefix
        self._clock = clock
        self._lease_prefix = secrets.token_hex(8) + ":"
        """Lease ids are this (random per instance) plus a counter: unique, and cheap."""
        self._lease_ids = itertools.count()
        self._queued: dict[str, list[str]] = {}
        """Lease key -> released ids not sent yet."""
        self._sending: dict[str, set[str]] = {}
        """Lease key -> released ids sent but not confirmed; every acquire on the bucket
        removes them too, so a release is never overtaken by this instance's own
        following acquire."""
        self._heads: dict[tuple[str, int, int], tuple[str, bytes]] = {}
        """(bucket, rate, concurrency) -> (lease key, packed command head)."""
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        """At most one of the two is set: the flush is scheduled, or running."""
        self._calls: list[tuple[bytes, asyncio.Future[object]]] | None = None
        """Script calls made in this event-loop tick, sent together at its end."""
        self._call_tasks: set[asyncio.Task[None]] = set()
        """Tasks sending a tick's script calls (held so they are not collected)."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        leases_key, packed = self._command_head(bucket, policy)
        lease = f"{self._lease_prefix}{next(self._lease_ids):x}"
        now = b"" if self._clock is None else b"%d" % round(self._clock() * MICRO)
        args = [packed, _bulk(lease.encode()), _bulk(now)]
        sending = self._sending.get(leases_key)
        carried = self._queued.pop(leases_key, None)
        if sending or carried:
            args.append(_bulk(" ".join(itertools.chain(sending or (), carried or ())).encode()))
        command = b"*%d\r\n%s" % (len(args) + _HEAD_ARGUMENTS - 1, b"".join(args))
        if carried is None:
            result = await self._evalsha(command)
        else:
            self._mark_sending(leases_key, carried)
            try:
                result = await self._evalsha(command)
            except BaseException:
                self._enqueue(leases_key, carried)
                raise
            finally:
                self._mark_sent(leases_key, carried)
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
        """Queue the lease for removal and return at once; it reaches Redis within about
        ``_FLUSH_SECONDS`` (plus one round trip), and a lost one expires after
        lease_seconds."""
        self._enqueue(f"{self._prefix}{{{bucket}}}:leases", [lease])

    async def aclose(self) -> None:
        """Send every queued release and wait for it; does not close the Redis client."""
        while True:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._flusher is not None:
                await asyncio.wait((self._flusher,))
            elif self._queued:
                self._start_flush()
            else:
                return

    def _command_head(self, bucket: str, policy: RateLimitPolicy) -> tuple[str, bytes]:
        """The bucket's lease key, and its EVALSHA command packed up to the lease id."""
        head_key = (bucket, policy.rate_per_second, policy.concurrency)
        found = self._heads.get(head_key)
        if found is None:
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            key = f"{self._prefix}{{{bucket}}}"
            parts = (
                "EVALSHA",
                self._sha,
                "2",
                key + ":tokens",
                key + ":leases",
                str(policy.rate_per_second),
                str(policy.concurrency),
                str(self._lease_us),
            )
            found = self._heads[head_key] = (
                key + ":leases",
                b"".join(_bulk(part.encode()) for part in parts),
            )
        return found

    async def _evalsha(self, command: bytes) -> object:
        """Run the acquire script (``command``: packed EVALSHA). Calls made in the same
        event-loop tick share one pipelined round trip."""
        loop = asyncio.get_running_loop()
        call: asyncio.Future[object] = loop.create_future()
        if self._calls is None:
            self._calls = []
            loop.call_soon(self._send_calls)
        self._calls.append((command, call))
        return await call

    def _send_calls(self) -> None:
        calls, self._calls = self._calls or [], None
        task = asyncio.get_running_loop().create_task(self._answer(calls))
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    async def _answer(self, calls: list[tuple[bytes, asyncio.Future[object]]]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._run_scripts([command for command, _ in calls])
        except Exception as error:
            results = [error] * len(calls)
        except BaseException:
            for _, call in calls:
                call.cancel()
            raise
        for (_, call), result in zip(calls, results, strict=True):
            if call.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                call.set_exception(result)
            else:
                call.set_result(result)

    async def _run_scripts(self, batch: list[bytes]) -> list[object]:
        """One result (or ResponseError) per call, loading the script if Redis lost it."""
        results = await self._send_commands(batch)
        missing = [n for n, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self._redis.script_load(_ACQUIRE)  # the same script, so the same sha
            retried = await self._send_commands([batch[n] for n in missing])
            for n, result in zip(missing, retried, strict=True):
                results[n] = result
        return results

    async def _send_commands(self, batch: list[bytes]) -> list[object]:
        """Write packed commands at once on one connection and read their replies in order.

        The commands are packed by ``acquire`` (most of each cached per bucket): redis-py
        packing arguments one by one cost more than the rest of the call."""
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join(batch), check_health=False)
            results: list[object] = []
            for _ in batch:
                try:
                    results.append(await connection.read_response())
                except ResponseError as error:
                    results.append(error)
            return results
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    def _enqueue(self, leases_key: str, leases: list[str]) -> None:
        queued = self._queued.get(leases_key)
        if queued is None:
            self._queued[leases_key] = leases
        else:
            queued.extend(leases)
        if self._timer is None and self._flusher is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(_FLUSH_SECONDS, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._queued:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Send everything queued: one ZREM per bucket, all in one round trip."""
        batch, self._queued = self._queued, {}
        for leases_key, leases in batch.items():
            self._mark_sending(leases_key, leases)
        try:
            async with asyncio.timeout(self._timeout):
                if len(batch) == 1:
                    [(leases_key, leases)] = batch.items()
                    await self._redis.zrem(leases_key, *leases)
                else:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for leases_key, leases in batch.items():
                            pipe.zrem(leases_key, *leases)
                        await pipe.execute()
        except Exception as error:
            log.warning("lease release failed, the leases will expire by themselves: %r", error)
        finally:
            for leases_key, leases in batch.items():
                self._mark_sent(leases_key, leases)
            self._flusher = None
            if self._queued:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(_FLUSH_SECONDS, self._start_flush)

    def _mark_sending(self, leases_key: str, leases: list[str]) -> None:
        sending = self._sending.get(leases_key)
        if sending is None:
            self._sending[leases_key] = set(leases)
        else:
            sending.update(leases)

    def _mark_sent(self, leases_key: str, leases: list[str]) -> None:
        sending = self._sending.get(leases_key)
        if sending is not None:
            sending.difference_update(leases)
            if not sending:
                del self._sending[leases_key]
