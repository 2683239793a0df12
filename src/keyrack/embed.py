"""Keyrack's gateway inside an app that is not Keyrack's, as ASGI middleware (SPEC §6.2).

::

    app.add_middleware(
        KeyrackMiddleware,
        database_url="postgresql://…",  # Keyrack's database
        redis_url="redis://…",  # optional: limits across instances, revocations at once
        require={"clients:read"},
    )

    @app.get("/accounts")
    async def accounts(request: Request) -> dict[str, object]:
        key: KeyrackPrincipal = request.state.keyrack

Each request runs ``keyrack.http.admitter.Admitter``, the code of Keyrack's own
gateway: the key from ``X-API-Key`` / ``Authorization``, a key in the URL refused and
revoked, the key cache (a miss read from Keyrack's database; imported keys known in memory), the organization's host,
origin and the key's IP allow-list, the permissions in ``require``, the limiter (through
Redis when configured, per process otherwise), and the last use written behind. A
refusal is the same RFC 9457 problem document; an admitted response carries
``RateLimit-Policy`` and ``RateLimit``, and the route finds the key in
``request.state.keyrack`` (a ``KeyrackPrincipal``). With Redis, the cache follows
revocations and changes through the same relay as Keyrack's instances; without it,
within the cache TTL (1 s by default).

A CRM that does not share Keyrack's database passes ``verify_url`` (a Keyrack
instance's base URL) and ``verify_key`` (a key of its organization holding
``keys:verify``) instead: each request is then verified, and its limits consumed, by
``POST /api/v2/keys/verify``, and a key found in a URL is reported to the instance's
``POST /api/v2/leaks``. Paths starting with one of ``exempt`` take no key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyrack.config import Settings
from keyrack.domain import permissions as perms
from keyrack.domain.admission import KEY_IN_URL, MISSING_KEY, UNAVAILABLE, Refusal, check_remote
from keyrack.domain.keys import Environment
from keyrack.domain.limits import policy_for
from keyrack.domain.verification import KeyIdentity, RemoteCode
from keyrack.errors import KeyrackError
from keyrack.http.admitter import Admitter, client_ip, key_in_url, refusal_response
from keyrack.http.auth import KeyParser
from keyrack.http.runtime import GatewayRuntime
from keyrack.services.context import Context

__all__ = ["KeyrackMiddleware", "KeyrackPrincipal"]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_VERIFY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class KeyrackPrincipal:
    """The key a request came with, as the route sees it (never its secret)."""

    ref: str
    name: str
    organization_id: int
    organization_slug: str
    location_id: int | None
    environment: Environment
    permissions: frozenset[str]

    @classmethod
    def of(cls, identity: KeyIdentity) -> KeyrackPrincipal:
        return cls(
            ref=identity.ref,
            name=identity.name,
            organization_id=identity.org_id,
            organization_slug=identity.org_slug,
            location_id=identity.location_id,
            environment=identity.environment,
            permissions=identity.permissions,
        )


Release = Callable[[], None] | None
Outcome = tuple[KeyrackPrincipal, list[tuple[bytes, bytes]], Release] | Refusal
"""An admitted request (its key, the headers its response carries, the release of its
in-flight slot) or the refusal."""


class KeyrackMiddleware:
    """Authenticate, throttle and record the use of every request's key (module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        require: Iterable[str] = (),
        verify_url: str | None = None,
        verify_key: str | None = None,
        exempt: Iterable[str] = (),
        trust_forwarded_for: bool = False,
    ) -> None:
        if (database_url is None) == (verify_url is None):
            raise ValueError("give KeyrackMiddleware either database_url or verify_url")
        if verify_url is not None and not verify_key:
            raise ValueError("verify_url needs verify_key: a key holding keys:verify")
        self.app = app
        self.required = frozenset(perms.normalize(require))
        self.exempt = tuple(exempt)
        self.trust_forwarded_for = trust_forwarded_for
        self._admit: Callable[[Scope, dict[str, str], str | None], Awaitable[Outcome]]
        self._local: _Local | None = None
        self._remote: _Remote | None = None
        if database_url is not None:
            self._local = _Local(database_url, redis_url, trust_forwarded_for)
            self._admit = self._admit_locally
        else:
            assert verify_url is not None and verify_key is not None
            self._remote = _Remote(verify_url, verify_key, self.required)
            self._admit = self._remote.admit
        self._started: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if scope["type"] != "http" or (self.exempt and scope["path"].startswith(self.exempt)):
            await self.app(scope, receive, send)
            return
        await self.start()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = secrets.token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        address = client_ip(scope, headers, trust_forwarded_for=self.trust_forwarded_for)
        outcome = await self._admit(scope, headers, address)
        if isinstance(outcome, Refusal):
            response = refusal_response(outcome, request_id)
            response.headers["x-request-id"] = request_id
            await response(scope, receive, send)
            return
        principal, extra, release = outcome
        state["keyrack"] = principal
        extra.append((b"x-request-id", request_id.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if release is not None:
                release()

    async def _admit_locally(
        self, scope: Scope, headers: dict[str, str], address: str | None
    ) -> Outcome:
        assert self._local is not None
        found = await self._local.admitter.admit(scope, headers, address, self.required)
        if isinstance(found, Refusal):
            return found
        identity, admission, limiter = found
        policy = policy_for(identity.rate_per_second, identity.concurrency)
        extra = [
            (b"ratelimit-policy", policy.policy_header.encode()),
            (b"ratelimit", admission.header.encode()),
        ]
        lease = admission.lease
        release = None if lease is None else lambda: limiter.release(identity.ref, lease)
        return KeyrackPrincipal.of(identity), extra, release

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Start the runtime (at the app's startup, or at its first request)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        if self._local is not None:
            await self._local.start()

    async def aclose(self) -> None:
        """Flush the last uses and close connections (at the app's shutdown)."""
        if self._started is None:
            return
        self._started = None
        if self._local is not None:
            await self._local.aclose()
        if self._remote is not None:
            await self._remote.aclose()

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        return wrapped


class _Local:
    """The shared-database runtime: the gateway's own (``keyrack.http.runtime``), keeping
    no rendered view beside each key."""

    def __init__(self, database_url: str, redis_url: str | None, trust_forwarded_for: bool) -> None:
        self.ctx = Context.from_settings(Settings(database_url=database_url, redis_url=redis_url))
        self.runtime: GatewayRuntime[None] = GatewayRuntime(self.ctx, lambda identity: None)
        self.admitter = Admitter(
            self.ctx,
            self.runtime.verifier,
            self.runtime.last_used,
            lambda scope: self.runtime.limiter,
            trust_forwarded_for=trust_forwarded_for,
        )

    async def start(self) -> None:
        await self.runtime.start()

    async def aclose(self) -> None:
        await self.runtime.aclose()
        self.ctx.db.dispose()


class _Remote:
    """Admission by a Keyrack instance's ``keys/verify`` (it consumes the key's limits)."""

    def __init__(self, base_url: str, verify_key: str, required: frozenset[str]) -> None:
        self.parser = KeyParser()
        self.required = required
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"X-API-Key": verify_key},
            timeout=_VERIFY_TIMEOUT_SECONDS,
        )

    async def admit(self, scope: Scope, headers: dict[str, str], address: str | None) -> Outcome:
        if (leaked := key_in_url(self.parser, scope, any_credential_name=True)) is not None:
            await self._report_leak(leaked, scope)
            return KEY_IN_URL
        try:
            presented = self.parser.from_headers(headers)
        except KeyrackError as exc:
            return Refusal(exc.code, exc.detail)
        if presented is None:
            return MISSING_KEY
        try:
            response = await self._client.post(
                "/api/v2/keys/verify",
                json={"key": presented, "permissions": sorted(self.required)},
            )
        except httpx.HTTPError as exc:
            log.error("Keyrack's keys/verify is unreachable: %r", exc)
            return UNAVAILABLE
        if response.status_code != 200:
            log.error("Keyrack's keys/verify answered %s", response.status_code)
            return UNAVAILABLE
        answer: dict[str, Any] = response.json()
        code = RemoteCode(answer["code"])
        key: dict[str, Any] | None = answer.get("key")
        held = frozenset(key["permissions"]) if key else frozenset()
        refusal = check_remote(
            code, held, self.required, answer.get("retry_after"), answer.get("detail")
        )
        if refusal is not None:
            return refusal
        assert key is not None
        principal = KeyrackPrincipal(
            ref=key["ref"],
            name=key["name"],
            organization_id=key["organization_id"],
            organization_slug=key["organization_slug"],
            location_id=key["location_id"],
            environment=Environment(key["environment"]),
            permissions=held,
        )
        limit = key["rate_limit"]
        policy = policy_for(limit["rate_per_second"], limit["concurrency"])
        return principal, [(b"ratelimit-policy", policy.policy_header.encode())], None

    async def _report_leak(self, leaked: str, scope: Scope) -> None:
        where = f"URL of {scope['method']} {scope['path']}"[:200]
        try:
            await self._client.post(
                "/api/v2/leaks", json={"tokens": [{"token": leaked, "source": where}]}
            )
        except httpx.HTTPError as exc:
            log.error("could not report a leaked key to Keyrack: %r", exc)

    async def aclose(self) -> None:
        await self._client.aclose()
