"""Throttling shared by every instance through Redis, taken in grants.

A *grant* is ``n`` tokens and ``n`` in-flight slots of a bucket, taken from Redis at
once by the bucket script (``keyrack.ratelimit.wire``: fewer if fewer are left, none
when the bucket is rate- or concurrency-limited); the same script gives finished
grants back: their slots, and the tokens they did not use. The instance then admits
up to ``n`` requests from the grant without a round trip, for at most
``GRANT_SECONDS``. Every admission anywhere is backed by a token and a slot taken in
Redis, so the limits hold across instances just as with one call per request; a grant
only lends a few of them to one instance for a moment.

Grant sizes adapt per bucket: 1 to begin with (one call per request), doubled each
time a grant is used up (or all its slots are busy) while open, halved each time one
expires with tokens left, back to 1 when the bucket is next asked more than
``GRANT_SECONDS`` later (a key called now and then would otherwise take grants of 2
and give half back each time), and never more than 1/16 of the bucket's rate or
concurrency, so a busy instance cannot sit on much that another may need. A key at
the default 5 requests/second and 1 in flight always gets grants of one.

A finished grant goes back at once, written before anything else happens in the turn
it finished in (or, while a give-back is in flight, with the others when that one is
answered). The gateway releases a request's slot just before its last response bytes
are written, so the slot is on its way to Redis before the response is. The exception
is a grant *within its share*: one whose bucket allows at least 16 times its size, in
rate and in concurrency, as a grant may hold anyway. It rides on the next call this
instance writes for any bucket, in the same write, or goes alone ``GRANT_SECONDS``
later: a slow key at generous limits then costs one round trip per request, not two,
and is lent to this instance no longer than an open grant may be. A key at the default
5 requests/second and 1 in flight is never within its share: its slot goes back at once,
so the same client's next request, to any instance, finds it free.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from keyrack.domain.limits import Admission, Decision, RateLimitPolicy
from keyrack.ratelimit.base import CONCURRENCY_RETRY_SECONDS, DEFAULT_LEASE_SECONDS, MICRO
from keyrack.ratelimit.wire import DEFAULT_TIMEOUT_SECONDS, Answer, BucketScript

log = logging.getLogger(__name__)

_MAX_SIZES = 10_000
"""Bound on the per-bucket grant sizes kept."""

_DECISIONS = (Decision.ALLOWED, Decision.CONCURRENCY_LIMITED, Decision.RATE_LIMITED)

GRANT_SECONDS = 0.1
"""How long a grant may admit requests; then what it did not use goes back."""
_GRANT_SHARE = 16
"""A grant holds at most 1/16 of its bucket's rate or concurrency."""


def _share(policy: RateLimitPolicy) -> int:
    """The most a grant may hold of a bucket under ``policy`` (0: not even one)."""
    return min(policy.rate_per_second, policy.concurrency) // _GRANT_SHARE


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
    """``grant_clock`` time after which it admits nothing more."""
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
    A grant's lifetime (``grant_seconds``) is this instance's own: ``grant_clock``
    (monotonic seconds; tests move it by hand) says when an open grant has run out, and
    a timer on the event loop closes an idle one after that long.
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
        grant_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._script = BucketScript(
            redis,
            prefix=prefix,
            lease_us=math.ceil(lease_seconds * MICRO),
            clock=clock,
            timeout=timeout,
        )
        self._grant_seconds = grant_seconds
        self._grant_clock = grant_clock
        self._grant_prefix = secrets.token_hex(8) + ":"
        """Grant ids are this (random per instance) plus a counter: unique, and cheap."""
        self._grant_ids = itertools.count()
        self._open: dict[str, _Grant] = {}
        """Bucket -> the grant admitting its requests now."""
        self._held: dict[str, _Grant] = {}
        """Grant id -> every grant not given back yet."""
        self._sizes: dict[str, tuple[int, float]] = {}
        """Bucket -> size of its next grant, when more than one, if asked for before the
        ``grant_clock`` time beside it."""
        self._granting: dict[str, asyncio.Future[Admission | None]] = {}
        """Bucket -> the grant being taken for it (when bigger than one, callers wait for
        it rather than each taking their own); its result is the refusal, if refused."""
        self._queued: dict[str, tuple[RateLimitPolicy, list[str]]] = {}
        """Bucket -> its policy and the finished grants not sent yet."""
        self._sending: dict[str, set[str]] = {}
        """Bucket -> finished grants sent but not confirmed; every call for the bucket
        carries them too (giving back is idempotent), so this instance's own next call
        never overtakes them."""
        self._timer: asyncio.Handle | None = None
        """A give-back scheduled for the end of this event-loop turn."""
        self._flusher: asyncio.Future[None] | None = None
        """At most one of the two is set: the flush is scheduled, or running."""
        self._urgent = False
        """Something queued goes at once or this turn: not left to ride."""
        self._deadline: asyncio.TimerHandle | None = None
        """When grants queued to ride go alone, if no call has taken them by then."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        while True:
            grant = self._open.get(bucket)
            if grant is not None:
                if grant.policy is not policy and grant.policy != policy:
                    self._close(grant)
                elif self._grant_clock() >= grant.until:
                    self._close(grant, expired=True)
                elif len(grant.out) < grant.size:
                    return self._admit(grant)
                else:  # every slot busy: more in flight than it holds
                    self._grow(grant)
                    self._close(grant)
            size = self._next_size(bucket)
            if size == 1:
                return await self._take_grant(bucket, policy, 1)
            pending = self._granting.get(bucket)
            if pending is None:
                return await self._take_grant(bucket, policy, size)
            refusal = await asyncio.shield(pending)
            if refusal is not None:
                return refusal

    def release(self, bucket: str, lease: str) -> None:
        """Hand the slot back to its grant at once; a finished grant is written to Redis
        now, and a lost one expires after lease_seconds."""
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
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._flusher is not None:
                await asyncio.wait((self._flusher,))
            elif self._queued:
                self._start_flush()
            else:
                await self._script.aclose()
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
                self._grant_clock() + self._grant_seconds,
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

    def _next_size(self, bucket: str) -> int:
        """The size of the bucket's next grant: 1 unless it was resized within a grant's
        lifetime."""
        sized = self._sizes.get(bucket)
        if sized is None:
            return 1
        size, until = sized
        if self._grant_clock() < until:
            return size
        del self._sizes[bucket]
        return 1

    def _resize(self, bucket: str, size: int) -> None:
        """Make the bucket's next grant ``size``, if asked for within a grant's lifetime."""
        if size <= 1:
            self._sizes.pop(bucket, None)
            return
        if len(self._sizes) >= _MAX_SIZES:  # buckets that went quiet when big
            self._sizes.clear()
        self._sizes[bucket] = (size, self._grant_clock() + self._grant_seconds)

    def _grow(self, grant: _Grant) -> None:
        """The next grant of the bucket is twice as big, within 1/16 of its limits."""
        cap = max(1, _share(grant.policy))
        if grant.size < cap:
            self._resize(grant.bucket, min(cap, grant.size * 2))

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
            self._resize(grant.bucket, grant.size // 2)
        if not grant.out:
            self._give_back(grant)

    def _give_back(self, grant: _Grant) -> None:
        del self._held[grant.id]
        returned = [f"{grant.id}*{grant.size}*{grant.tokens}"]
        if grant.size <= _share(grant.policy):
            self._enqueue_to_ride(grant.bucket, grant.policy, returned)
        else:
            self._enqueue(grant.bucket, grant.policy, returned, at_once=True)

    # -- calls ------------------------------------------------------------------

    async def _call(
        self, bucket: str, policy: RateLimitPolicy, grant_id: str, wanted: int
    ) -> object:
        """Run the script for ``bucket``, carrying its finished grants along."""
        sending = self._sending.get(bucket)
        carried = self._queued.pop(bucket, None)
        returned = itertools.chain(sending or (), carried[1] if carried else ())
        command = self._script.command(bucket, policy, grant_id, wanted, returned)
        riders = self._take_queued() if self._queued and self._flusher is None else None
        if carried is None:
            return await self._script.call(command, riders)
        self._mark_sending(bucket, carried[1])
        try:
            return await self._script.call(command, riders)
        except BaseException:
            self._enqueue(bucket, *carried)
            raise
        finally:
            self._mark_sent(bucket, carried[1])

    # -- giving back ------------------------------------------------------------

    def _enqueue(
        self, bucket: str, policy: RateLimitPolicy, grants: list[str], *, at_once: bool = False
    ) -> None:
        """Queue finished grants to go back: ``at_once`` (a grant just finished) written
        now if no give-back is in flight, so it leaves before the response that finished
        it; otherwise at the end of this turn, or when the one in flight is answered."""
        self._enqueue_quietly(bucket, policy, grants)
        self._urgent = True
        if self._flusher is None:
            if at_once:
                if self._timer is not None:
                    self._timer.cancel()
                self._start_flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_soon(self._start_flush)

    def _enqueue_to_ride(self, bucket: str, policy: RateLimitPolicy, grants: list[str]) -> None:
        """Queue finished grants within their share to ride on the next call, or to go
        alone ``grant_seconds`` from now."""
        self._enqueue_quietly(bucket, policy, grants)
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(
                self._grant_seconds, self._start_flush
            )

    def _start_flush(self) -> None:
        """Send every queued grant back: one call per bucket, all in one round trip (once
        the one in flight is answered, if one is)."""
        self._timer = None
        if self._flusher is not None:
            self._urgent = self._urgent or bool(self._queued)
        elif self._queued:
            commands, answer = self._take_queued()
            self._script.submit(commands, answer)

    def _take_queued(self) -> tuple[list[bytes], Answer]:
        """Every queued grant as one give-back call per bucket, and what takes their
        answers; a give-back is in flight from now on."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._urgent = False
        batch, self._queued = self._queued, {}
        commands = []
        for bucket, (policy, grants) in batch.items():
            self._mark_sending(bucket, grants)
            commands.append(self._script.command(bucket, policy, "-", 0, grants))
        self._flusher = asyncio.get_running_loop().create_future()
        return commands, functools.partial(self._flushed, batch)

    def _flushed(
        self,
        batch: dict[str, tuple[RateLimitPolicy, list[str]]],
        results: list[object] | Exception,
    ) -> None:
        """A give-back was answered: what failed is queued again, to ride on the next call
        of any bucket or the next give-back (never retried on its own, so an outage costs
        no loop; giving back twice is harmless)."""
        if isinstance(results, Exception):
            results = [results] * len(batch)
        failed: Exception | None = None
        for (bucket, (policy, grants)), result in zip(batch.items(), results, strict=True):
            self._mark_sent(bucket, grants)
            if isinstance(result, Exception):
                failed = result
                self._enqueue_quietly(bucket, policy, grants)
        if failed is not None:
            log.warning("giving back grants failed, they go with the next call: %r", failed)
        if self._flusher is not None:
            self._flusher.set_result(None)
            self._flusher = None
        if self._urgent:
            self._timer = asyncio.get_running_loop().call_soon(self._start_flush)

    def _enqueue_quietly(self, bucket: str, policy: RateLimitPolicy, grants: list[str]) -> None:
        """Add ``grants`` to the queue, scheduling no give-back."""
        queued = self._queued.get(bucket)
        if queued is None:
            self._queued[bucket] = (policy, list(grants))
        else:
            queued[1].extend(grants)

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
