"""The gateway: request id, body limit, metrics and, for ``/api/v2``, authentication
and throttling, before any routing.

A pure ASGI middleware (not a FastAPI dependency), so the hot path is a few
dictionary reads: the key's identity comes from ``KeyCache`` (no database, no
thread on a hit), the limiter takes one call, and ``last_used`` is noted in
memory for the write-behind flush. What it checks, and in which order, are the
rules of ``keyrack.domain.admission``, run by ``keyrack.http.admitter.Admitter`` (which
``keyrack.embed`` runs too); this module is the ASGI plumbing around it: the request
id, the body limit, which paths take a key, the response headers, and counting.

Paths under ``/api/v2/`` need a key unless their route is declared public
(``keyrack.routing.public``: the API document, leak reports, opening a hand-off
link). Admitted responses carry ``RateLimit-Policy`` and ``RateLimit``; the
in-flight slot is released when the response ends, however it ends.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from functools import lru_cache

from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyrack import logging as keyrack_logging
from keyrack.cache.keycache import CachedVerifier
from keyrack.domain.admission import Refusal
from keyrack.domain.imports import MAX_UPLOAD_BYTES
from keyrack.domain.limits import policy_for
from keyrack.domain.verification import KeyIdentity
from keyrack.http.admitter import Admitter, refusal_response
from keyrack.http.admitter import client_ip as find_client_ip
from keyrack.http.metrics import Metrics
from keyrack.logging import REQUEST_ID, AccessLog
from keyrack.problems import STATUS_BY_CODE
from keyrack.ratelimit.base import Limiter
from keyrack.routing import API_PREFIX, takes_key
from keyrack.services.context import Context
from keyrack.services.handoffs import LINK_PATH
from keyrack.services.last_used import LastUsedBuffer

HANDOFF_LINK_PREFIX = LINK_PATH.split("{", 1)[0]
UPLOADS = {"/api/v2/imports": MAX_UPLOAD_BYTES}
"""Paths that take a file, streamed to the database: their own body limit."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_PATHS = 4096
"""Bound on the paths whose need of a key is remembered."""

log = logging.getLogger(__name__)
access_log = logging.getLogger("keyrack.access")


_NO_STORE = (b"cache-control", b"no-store")


@lru_cache(maxsize=4096)
def _policy_header(rate_per_second: int, concurrency: int) -> bytes:
    return policy_for(rate_per_second, concurrency).policy_header.encode()


def _app_limiter(scope: Scope) -> Limiter:
    """The app's active limiter (a ``RedisLimiter`` replaces the first at startup)."""
    limiter: Limiter = scope["app"].state.limiter
    return limiter


class RequestIds:
    """Request ids for requests that bring none: 32 hex digits, a random half per process
    and a counter. Unique, not secret (they are echoed and logged), and no ``urandom``
    call per request."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


class Gateway:
    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: Context,
        verifier: CachedVerifier,
        last_used: LastUsedBuffer,
        metrics: Metrics,
        public_paths: frozenset[str],
        trust_forwarded_for: bool = False,
        access: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.last_used = last_used
        self.metrics = metrics
        self.public_paths = public_paths
        """``/api/v2/`` paths that take no key (their routes say so)."""
        self.trust_forwarded_for = trust_forwarded_for
        self.verifier = verifier
        self.admitter = Admitter(
            ctx,
            verifier,
            last_used,
            _app_limiter,
            trust_forwarded_for=trust_forwarded_for,
            on_throttled=lambda code: metrics.throttled.labels(code).inc(),
        )
        self.max_body = ctx.settings.max_body_bytes
        self._counters: dict[tuple[str, int], Counter] = {}
        self._request_ids = RequestIds()
        self._takes_key: dict[str, bool] = {}
        """Path -> whether it takes a key (bounded: cleared when full)."""
        self.access = access
        """Where access lines go; None: the fast one of a configured server, else ``logging``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = self._request_ids.next()
        client_ip = find_client_ip(scope, headers, trust_forwarded_for=self.trust_forwarded_for)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = client_ip
        token = REQUEST_ID.set(request_id)
        path: str = scope["path"]
        guarded = path.startswith(API_PREFIX)  # API answers may carry secrets
        extra = [(b"x-request-id", request_id.encode())]
        if guarded:
            extra.append(_NO_STORE)
        status = 500
        code: str | None = None

        admitted: tuple[Limiter, str, str] | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status, code, admitted
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            else:
                if 400 <= status < 500 and code is None:
                    code = problem_code(message.get("body", b""))
                if admitted is not None and not message.get("more_body", False):
                    # the work is done: the slot goes back before the last bytes leave, so
                    # the client's next request, on any instance, never finds it held
                    admitted[0].release(admitted[1], admitted[2])
                    admitted = None
            await send(message)

        principal: KeyIdentity | None = None
        try:
            limited = self._limit_body(headers, receive, UPLOADS.get(path, self.max_body))
            if isinstance(limited, Refusal):
                await self._refuse(limited, request_id, scope, receive, send_with_headers)
                return
            receive = limited
            if self._needs_key(path):
                found = await self.admitter.admit(scope, headers, client_ip)
                if isinstance(found, Refusal):
                    await self._refuse(found, request_id, scope, receive, send_with_headers)
                    return
                principal, admission, limiter = found
                state["principal"] = principal
                policy = admission.policy
                extra.append(
                    (
                        b"ratelimit-policy",
                        _policy_header(policy.rate_per_second, policy.concurrency),
                    )
                )
                extra.append((b"ratelimit", admission.header.encode()))
                if admission.lease is not None:
                    admitted = (limiter, principal.ref, admission.lease)
            elif (leaked := self.admitter.key_in_url(scope, any_credential_name=False)) is not None:
                refusal = await self.admitter.leaked_in_url(leaked, scope)
                await self._refuse(refusal, request_id, scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            if admitted is not None:
                admitted[0].release(admitted[1], admitted[2])
            self._observe(scope, status, started, principal)
            if (key_id := state.get("usage_key")) is not None:
                minute = int(self.ctx.clock().timestamp()) // 60
                self.last_used.count(key_id, minute, status, code, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def _needs_key(self, path: str) -> bool:
        needs = self._takes_key.get(path)
        if needs is None:
            if len(self._takes_key) >= _MAX_PATHS:
                self._takes_key.clear()
            needs = self._takes_key[path] = takes_key(path, self.public_paths)
        return needs

    def _limit_body(
        self, headers: dict[str, str], receive: Receive, limit: int
    ) -> Receive | Refusal:
        """Refuse bodies over ``limit`` (``max_body_bytes``, or an upload's): by
        Content-Length, or while streaming."""
        length = headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > limit:
                return Refusal("payload-too-large", f"the body exceeds {limit} bytes")
            return receive
        if "transfer-encoding" not in headers:
            return receive
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the body exceeds {limit} bytes")
            return message

        return limited

    # -- responses and observation ----------------------------------------------

    async def _refuse(
        self, refused: Refusal, request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if STATUS_BY_CODE.get(refused.code, 400) != 429:
            self.metrics.auth_failures.labels(refused.code).inc()
        await refusal_response(refused, request_id)(scope, receive, send)

    def _observe(
        self, scope: Scope, status: int, started: float, principal: KeyIdentity | None
    ) -> None:
        elapsed = time.perf_counter() - started
        method: str = scope["method"]
        counter = self._counters.get((method, status))
        if counter is None:
            counter = self._counters[(method, status)] = self.metrics.requests.labels(
                method, str(status)
            )
        counter.inc()
        self.metrics.latency.observe(elapsed)
        if (fast := self.access or keyrack_logging.access_log()) is not None:
            fast.write(
                method,
                loggable_path(scope["path"]),
                status,
                elapsed,
                principal.ref if principal else None,
                scope["state"].get("request_id"),
            )
        elif access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %s",
                method,
                loggable_path(scope["path"]),
                status,
                extra={
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "key": principal.ref if principal else None,
                },
            )


_PROBLEM_TYPE = b"/problems/"


def problem_code(body: bytes) -> str | None:
    """The code of a problem document's ``type`` (``…/problems/<code>``), if ``body`` is one."""
    at = body.find(_PROBLEM_TYPE)
    if at < 0:
        return None
    at += len(_PROBLEM_TYPE)
    end = body.find(b'"', at)
    code = body[at:end].decode("ascii", "replace") if end > at else ""
    return code if 0 < len(code) <= 64 else None


def loggable_path(path: str) -> str:
    """``path`` for a log line: a hand-off link's token is a capability, never logged."""
    if path.startswith(HANDOFF_LINK_PREFIX):
        return HANDOFF_LINK_PREFIX + "[redacted]"
    return path
