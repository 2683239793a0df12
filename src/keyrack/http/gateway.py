"""The gateway: request id, body limit, metrics and, for ``/api/v2``, authentication
and throttling, before any routing.

A pure ASGI middleware (not a FastAPI dependency), so the hot path is a few
dictionary reads: the key's identity comes from ``KeyCache`` (no database, no
thread on a hit), the limiter takes one call, and ``last_used`` is noted in
memory for the write-behind flush. What it checks, and in which order, are the
rules of ``keyrack.domain.admission``; this module is the ASGI plumbing around them:
finding the key and the client address, revoking a key that leaked (in the URL, or
over plain HTTP), answering a refusal as a problem document, and counting.

Paths under ``/api/v2/`` need a key unless their route is declared public
(``keyrack.routing.public``: the API document, leak reports, opening a hand-off
link). Admitted responses carry ``RateLimit-Policy`` and ``RateLimit``; the
in-flight slot is released when the response ends, however it ends.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from functools import lru_cache

from anyio import to_thread
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyrack.cache.keycache import CachedVerifier
from keyrack.domain.admission import (
    KEY_IN_URL,
    MISSING_KEY,
    UNAVAILABLE,
    Refusal,
    check_admission,
    check_identity,
    check_transport,
    check_verdict,
)
from keyrack.domain.imports import MAX_UPLOAD_BYTES
from keyrack.domain.keys import looks_like_key
from keyrack.domain.limits import Admission, policy_for
from keyrack.domain.verification import KeyIdentity
from keyrack.errors import KeyrackError
from keyrack.http.auth import KeyParser
from keyrack.http.metrics import Metrics
from keyrack.http.problems import problem
from keyrack.logging import REQUEST_ID
from keyrack.problems import STATUS_BY_CODE
from keyrack.ratelimit.base import Limiter
from keyrack.routing import API_PREFIX, takes_key
from keyrack.services.context import Context
from keyrack.services.handoffs import LINK_PATH
from keyrack.services.last_used import LastUsedBuffer
from keyrack.services.leaks import revoke_leaked

HANDOFF_LINK_PREFIX = LINK_PATH.split("{", 1)[0]
UPLOADS = {"/api/v2/imports": MAX_UPLOAD_BYTES}
"""Paths that take a file, streamed to the database: their own body limit."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger(__name__)
access_log = logging.getLogger("keyrack.access")


_NO_STORE = (b"cache-control", b"no-store")


@lru_cache(maxsize=4096)
def _policy_header(rate_per_second: int, concurrency: int) -> bytes:
    return policy_for(rate_per_second, concurrency).policy_header.encode()


@lru_cache(maxsize=4096)
def _ip_address(text: str) -> str | None:
    """``text`` as a normalized IP address, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


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
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.last_used = last_used
        self.metrics = metrics
        self.public_paths = public_paths
        """``/api/v2/`` paths that take no key (their routes say so)."""
        self.trust_forwarded_for = trust_forwarded_for
        self.require_tls = ctx.settings.environment == "production"
        self.verifier = verifier
        self.parser = KeyParser()
        self.host_suffix = "." + ctx.settings.base_domain.lower().strip(".")
        self.max_body = ctx.settings.max_body_bytes
        self._counters: dict[tuple[str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = secrets.token_hex(16)
        client_ip = self._client_ip(scope, headers)
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

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        admitted: tuple[Limiter, str, str] | None = None
        principal: KeyIdentity | None = None
        try:
            limited = self._limit_body(headers, receive, UPLOADS.get(path, self.max_body))
            if isinstance(limited, Refusal):
                await self._refuse(limited, request_id, scope, receive, send_with_headers)
                return
            receive = limited
            if takes_key(path, self.public_paths):
                found = await self._admit(scope, headers, client_ip)
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
            elif (leaked := self._key_in_url(scope, any_credential_name=False)) is not None:
                refusal = await self._leaked_in_url(leaked, scope)
                await self._refuse(refusal, request_id, scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            if admitted is not None:
                admitted[0].release(admitted[1], admitted[2])
            self._observe(scope, status, started, principal)
            REQUEST_ID.reset(token)

    # -- admission --------------------------------------------------------------

    async def _admit(
        self, scope: Scope, headers: dict[str, str], client_ip: str | None
    ) -> tuple[KeyIdentity, Admission, Limiter] | Refusal:
        """The key, its admission and the limiter holding its slot; or the refusal, in
        the order of ``keyrack.domain.admission``."""
        if (leaked := self._key_in_url(scope, any_credential_name=True)) is not None:
            return await self._leaked_in_url(leaked, scope)
        try:
            presented = self.parser.from_headers(headers)
        except KeyrackError as exc:
            return Refusal(exc.code, exc.detail)
        if presented is None:
            return MISSING_KEY
        if self.require_tls:
            forwarded = headers.get("x-forwarded-proto") if self.trust_forwarded_for else None
            refusal = check_transport(scope.get("scheme"), forwarded)
            if refusal is not None:
                await self._revoke_leaked(
                    presented, f"plain HTTP request {scope['method']} {scope['path']}"
                )
                return refusal
        try:
            verdict = await self.verifier.verify(presented)
        except KeyrackError as exc:  # the database is unreachable: said once, by the key cache
            return Refusal(exc.code, exc.detail)
        except Exception:
            log.exception("key lookup failed")
            return UNAVAILABLE
        identity = check_verdict(verdict)
        if isinstance(identity, Refusal):
            return identity
        refusal = check_identity(
            identity, headers.get("host"), self.host_suffix, headers.get("origin"), client_ip
        )
        if refusal is not None:
            return refusal
        policy = policy_for(identity.rate_per_second, identity.concurrency)
        limiter: Limiter = scope["app"].state.limiter
        admission = await limiter.acquire(identity.ref, policy)
        refusal = check_admission(admission)
        if refusal is not None:
            self.metrics.throttled.labels(refusal.code).inc()
            return refusal
        self.last_used.note(identity.key_id, self.ctx.clock(), client_ip)
        return identity, admission, limiter

    def _key_in_url(self, scope: Scope, *, any_credential_name: bool) -> str | None:
        """A key in the query string or the path, to be revoked as leaked.

        In the query of guarded API paths any value under a credential name counts;
        elsewhere (console, public API paths, health), and in the path, only a
        key-shaped value does.
        """
        leaked = self.parser.from_query(scope.get("query_string", b""))
        if leaked is None or not (any_credential_name or looks_like_key(leaked)):
            leaked = self.parser.from_path(scope["path"])
        return leaked

    async def _leaked_in_url(self, leaked: str, scope: Scope) -> Refusal:
        """Revoke a key found in the URL; the request is refused (400 key-in-url)."""
        await self._revoke_leaked(leaked, f"URL query string of {scope['method']} {scope['path']}")
        return KEY_IN_URL

    async def _revoke_leaked(self, secret: str, where: str) -> None:
        try:
            await to_thread.run_sync(revoke_leaked, self.ctx, secret, where)
        except KeyrackError as exc:
            log.error("could not revoke a leaked key: %s", exc.for_operator)
        except Exception:
            log.exception("could not revoke a leaked key")

    def _client_ip(self, scope: Scope, headers: dict[str, str]) -> str | None:
        if self.trust_forwarded_for and (forwarded := headers.get("x-forwarded-for")):
            # the last entry is the one our proxy appended; earlier ones are the client's word
            appended = _ip_address(forwarded.rsplit(",", 1)[-1].strip())
            if appended is not None:
                return appended
        client = scope.get("client")
        return client[0] if client else None

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
        status = STATUS_BY_CODE.get(refused.code, 400)
        headers = dict(refused.headers or {})
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="keyrack"'
        if status != 429:
            self.metrics.auth_failures.labels(refused.code).inc()
        response: Response = problem(
            refused.code, refused.detail, request_id=request_id, headers=headers
        )
        await response(scope, receive, send)

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
        if access_log.isEnabledFor(logging.INFO):
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


def loggable_path(path: str) -> str:
    """``path`` for a log line: a hand-off link's token is a capability, never logged."""
    if path.startswith(HANDOFF_LINK_PREFIX):
        return HANDOFF_LINK_PREFIX + "[redacted]"
    return path
