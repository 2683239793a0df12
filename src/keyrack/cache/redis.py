"""Throttling shared by every instance through Redis, taken in grants.

Each bucket owns two keys, hash-tagged so they share a cluster slot:
``<prefix>{<bucket>}:tokens`` (hash: ``tokens`` in millionths, ``stamp`` in µs) and
``<prefix>{<bucket>}:leases`` (sorted set: one member ``<grant>:<n>`` per in-flight
slot held, scored by its expiry in µs). Both carry TTLs, so idle buckets vanish on
their own.

One Lua script does all the work, atomically. It takes a *grant* of ``n`` tokens
and ``n`` in-flight slots from a bucket (fewer if fewer are left, none when the
bucket is rate- or concurrency-limited), and it gives back finished grants: their
slots, and the tokens they did not use. The instance then admits up to ``n``
requests from the grant without a round trip, for at most ``GRANT_SECONDS``. Every
admission anywhere is backed by a token and a slot taken in Redis, so the limits
hold across instances just as with one call per request; a grant only lends a few
of them to one instance for a moment.

Grant sizes adapt per bucket: 1 to begin with (one call per request), doubled each
time a grant is used up (or all its slots are busy) while open, halved each time one
expires with tokens left,
and never more than 1/16 of the bucket's rate or concurrency, so a busy instance
cannot sit on much that another may need. A key at the default 5 requests/second
and 1 in flight always gets grants of one.

Round trips are shared too: the calls made in one event-loop tick go out as one
pipeline, and a finished grant waits (at most ``_FLUSH_SECONDS``) to ride on the
next call for its bucket, or goes out batched with the others.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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

# KEYS[1] token hash, KEYS[2] slot zset.
# ARGV: rate, concurrency, lease µs, grant id, now µs ('' = Redis TIME), n wanted
#       (0: only give back), then optionally the finished grants to give back, one
#       argument: space-separated "<grant>*<slots>*<unused tokens>".
# Returns {decision, remaining whole tokens, reset µs, n granted}; decision 0 =
# granted (or given back only), 1 = concurrency-limited, 2 = rate-limited.
_ACQUIRE = f"""
local rate = tonumber(ARGV[1])
local concurrency = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * {MICRO} + tonumber(time[2])
end
local capacity = rate * {MICRO}
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens, stamp = capacity, now
end
-- clamped: a bucket is full one second after its last grant anyway
tokens = math.min(capacity, tokens + math.min(math.max(now - stamp, 0), {MICRO}) * rate)
stamp = math.max(stamp, now)
local changed = false

if ARGV[7] then
  for grant, slots, unused in string.gmatch(ARGV[7], '([^%s*]+)%*(%d+)%*(%d+)') do
    local removed = 0
    local batch = {{}}
    for n = 1, tonumber(slots) do
      batch[#batch + 1] = grant .. ':' .. n
      if #batch == 1000 then  -- unpack() has a stack limit
        removed = removed + redis.call('ZREM', KEYS[2], unpack(batch))
        batch = {{}}
      end
    end
    if #batch > 0 then
      removed = removed + redis.call('ZREM', KEYS[2], unpack(batch))
    end
    -- only once: a grant given back twice (or expired) has no slots left to remove
    if removed > 0 and tonumber(unused) > 0 then
      tokens = math.min(capacity, tokens + tonumber(unused) * {MICRO})
      changed = true
    end
  end
end

local function save()
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', stamp)
  redis.call('PEXPIRE', KEYS[1], {1000 + _TTL_SLACK_MS})
end

local wanted = tonumber(ARGV[6])
local refusal = nil
if wanted > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local held = redis.call('ZCARD', KEYS[2])
  if held >= concurrency then
    refusal = {{1, math.floor(tokens / {MICRO}), 0, 0}}
  elseif tokens < {MICRO} then
    refusal = {{2, 0, math.ceil(({MICRO} - tokens) / rate), 0}}
  else
    wanted = math.min(wanted, math.floor(tokens / {MICRO}), concurrency - held)
  end
end
if wanted == 0 or refusal then
  if changed then
    save()
  end
  return refusal or {{0, math.floor(tokens / {MICRO}), 0, 0}}
end

tokens = tokens - wanted * {MICRO}
save()
local expiry = now + lease_us
local batch = {{}}
for n = 1, wanted do
  batch[#batch + 1] = expiry
  batch[#batch + 1] = ARGV[4] .. ':' .. n
  if #batch == 1000 then
    redis.call('ZADD', KEYS[2], unpack(batch))
    batch = {{}}
  end
end
if #batch > 0 then
  redis.call('ZADD', KEYS[2], unpack(batch))
end
redis.call('PEXPIRE', KEYS[2], math.ceil(lease_us / 1000) + {_TTL_SLACK_MS})
return {{0, math.floor(tokens / {MICRO}), math.ceil((capacity - tokens) / rate), wanted}}
"""

_HEAD_ARGUMENTS = 8
"""EVALSHA, sha, key count, two keys, rate, concurrency, lease µs."""
_MAX_HEADS = 10_000
"""Bound on the per-bucket memos (packed command heads, grant sizes)."""


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


_DECISIONS = (Decision.ALLOWED, Decision.CONCURRENCY_LIMITED, Decision.RATE_LIMITED)

GRANT_SECONDS = 0.1
"""How long a grant may admit requests; then what it did not use goes back."""
_GRANT_SHARE = 16
"""A grant holds at most 1/16 of its bucket's rate or concurrency."""


@dataclass(slots=True, eq=False)
class _Grant:
    """Tokens and in-flight slots lent by Redis to this instance."""

    id: str
    bucket: str
    policy: RateLimitPolicy
    size: int
    """Slots held in Redis (and tokens taken)."""
    tokens: int
    """Tokens not handed out yet."""
    remaining: int
    """Whole tokens left in the bucket when it was granted."""
    reset_seconds: float
    until: float
    """Monotonic time after which it admits nothing more."""
    out: set[str] = field(default_factory=set)
    """Leases handed out and not released yet."""
    served: int = 0
    open: bool = True
    timer: asyncio.TimerHandle | None = None


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
        grant_seconds: float = GRANT_SECONDS,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._timeout = timeout
        self._grant_seconds = grant_seconds
        self._redis = redis
        self._sha = hashlib.sha1(_ACQUIRE.encode(), usedforsecurity=False).hexdigest()
        self._lease_us = math.ceil(lease_seconds * MICRO)
        self._prefix = prefix
        self._clock = clock
        self._grant_prefix = secrets.token_hex(8) + ":"
        """Grant ids are this (random per instance) plus a counter: unique, and cheap."""
        self._grant_ids = itertools.count()
        self._open: dict[str, _Grant] = {}
        """Bucket -> the grant admitting its requests now."""
        self._held: dict[str, _Grant] = {}
        """Grant id -> every grant not given back yet."""
        self._sizes: dict[str, int] = {}
        """Bucket -> size of its next grant, when more than one."""
        self._granting: dict[str, asyncio.Future[Admission | None]] = {}
        """Bucket -> the grant being taken for it (when bigger than one, callers wait for
        it rather than each taking their own); its result is the refusal, if refused."""
        self._queued: dict[str, tuple[RateLimitPolicy, list[str]]] = {}
        """Bucket -> its policy and the finished grants not sent yet."""
        self._sending: dict[str, set[str]] = {}
        """Bucket -> finished grants sent but not confirmed; every call for the bucket
        carries them too (giving back is idempotent), so this instance's own next call
        never overtakes them."""
        self._heads: dict[tuple[str, int, int], bytes] = {}
        """(bucket, rate, concurrency) -> packed command head."""
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        """At most one of the two is set: the flush is scheduled, or running."""
        self._calls: list[tuple[bytes, asyncio.Future[object]]] | None = None
        """Script calls made in this event-loop tick, sent together at its end."""
        self._call_tasks: set[asyncio.Task[None]] = set()
        """Tasks sending a tick's script calls (held so they are not collected)."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        while True:
            grant = self._open.get(bucket)
            if grant is not None:
                if grant.policy is not policy and grant.policy != policy:
                    self._close(grant)
                elif time.monotonic() >= grant.until:
                    self._close(grant, expired=True)
                elif len(grant.out) < grant.size:
                    return self._admit(grant)
                else:  # every slot busy: more in flight than it holds
                    self._grow(grant)
                    self._close(grant)
            size = self._sizes.get(bucket, 1)
            if size == 1:
                return await self._take_grant(bucket, policy, 1)
            pending = self._granting.get(bucket)
            if pending is None:
                return await self._take_grant(bucket, policy, size)
            refusal = await asyncio.shield(pending)
            if refusal is not None:
                return refusal

    def release(self, bucket: str, lease: str) -> None:
        """Hand the slot back to its grant at once; a finished grant reaches Redis within
        about ``_FLUSH_SECONDS`` (plus one round trip), and a lost one expires after
        lease_seconds."""
        grant = self._held.get(lease.rpartition(".")[0])
        if grant is None or lease not in grant.out:
            return
        grant.out.remove(lease)
        if not grant.out and not grant.open:
            self._give_back(grant)

    async def aclose(self) -> None:
        """Give back every grant and send what is queued, and wait for it; does not close
        the Redis client."""
        for grant in list(self._open.values()):
            self._close(grant)
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

    # -- grants -----------------------------------------------------------------

    async def _take_grant(self, bucket: str, policy: RateLimitPolicy, size: int) -> Admission:
        """Ask Redis for a grant of ``size`` and admit from it (or return the refusal)."""
        grant_id = f"{self._grant_prefix}{next(self._grant_ids):x}"
        waiting: asyncio.Future[Admission | None] | None = None
        if size > 1:
            waiting = self._granting[bucket] = asyncio.get_running_loop().create_future()
        refusal: Admission | None = None
        try:
            result = await self._call(bucket, policy, grant_id, size)
            code, remaining, reset_us, granted = cast(list[int], result)
            decision = _DECISIONS[code]
            if decision is Decision.CONCURRENCY_LIMITED:
                refusal = Admission(decision, remaining, CONCURRENCY_RETRY_SECONDS, policy)
                return refusal
            if decision is Decision.RATE_LIMITED:
                refusal = Admission(decision, remaining, reset_us / MICRO, policy)
                return refusal
            grant = _Grant(
                grant_id,
                bucket,
                policy,
                granted,
                granted,
                remaining,
                reset_us / MICRO,
                time.monotonic() + self._grant_seconds,
            )
            self._held[grant_id] = grant
            replaced = self._open.get(bucket)
            if replaced is not None:
                self._close(replaced)
            admission = self._admit(grant)
            if grant.open:
                self._open[bucket] = grant
                grant.timer = asyncio.get_running_loop().call_later(
                    self._grant_seconds, functools.partial(self._close, grant, expired=True)
                )
            return admission
        finally:
            if waiting is not None:
                del self._granting[bucket]
                waiting.set_result(refusal)

    def _admit(self, grant: _Grant) -> Admission:
        grant.tokens -= 1
        grant.served += 1
        lease = f"{grant.id}.{grant.served:x}"
        grant.out.add(lease)
        if grant.tokens == 0:  # used up while open: the next one may be bigger
            self._grow(grant)
            self._close(grant)
        return Admission(
            Decision.ALLOWED,
            grant.remaining + grant.tokens,
            grant.reset_seconds,
            grant.policy,
            lease,
        )

    def _grow(self, grant: _Grant) -> None:
        """The next grant of the bucket is twice as big, within 1/16 of its limits."""
        policy = grant.policy
        cap = max(1, min(policy.rate_per_second, policy.concurrency) // _GRANT_SHARE)
        if grant.size < cap:
            if len(self._sizes) >= _MAX_HEADS:  # buckets that went quiet when big
                self._sizes.clear()
            self._sizes[grant.bucket] = min(cap, grant.size * 2)

    def _close(self, grant: _Grant, *, expired: bool = False) -> None:
        """Admit nothing more from ``grant``; give it back once its slots are. One that
        ``expired`` with tokens left was bigger than needed: the next one is smaller."""
        if not grant.open:
            return
        grant.open = False
        if grant.timer is not None:
            grant.timer.cancel()
            grant.timer = None
        if self._open.get(grant.bucket) is grant:
            del self._open[grant.bucket]
        if expired and grant.tokens > 0:
            smaller = grant.size // 2
            if smaller > 1:
                self._sizes[grant.bucket] = smaller
            else:
                self._sizes.pop(grant.bucket, None)
        if not grant.out:
            self._give_back(grant)

    def _give_back(self, grant: _Grant) -> None:
        del self._held[grant.id]
        self._enqueue(grant.bucket, grant.policy, [f"{grant.id}*{grant.size}*{grant.tokens}"])

    # -- round trips ------------------------------------------------------------

    async def _call(
        self, bucket: str, policy: RateLimitPolicy, grant_id: str, wanted: int
    ) -> object:
        """Run the script for ``bucket``, carrying its finished grants along."""
        sending = self._sending.get(bucket)
        carried = self._queued.pop(bucket, None)
        returned = itertools.chain(sending or (), carried[1] if carried else ())
        command = self._command(bucket, policy, grant_id, wanted, returned)
        if carried is None:
            return await self._evalsha(command)
        self._mark_sending(bucket, carried[1])
        try:
            return await self._evalsha(command)
        except BaseException:
            self._enqueue(bucket, *carried)
            raise
        finally:
            self._mark_sent(bucket, carried[1])

    def _command(
        self,
        bucket: str,
        policy: RateLimitPolicy,
        grant_id: str,
        wanted: int,
        returned: Iterable[str],
    ) -> bytes:
        """The packed EVALSHA for ``bucket``: a grant of ``wanted`` (0: none) under
        ``grant_id``, giving back the ``returned`` grants."""
        now = b"" if self._clock is None else b"%d" % round(self._clock() * MICRO)
        tail = [grant_id.encode(), now, b"%d" % wanted]  # '' now: Redis TIME
        given = " ".join(returned)
        if given:
            tail.append(given.encode())
        return b"*%d\r\n%s%s" % (
            _HEAD_ARGUMENTS + len(tail),
            self._command_head(bucket, policy),
            b"".join(_bulk(part) for part in tail),
        )

    def _command_head(self, bucket: str, policy: RateLimitPolicy) -> bytes:
        """The bucket's EVALSHA command up to its grant id, packed once."""
        head_key = (bucket, policy.rate_per_second, policy.concurrency)
        head = self._heads.get(head_key)
        if head is None:
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
            head = self._heads[head_key] = b"".join(_bulk(part.encode()) for part in parts)
        return head

    async def _evalsha(self, command: bytes) -> object:
        """Run the script (``command``: packed EVALSHA). Calls made in the same
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

        The commands are packed here (most of each cached per bucket): redis-py packing
        arguments one by one cost more than the rest of the call."""
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

    # -- giving back ------------------------------------------------------------

    def _enqueue(self, bucket: str, policy: RateLimitPolicy, grants: list[str]) -> None:
        queued = self._queued.get(bucket)
        if queued is None:
            self._queued[bucket] = (policy, grants)
        else:
            queued[1].extend(grants)
        if self._timer is None and self._flusher is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(_FLUSH_SECONDS, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._queued:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Send every queued grant back: one call per bucket, all in one round trip."""
        batch, self._queued = self._queued, {}
        commands = []
        for bucket, (policy, grants) in batch.items():
            self._mark_sending(bucket, grants)
            commands.append(self._command(bucket, policy, "-", 0, grants))
        try:
            async with asyncio.timeout(self._timeout):
                for result in await self._run_scripts(commands):
                    if isinstance(result, Exception):
                        raise result
        except Exception as error:
            log.warning("giving back grants failed, their slots will expire: %r", error)
        finally:
            for bucket, (_, grants) in batch.items():
                self._mark_sent(bucket, grants)
            self._flusher = None
            if self._queued:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(_FLUSH_SECONDS, self._start_flush)

    def _mark_sending(self, bucket: str, grants: list[str]) -> None:
        sending = self._sending.get(bucket)
        if sending is None:
            self._sending[bucket] = set(grants)
        else:
            sending.update(grants)

    def _mark_sent(self, bucket: str, grants: list[str]) -> None:
        sending = self._sending.get(bucket)
        if sending is not None:
            sending.difference_update(grants)
            if not sending:
                del self._sending[bucket]
