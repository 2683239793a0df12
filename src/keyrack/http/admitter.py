"""The gateway's admission of one API request, as a reusable part.

``Admitter.admit`` is what Keyrack's own gateway (``keyrack.http.gateway``) and an
embedding app's middleware (``keyrack.embed``) both run: the rules of
``keyrack.domain.admission`` in their order, over a key verifier, a limiter and the
last-used write-behind, revoking a key that leaked (in the URL, or over plain HTTP).
It answers the admitted key with its limiter slot, or the ``Refusal``;
``refusal_response`` turns a refusal into the problem document both send.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import NamedTuple

from anyio import to_thread
from starlette.responses import Response
from starlette.types import Scope

from keyrack.cache.keycache import CachedVerifier
from keyrack.domain.admission import (
    KEY_IN_URL,
    MISSING_KEY,
    UNAVAILABLE,
    Refusal,
    check_admission,
    check_identity,
    check_permissions,
    check_transport,
    check_verdict,
)
from keyrack.domain.keys import looks_like_key
from keyrack.domain.limits import Admission, policy_for
from keyrack.domain.verification import KeyIdentity
from keyrack.errors import KeyrackError
from keyrack.http.auth import KeyParser
from keyrack.http.problems import problem
from keyrack.problems import STATUS_BY_CODE
from keyrack.ratelimit.base import Limiter
from keyrack.services.context import Context
from keyrack.services.last_used import LastUsedBuffer
from keyrack.services.leaks import revoke_leaked

log = logging.getLogger(__name__)


class Admitted(NamedTuple):
    """An admitted request: its key, the limiter's decision, and the limiter holding its
    in-flight slot (``admission.lease``, to release when the response ends)."""

    identity: KeyIdentity
    admission: Admission
    limiter: Limiter


@lru_cache(maxsize=4096)
def _ip_address(text: str) -> str | None:
    """``text`` as a normalized IP address, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_ip(scope: Scope, headers: Mapping[str, str], *, trust_forwarded_for: bool) -> str | None:
    """The client's address: the peer's, or the one our trusted proxy appended."""
    if trust_forwarded_for and (forwarded := headers.get("x-forwarded-for")):
        # the last entry is the one our proxy appended; earlier ones are the client's word
        appended = _ip_address(forwarded.rsplit(",", 1)[-1].strip())
        if appended is not None:
            return appended
    client = scope.get("client")
    return client[0] if client else None


def key_in_url(parser: KeyParser, scope: Scope, *, any_credential_name: bool) -> str | None:
    """A key in the query string or the path, to be revoked as leaked.

    In the query of guarded API paths any value under a credential name counts;
    elsewhere (console, public API paths, health), and in the path, only a
    key-shaped value does.
    """
    leaked = parser.from_query(scope.get("query_string", b""))
    if leaked is None or not (any_credential_name or looks_like_key(leaked)):
        leaked = parser.from_path(scope["path"])
    return leaked


def refusal_response(refused: Refusal, request_id: str) -> Response:
    """The problem document for a refusal (with the Bearer challenge on a 401)."""
    headers = dict(refused.headers or {})
    if STATUS_BY_CODE.get(refused.code, 400) == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="keyrack"'
    return problem(refused.code, refused.detail, request_id=request_id, headers=headers)


class Admitter:
    """Admission over ``verifier`` and the limiter ``limiter_of(scope)`` returns.

    ``on_throttled`` is told the code of each limiter refusal (for metrics).
    """

    def __init__(
        self,
        ctx: Context,
        verifier: CachedVerifier,
        last_used: LastUsedBuffer,
        limiter_of: Callable[[Scope], Limiter],
        *,
        trust_forwarded_for: bool = False,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.verifier = verifier
        self.last_used = last_used
        self.limiter_of = limiter_of
        self.trust_forwarded_for = trust_forwarded_for
        self.on_throttled = on_throttled
        self.require_tls = ctx.settings.environment == "production"
        self.parser = KeyParser()
        self.host_suffix = "." + ctx.settings.base_domain.lower().strip(".")

    async def admit(
        self,
        scope: Scope,
        headers: dict[str, str],
        client_ip: str | None,
        required: frozenset[str] = frozenset(),
    ) -> Admitted | Refusal:
        """The key, its admission and the limiter holding its slot; or the refusal, in
        the order of ``keyrack.domain.admission`` (``required``: permissions every
        request must hold, checked before the limiter is asked)."""
        if (leaked := self.key_in_url(scope, any_credential_name=True)) is not None:
            return await self.leaked_in_url(leaked, scope)
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
        scope.setdefault("state", {})["usage_key"] = identity.key_id  # counted, admitted or refused
        refusal = check_identity(
            identity, headers.get("host"), self.host_suffix, headers.get("origin"), client_ip
        ) or check_permissions(identity.permissions, required)
        if refusal is not None:
            return refusal
        policy = policy_for(identity.rate_per_second, identity.concurrency)
        limiter = self.limiter_of(scope)
        admission = await limiter.acquire(identity.ref, policy)
        refusal = check_admission(admission)
        if refusal is not None:
            if self.on_throttled is not None:
                self.on_throttled(refusal.code)
            return refusal
        self.last_used.note(identity.key_id, self.ctx.clock(), client_ip)
        return Admitted(identity, admission, limiter)

    def key_in_url(self, scope: Scope, *, any_credential_name: bool) -> str | None:
        """A key in the URL, to be revoked as leaked (``key_in_url``)."""
        return key_in_url(self.parser, scope, any_credential_name=any_credential_name)

    async def leaked_in_url(self, leaked: str, scope: Scope) -> Refusal:
        """Revoke a key found in the URL; the request is refused (400 key-in-url)."""
        await self._revoke_leaked(leaked, f"URL query string of {scope['method']} {scope['path']}")
        return KEY_IN_URL

    async def _revoke_leaked(self, secret: str, where: str) -> None:
        try:
            await to_thread.run_sync(
                functools.partial(
                    revoke_leaked, self.ctx, secret, where, imported=self.verifier.imported
                )
            )
        except KeyrackError as exc:
            log.error("could not revoke a leaked key: %s", exc.for_operator)
        except Exception:
            log.exception("could not revoke a leaked key")
