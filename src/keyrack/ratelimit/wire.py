"""The Redis limiter's wire protocol: the bucket script, packed by hand and pipelined.

One Lua script (``bucket.lua``, package data) does all the work in Redis, atomically:
it takes a grant of tokens and in-flight slots from a bucket and gives finished
grants back (``keyrack.ratelimit.redis`` says what a grant is). Each bucket owns two
keys, hash-tagged so they share a cluster slot: ``<prefix>{<bucket>}:tokens`` (hash:
``tokens`` in millionths, ``stamp`` in µs) and ``<prefix>{<bucket>}:leases`` (sorted
set: one member ``<grant>:<n>`` per in-flight slot held, scored by its expiry in µs).
Both carry TTLs, so idle buckets vanish on their own.

The script runs by EVALSHA. Commands are packed here, not by redis-py (packing the
arguments one by one cost more than the rest of the call): one format per call, with
the script's sha and each policy's limits packed once (a cache per bucket went cold at
many keys, where a cold pack cost three times a warm one). A call made while nothing
is in flight is written at once; otherwise the calls made in one event-loop turn go
out together as one round trip on the limiter's own connection (``Pipe``) as the turn
ends, whatever is still in flight, and give-backs may ride in the same write as a call
(``riders``). Replies are matched in order as they arrive. When Redis has lost the
script (a restart, ``SCRIPT FLUSH``) it is loaded again and the calls it refused are
sent once more.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from importlib import resources
from typing import cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

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

_MAX_LIMITS = 1000
"""Bound on the packed limits kept (one per distinct rate and concurrency)."""


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
        self._lease = b"%d" % lease_us
        self._clock = clock
        self._timeout = timeout
        self._sha = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
        self._start = b"$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n2\r\n" % self._sha.encode()
        """The command up to its keys: the same for every call."""
        self._prefix = prefix.encode()
        self._limits: dict[tuple[int, int], bytes] = {}
        """(rate, concurrency) -> the packed rate, concurrency and lease arguments."""
        self._calls: list[tuple[bytes, asyncio.Future[object]]] | None = None
        """Script calls made in this event-loop tick, sent together at its end."""
        self._call_tasks: set[asyncio.Task[None]] = set()
        """Tasks sending a tick's script calls (held so they are not collected)."""
        self._pipe = Pipe(redis, timeout)

    def command(
        self,
        bucket: str,
        policy: RateLimitPolicy,
        grant_id: str,
        wanted: int,
        returned: Iterable[str] = (),
    ) -> bytes:
        """The packed EVALSHA for ``bucket``: a grant of ``wanted`` (0: none) under
        ``grant_id``, giving back the ``returned`` grants (``<grant>*<slots>*<unused>``).
        Its keys are ``<prefix>{<bucket>}:tokens`` and ``…:leases``."""
        key = b"%s{%s}" % (self._prefix, bucket.encode())
        now = b"" if self._clock is None else b"%d" % round(self._clock() * MICRO)  # '': TIME
        grant = grant_id.encode()
        size = b"%d" % wanted
        given = " ".join(returned).encode()
        packed = b"*%d\r\n%s$%d\r\n%s:tokens\r\n$%d\r\n%s:leases\r\n%s%s%s%s" % (
            12 if given else 11,
            self._start,
            len(key) + 7,
            key,
            len(key) + 7,
            key,
            self._packed_limits(policy),
            _bulk(grant),
            _bulk(now),
            _bulk(size),
        )
        return packed + _bulk(given) if given else packed

    def _packed_limits(self, policy: RateLimitPolicy) -> bytes:
        """The rate, concurrency and lease arguments, packed once per policy."""
        limits = (policy.rate_per_second, policy.concurrency)
        packed = self._limits.get(limits)
        if packed is None:
            if len(self._limits) >= _MAX_LIMITS:
                self._limits.clear()
            packed = self._limits[limits] = b"".join(
                _bulk(part) for part in (b"%d" % limits[0], b"%d" % limits[1], self._lease)
            )
        return packed

    async def call(
        self, command: bytes, riders: tuple[list[bytes], Answer] | None = None
    ) -> object:
        """Run one packed ``command``: at once when nothing is in flight, else with the other
        calls of this event-loop turn in one pipelined round trip at its end. Raises what
        Redis answered, or ``TimeoutError``. ``riders`` (commands, and what takes their
        answers) are written at once, in the same write as ``command``."""
        loop = asyncio.get_running_loop()
        call: asyncio.Future[object] = loop.create_future()
        if riders is not None:
            commands, answer = riders
            self.submit([*commands, command], functools.partial(_split, answer, command, call))
        elif self._calls is None and self._pipe.idle():
            # nothing to wait for: written now, not at the turn's end
            self.submit([command], functools.partial(_settle, [(command, call)]))
        else:
            if self._calls is None:
                self._calls = []
                loop.call_soon(self._send_calls)
            self._calls.append((command, call))
        return await call

    def submit(self, commands: list[bytes], answer: Answer) -> None:
        """Write ``commands`` now as one round trip; ``answer`` gets one result (or
        ``ResponseError``) per command, or the round trip's failure (``TimeoutError`` past
        the timeout), in the callback that read it. Commands Redis refused for want of the
        script are sent once more after loading it."""
        self._pipe.send(commands, functools.partial(self._check_script, commands, answer))

    async def run(self, commands: list[bytes]) -> list[object]:
        """``submit`` and wait."""
        answered: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        self.submit(commands, functools.partial(_resolve, answered))
        return await answered

    async def aclose(self) -> None:
        """Close the limiter's own connection (what is in flight fails)."""
        await self._pipe.aclose()

    def _send_calls(self) -> None:
        calls, self._calls = self._calls or [], None
        self.submit([command for command, _ in calls], functools.partial(_settle, calls))

    def _check_script(
        self, commands: list[bytes], answer: Answer, results: list[object] | Exception
    ) -> None:
        if not isinstance(results, Exception) and any(
            isinstance(result, NoScriptError) for result in results
        ):
            task = asyncio.get_running_loop().create_task(self._reload(commands, results, answer))
            self._call_tasks.add(task)
            task.add_done_callback(self._call_tasks.discard)
        else:
            answer(results)

    async def _reload(self, commands: list[bytes], results: list[object], answer: Answer) -> None:
        """Load the script Redis lost (a restart, ``SCRIPT FLUSH``) and send once more what
        it refused."""
        missing = [n for n, result in enumerate(results) if isinstance(result, NoScriptError)]
        retried: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.script_load(SCRIPT)  # the same script, so the same sha
            self._pipe.send([commands[n] for n in missing], functools.partial(_resolve, retried))
            for n, result in zip(missing, await retried, strict=True):
                results[n] = result
        except Exception as error:
            answer(error)
        else:
            answer(results)


Answer = Callable[[list[object] | Exception], None]
"""What a round trip's replies (one per command), or its failure, are handed to."""


def _resolve(future: asyncio.Future[list[object]], results: list[object] | Exception) -> None:
    if future.done():
        return
    if isinstance(results, Exception):
        future.set_exception(results)
    else:
        future.set_result(results)


def _split(
    answer: Answer, command: bytes, call: asyncio.Future[object], results: list[object] | Exception
) -> None:
    """Hand the riders their results, then ``call`` (written last) its own."""
    if isinstance(results, Exception):
        answer(results)
        _settle([(command, call)], results)
    else:
        answer(results[:-1])
        _settle([(command, call)], results[-1:])


def _settle(
    calls: list[tuple[bytes, asyncio.Future[object]]], results: list[object] | Exception
) -> None:
    """Hand each call of a tick its own result, or the round trip's failure."""
    each: list[object] = [results] * len(calls) if isinstance(results, Exception) else results
    for (_, call), result in zip(calls, each, strict=True):
        if call.done():  # its caller was cancelled
            continue
        if isinstance(result, BaseException):
            call.set_exception(result)
        else:
            call.set_result(result)


def _reply_error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


def _reader() -> hiredis.Reader:
    """A reply parser: error replies come out as ``ResponseError`` values, not raised."""
    return hiredis.Reader(protocolError=InvalidResponse, replyError=_reply_error)


class _RoundTrip:
    """Commands written at once on the pipe, and their replies as they come."""

    __slots__ = ("answer", "deadline", "expected", "replies")

    def __init__(self, deadline: float, expected: int, answer: Answer) -> None:
        self.deadline = deadline
        self.expected = expected
        self.replies: list[object] = []
        self.answer = answer


class Pipe(asyncio.Protocol):
    """A Redis connection of the limiter's own, pipelined: a round trip's commands are
    written the moment they are sent, whatever is still in flight, and the replies are
    matched to them in order as they arrive, in the transport's own callback.

    Through the client's pool every round trip paid for a checkout, a task, a timeout
    context and a coroutine per reply (each a turn of the event loop); here it is one
    write, and its replies go to a plain callback. One timer watches the oldest round
    trip: once it is older than ``timeout``, every round trip in flight fails with
    ``TimeoutError`` and the connection is dropped (back to the pool); the next send
    connects again. The connection is checked out of the client's own pool, set up there
    (address, TLS, credentials, database), and then read here.
    """

    def __init__(self, redis: Redis, timeout: float) -> None:
        self._pool = redis.connection_pool
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._connection: AbstractConnection | None = None
        """The pool's connection whose transport this reads: checked out for good, so
        the client's ``aclose`` closes it too; back to the pool once dropped."""
        self._stream: asyncio.BaseProtocol = asyncio.Protocol()
        """The connection's own protocol, told when the transport closes."""
        self._returning: set[asyncio.Task[None]] = set()
        """Dropped connections going back to the pool."""
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[tuple[bytes, _RoundTrip]] = []
        """Round trips sent while connecting, written once connected."""
        self._in_flight: deque[_RoundTrip] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._parser = _reader()

    def idle(self) -> bool:
        """Connected, with nothing in flight."""
        return self._transport is not None and not self._in_flight

    def send(self, commands: list[bytes], answer: Answer) -> None:
        """Write ``commands``; ``answer`` gets one reply (or ``ResponseError``) each, or the
        failure, once."""
        if not commands:
            answer([])
            return
        loop = asyncio.get_running_loop()
        trip = _RoundTrip(loop.time() + self._timeout, len(commands), answer)
        if self._watchdog is None:
            self._watchdog = loop.call_at(trip.deadline, self._check_deadline)
        packed = b"".join(commands)
        if self._transport is not None:
            self._in_flight.append(trip)
            self._transport.write(packed)
        else:
            self._unsent.append((packed, trip))
            if self._connecting is None:
                self._connecting = loop.create_task(self._connect(), name="keyrack-limiter-connect")

    async def aclose(self) -> None:
        """Drop the connection (back to the pool); what is still in flight fails."""
        self._fail(RedisConnectionError("the limiter is closed"))
        await asyncio.gather(*self._returning, return_exceptions=True)

    async def _give_back(self, connection: AbstractConnection) -> None:
        await connection.disconnect(nowait=True)
        await self._pool.release(connection)

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            writer = connection._writer  # the stream redis-py set up; read here from now on
            transport = cast(asyncio.Transport, writer.transport)
        except Exception as error:
            self._connecting = None
            self._fail(error)
            return
        self._connecting = None
        self._parser = _reader()
        self._stream = transport.get_protocol()
        transport.set_protocol(self)
        self._transport = transport
        self._connection = connection
        unsent, self._unsent = self._unsent, []
        self._in_flight.extend(trip for _, trip in unsent)
        transport.write(b"".join(packed for packed, _ in unsent))

    # -- asyncio.Protocol ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        in_flight = self._in_flight
        while (reply := parser.gets()) is not False:
            if not in_flight:  # nothing asked for it: the stream is out of step
                self._fail(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            trip = in_flight[0]
            trip.replies.append(reply)
            if len(trip.replies) == trip.expected:
                in_flight.popleft()
                trip.answer(trip.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream.connection_lost(exc)  # so the client's own close of it completes
        if self._transport is not None:
            self._transport = None
            self._fail(RedisConnectionError(f"the connection to Redis was lost: {exc!r}"))

    # -- failure ------------------------------------------------------------------

    def _check_deadline(self) -> None:
        self._watchdog = None
        oldest = self._in_flight[0] if self._in_flight else None
        if oldest is None and self._unsent:
            oldest = self._unsent[0][1]
        if oldest is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= oldest.deadline:
            self._fail(TimeoutError(f"Redis did not answer within {self._timeout} s"))
        else:
            self._watchdog = loop.call_at(oldest.deadline, self._check_deadline)

    def _fail(self, error: Exception) -> None:
        """Fail every round trip in flight with ``error`` and drop the connection."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        trips = [*self._in_flight, *(trip for _, trip in self._unsent)]
        self._in_flight.clear()
        self._unsent.clear()
        for trip in trips:
            trip.answer(error)
        transport, self._transport = self._transport, None
        connection, self._connection = self._connection, None
        if transport is not None:
            transport.abort()
        if connection is not None:
            returning = asyncio.get_running_loop().create_task(self._give_back(connection))
            self._returning.add(returning)
            returning.add_done_callback(self._returning.discard)
        if self._connecting is not None and self._connecting is not asyncio.current_task():
            self._connecting.cancel()
            self._connecting = None
