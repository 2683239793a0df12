"""The Redis limiter's wire protocol: the bucket script, packed by hand and pipelined.

One Lua script (``bucket.lua``, package data) does all the work in Redis, atomically:
it takes a grant of tokens and in-flight slots from a bucket and gives finished
grants back (``keyrack.ratelimit.redis`` says what a grant is). Each bucket owns two
keys, hash-tagged so they share a cluster slot: ``<prefix>{<bucket>}:tokens`` (hash:
``tokens`` in millionths, ``stamp`` in µs) and ``<prefix>{<bucket>}:leases`` (sorted
set: one member ``<grant>:<n>`` per in-flight slot held, scored by its expiry in µs).
Both carry TTLs, so idle buckets vanish on their own.

The script runs by EVALSHA. Commands are packed here, not by redis-py (packing the
arguments one by one cost more than the rest of the call): the head that depends only
on the bucket and its policy is packed once and kept, the tail (grant id, time, size,
grants given back) per call. The calls made in one event-loop tick go out together,
written at once on one connection with their replies read in order: one round trip
under one timeout. When Redis has lost the script (a restart, ``SCRIPT FLUSH``) it is
loaded again and the calls it refused are sent once more.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from keyrack.domain.limits import RateLimitPolicy
from keyrack.ratelimit.base import MICRO

SCRIPT = resources.files(__package__).joinpath("bucket.lua").read_text(encoding="utf-8")
"""The bucket script's source."""

TTL_SLACK_MS = 1000
"""Kept beyond the exact idle horizon, for callers that inject their own clock (the
script's own ``TTL_SLACK_MS``)."""

DEFAULT_TIMEOUT_SECONDS = 1.0
"""How long one round trip (a tick's pipelined calls) may take before it fails with
``TimeoutError``; one timer per round trip, so the client needs no per-command
``socket_timeout``."""

_HEAD_ARGUMENTS = 8
"""EVALSHA, sha, key count, two keys, rate, concurrency, lease µs."""
_MAX_HEADS = 10_000
"""Bound on the packed command heads kept (one per bucket and policy)."""


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


class BucketScript:
    """The bucket script over ``redis``, for one limiter: its keys under ``prefix``, its
    leases ``lease_us`` long, its time from ``clock`` (seconds; None: Redis ``TIME``)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        lease_us: int,
        clock: Callable[[], float] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease = b"%d" % lease_us
        self._clock = clock
        self._timeout = timeout
        self._sha = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._heads: dict[tuple[str, int, int], bytes] = {}
        """(bucket, rate, concurrency) -> packed command head."""
        self._calls: list[tuple[bytes, asyncio.Future[object]]] | None = None
        """Script calls made in this event-loop tick, sent together at its end."""
        self._call_tasks: set[asyncio.Task[None]] = set()
        """Tasks sending a tick's script calls (held so they are not collected)."""

    def command(
        self,
        bucket: str,
        policy: RateLimitPolicy,
        grant_id: str,
        wanted: int,
        returned: Iterable[str] = (),
    ) -> bytes:
        """The packed EVALSHA for ``bucket``: a grant of ``wanted`` (0: none) under
        ``grant_id``, giving back the ``returned`` grants (``<grant>*<slots>*<unused>``)."""
        now = b"" if self._clock is None else b"%d" % round(self._clock() * MICRO)
        tail = [grant_id.encode(), now, b"%d" % wanted]  # '' now: Redis TIME
        given = " ".join(returned)
        if given:
            tail.append(given.encode())
        return b"*%d\r\n%s%s" % (
            _HEAD_ARGUMENTS + len(tail),
            self._head(bucket, policy),
            b"".join(_bulk(part) for part in tail),
        )

    def _head(self, bucket: str, policy: RateLimitPolicy) -> bytes:
        """The bucket's EVALSHA command up to its grant id, packed once."""
        head_key = (bucket, policy.rate_per_second, policy.concurrency)
        head = self._heads.get(head_key)
        if head is None:
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            key = f"{self._prefix}{{{bucket}}}"
            parts = (
                b"EVALSHA",
                self._sha.encode(),
                b"2",
                (key + ":tokens").encode(),
                (key + ":leases").encode(),
                b"%d" % policy.rate_per_second,
                b"%d" % policy.concurrency,
                self._lease,
            )
            head = self._heads[head_key] = b"".join(_bulk(part) for part in parts)
        return head

    async def call(self, command: bytes) -> object:
        """Run one packed ``command``; the calls made in the same event-loop tick share one
        pipelined round trip. Raises what Redis answered, or ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        call: asyncio.Future[object] = loop.create_future()
        if self._calls is None:
            self._calls = []
            loop.call_soon(self._send_calls)
        self._calls.append((command, call))
        return await call

    async def run(self, commands: list[bytes]) -> list[object]:
        """Run ``commands`` now in one round trip, within the timeout: one result (or
        ``ResponseError``) per command."""
        async with asyncio.timeout(self._timeout):
            return await self._run_scripts(commands)

    def _send_calls(self) -> None:
        calls, self._calls = self._calls or [], None
        task = asyncio.get_running_loop().create_task(self._answer(calls))
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    async def _answer(self, calls: list[tuple[bytes, asyncio.Future[object]]]) -> None:
        try:
            results = await self.run([command for command, _ in calls])
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
            await self._redis.script_load(SCRIPT)  # the same script, so the same sha
            retried = await self._send_commands([batch[n] for n in missing])
            for n, result in zip(missing, retried, strict=True):
                results[n] = result
        return results

    async def _send_commands(self, batch: list[bytes]) -> list[object]:
        """Write packed commands at once on one connection and read their replies in order."""
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
