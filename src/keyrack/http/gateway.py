"""The gateway: request id, body limit, metrics and, for ``/api/v2``, authentication
and throttling, before any routing.

A pure ASGI middleware (not a FastAPI dependency), so the hot path is a few
dictionary reads: the key's identity comes from ``KeyCache`` (no database, no
thread on a hit), the limiter takes one call, and ``last_used`` is noted in
memory for the write-behind flush. The order of checks for an API request:

1. a key in the URL query → 400 ``key-in-url``, and that key is revoked as leaked;
2. the key from ``X-API-Key`` / ``Authorization`` → 401 missing/malformed; in
   production, a key that came over plain HTTP (neither HTTPS to us nor, said by a
   trusted proxy, to the proxy) → 403 ``tls-required``, and it is revoked as leaked;
   then 401 invalid/revoked/expired, 403 ``api-disabled``;
3. the instance host (``{slug}.{base_domain}``) → 403 ``wrong-tenant``;
4. an ``Origin`` header outside the org's allow-list → 403 ``browser-origin``;
5. the key's CIDR allow-list → 403 ``ip-not-allowed``;
6. the limiter, bucket = key ref → 429 ``rate-limited`` / ``concurrency-limited``.

Admitted responses carry ``RateLimit-Policy`` and ``RateLimit``; the in-flight
slot is released when the response ends, however it ends.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from functools import lru_cache
from typing import NoReturn

from anyio import to_thread
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyrack.cache.keycache import CachedVerifier
from keyrack.domain.keys import looks_like_key
from keyrack.domain.limits import Admission, policy_for
from keyrack.domain.verification import KeyIdentity
from keyrack.errors import KeyrackError
from keyrack.http.auth import KeyParser, principal_from
from keyrack.http.metrics import Metrics
from keyrack.http.problems import STATUS_BY_CODE, problem
from keyrack.logging import REQUEST_ID
from keyrack.ratelimit.base import Limiter
from keyrack.services.context import Context
from keyrack.services.handoffs import LINK_PATH
from keyrack.services.last_used import LastUsedBuffer
from keyrack.services.leaks import revoke_leaked

API_PREFIX = "/api/v2/"
PUBLIC_PATHS = frozenset({"/api/v2/openapi.json", "/api/v2/leaks", "/api/v2/handoffs/open"})
"""Paths that take no key: the API document, leak reports, and the capability-holding
hand-off link (its token travels in the body)."""
HANDOFF_LINK_PREFIX = LINK_PATH.split("{", 1)[0]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

log = logging.getLogger(__name__)
access_log = logging.getLogger("keyrack.access")


_NO_STORE = (b"cache-control", b"no-store")


@lru_cache(maxsize=4096)
def _policy_header(rate_per_second: int, concurrency: int) -> bytes:
    return policy_for(rate_per_second, concurrency).policy_header.encode()


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


@lru_cache(maxsize=4096)
def bound_slug(host: str, suffix: str) -> str | None:
    """The slug in ``{slug}{suffix}`` (port and a trailing dot ignored), or None."""
    name = host.lower()
    if not name.startswith("["):
        name = name.rpartition(":")[0] or name
    name = name.rstrip(".")  # "acme.example.com." is the same host as "acme.example.com"
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


@lru_cache(maxsize=4096)
def _ip_address(text: str) -> str | None:
    """``text`` as a normalized IP address, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def ip_allowed(ip: str | None, cidrs: tuple[str, ...]) -> bool:
    if not cidrs:
        return True
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in _networks(cidrs))


class _Refused(Exception):
    """A response decided before routing (problem document, maybe extra headers)."""

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        self.code, self.detail, self.headers = code, detail, headers


class Gateway:
    def __init__(
        self,
        app: ASGIApp,
        *,
        ctx: Context,
        verifier: CachedVerifier,
        last_used: LastUsedBuffer,
        metrics: Metrics,
        trust_forwarded_for: bool = False,
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.last_used = last_used
        self.metrics = metrics
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
        guarded = path.startswith(API_PREFIX)
        extra = [(b"x-request-id", request_id.encode())]
        if guarded:
            extra.append(_NO_STORE)  # API answers may carry secrets
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
            try:
                receive = self._limit_body(headers, receive)
                if guarded and path not in PUBLIC_PATHS:
                    principal, admission, limiter = await self._admit(scope, headers, client_ip)
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
                    await self._refuse_leaked(leaked, scope)
            except _Refused as refused:
                await self._refuse(refused, request_id, scope, receive, send_with_headers)
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
    ) -> tuple[KeyIdentity, Admission, Limiter]:
        if (leaked := self._key_in_url(scope, any_credential_name=True)) is not None:
            await self._refuse_leaked(leaked, scope)
        try:
            presented = self.parser.from_headers(headers)
        except KeyrackError as exc:
            raise _Refused(exc.code, exc.detail) from None
        if presented is None:
            raise _Refused(
                "missing-key", "send your API key in the X-API-Key or Authorization header"
            )
        if self.require_tls and not self._over_https(scope, headers):
            await self._revoke_leaked(
                presented, f"plain HTTP request {scope['method']} {scope['path']}"
            )
            raise _Refused(
                "tls-required",
                "send API keys over HTTPS only; a key sent over plain HTTP is revoked",
            )
        try:
            verdict = await self.verifier.verify(presented)
        except KeyrackError as exc:  # the database is unreachable: said once, by the key cache
            raise _Refused(exc.code, exc.detail) from None
        except Exception:
            log.exception("key lookup failed")
            raise _Refused("unavailable", "key verification is unavailable; retry") from None
        try:
            identity = principal_from(verdict)
        except KeyrackError as exc:
            raise _Refused(exc.code, exc.detail) from None
        host = headers.get("host")
        if host and bound_slug(host, self.host_suffix) not in (None, identity.org_slug):
            raise _Refused("wrong-tenant", "this key belongs to another organization's host")
        if "origin" in headers and not _origin_allowed(headers["origin"], identity.allowed_origins):
            raise _Refused(
                "browser-origin",
                "API keys do not belong in browser code; this origin is not in the allow-list",
            )
        if identity.allowed_cidrs and not ip_allowed(client_ip, identity.allowed_cidrs):
            raise _Refused("ip-not-allowed", "this key may not be used from your IP address")
        policy = policy_for(identity.rate_per_second, identity.concurrency)
        limiter: Limiter = scope["app"].state.limiter
        admission = await limiter.acquire(identity.ref, policy)
        if not admission.allowed:
            code = admission.decision.value
            self.metrics.throttled.labels(code).inc()
            raise _Refused(
                code,
                "too many requests for this key; retry after the Retry-After delay"
                if code == "rate-limited"
                else "too many requests in flight for this key; wait for one to finish",
                {
                    "Retry-After": str(admission.retry_after),
                    "RateLimit-Policy": policy.policy_header,
                    "RateLimit": admission.header,
                },
            )
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

    async def _refuse_leaked(self, leaked: str, scope: Scope) -> NoReturn:
        """Revoke a key found in the URL and refuse the request (400 key-in-url)."""
        await self._revoke_leaked(leaked, f"URL query string of {scope['method']} {scope['path']}")
        raise _Refused(
            "key-in-url", "API keys must not be sent in the URL; a key sent there is revoked"
        )

    async def _revoke_leaked(self, secret: str, where: str) -> None:
        try:
            await to_thread.run_sync(revoke_leaked, self.ctx, secret, where)
        except KeyrackError as exc:
            log.error("could not revoke a leaked key: %s", exc.for_operator)
        except Exception:
            log.exception("could not revoke a leaked key")

    def _over_https(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Whether the client used HTTPS: to us, or to the proxy we trust (its last word)."""
        if scope.get("scheme") == "https":
            return True
        said = headers.get("x-forwarded-proto") if self.trust_forwarded_for else None
        return said is not None and said.rsplit(",", 1)[-1].strip().lower() == "https"

    def _client_ip(self, scope: Scope, headers: dict[str, str]) -> str | None:
        if self.trust_forwarded_for and (forwarded := headers.get("x-forwarded-for")):
            # the last entry is the one our proxy appended; earlier ones are the client's word
            appended = _ip_address(forwarded.rsplit(",", 1)[-1].strip())
            if appended is not None:
                return appended
        client = scope.get("client")
        return client[0] if client else None

    def _limit_body(self, headers: dict[str, str], receive: Receive) -> Receive:
        """Refuse bodies over ``max_body_bytes``: by Content-Length, or while streaming."""
        length = headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body:
                raise _Refused("payload-too-large", f"the body exceeds {self.max_body} bytes")
            return receive
        if "transfer-encoding" not in headers:
            return receive
        received = 0
        limit = self.max_body

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
        self, refused: _Refused, request_id: str, scope: Scope, receive: Receive, send: Send
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


def _origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    wanted = origin.strip().rstrip("/").lower()
    return any(wanted == candidate.lower() for candidate in allowed)
