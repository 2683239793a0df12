"""Whether an API request reaches its route: the gateway's rules, as plain functions.

Each rule answers None (go on) or a ``Refusal``: the problem code, its detail, and
the headers it needs; the gateway (``keyrack.http.gateway``) applies them in this
order and turns a refusal into the problem document:

1. a key in the URL → ``KEY_IN_URL`` (and the gateway revokes it as leaked);
2. no key in ``X-API-Key`` / ``Authorization`` → ``MISSING_KEY`` (an unusable header
   is ``malformed-key``, from the key parser);
3. in production, a key that did not come over HTTPS (to us, or to the proxy we
   trust) → ``check_transport``: ``tls-required`` (and the key is revoked as leaked);
4. the key's verdict → ``check_verdict``: invalid, revoked, expired, API disabled;
5. the key against the request → ``check_identity``: the instance host
   (``{slug}.{base_domain}``) of another organization, an ``Origin`` outside the
   organization's allow-list, a client address outside the key's CIDR allow-list;
   then, where every request needs some (an embedding app's ``require``),
   ``check_permissions``: ``insufficient-permission``;
6. the limiter's decision → ``check_admission``: 429 with ``throttled_headers``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from keyrack.domain.limits import Admission, Decision, throttled_headers
from keyrack.domain.verification import (
    KeyIdentity,
    KeyStatus,
    RemoteCode,
    RetiredReason,
    Verdict,
    VerdictStatus,
)


class Refusal(NamedTuple):
    """An API request answered before routing: a problem ``code``, its ``detail``."""

    code: str
    detail: str
    headers: Mapping[str, str] | None = None


KEY_IN_URL = Refusal(
    "key-in-url", "API keys must not be sent in the URL; a key sent there is revoked"
)
MISSING_KEY = Refusal("missing-key", "send your API key in the X-API-Key or Authorization header")
TLS_REQUIRED = Refusal(
    "tls-required", "send API keys over HTTPS only; a key sent over plain HTTP is revoked"
)
UNAVAILABLE = Refusal("unavailable", "key verification is unavailable; retry")
WRONG_TENANT = Refusal("wrong-tenant", "this key belongs to another organization's host")
BROWSER_ORIGIN = Refusal(
    "browser-origin",
    "API keys do not belong in browser code; this origin is not in the allow-list",
)
IP_NOT_ALLOWED = Refusal("ip-not-allowed", "this key may not be used from your IP address")

_BY_VERDICT = {
    status: Refusal(status.problem_code, detail)
    for status, detail in (
        (VerdictStatus.MALFORMED, "the API key is not well formed (check for a copy/paste error)"),
        (VerdictStatus.NOT_FOUND, "the API key is not valid"),
        (VerdictStatus.REVOKED, "the API key has been revoked"),
        (VerdictStatus.EXPIRED, "the API key has expired"),
        (VerdictStatus.DISABLED, "API access is disabled for this organization"),
    )
}
_THROTTLED = {
    Decision.RATE_LIMITED: "too many requests for this key; retry after the Retry-After delay",
    Decision.CONCURRENCY_LIMITED: (
        "too many requests in flight for this key; wait for one to finish"
    ),
}


def check_transport(scheme: str | None, forwarded_proto: str | None) -> Refusal | None:
    """``TLS_REQUIRED`` unless the client used HTTPS: to us (``scheme``), or to the proxy
    we trust (``forwarded_proto``, its ``X-Forwarded-Proto``: the last entry is its own
    word; None when no proxy is trusted)."""
    if scheme == "https":
        return None
    if forwarded_proto is not None and forwarded_proto.rsplit(",", 1)[-1].strip().lower() == (
        "https"
    ):
        return None
    return TLS_REQUIRED


def check_verdict(verdict: Verdict) -> KeyIdentity | Refusal:
    """The key a valid verdict stands for; otherwise its refusal, saying when and why
    the key stopped working where that is known."""
    if verdict.status is VerdictStatus.VALID and verdict.key is not None:
        return verdict.key
    refusal = _BY_VERDICT[verdict.status]
    if verdict.key is not None and (why := why_refused(verdict.status, verdict.key)) is not None:
        return refusal._replace(detail=why)
    return refusal


_CREATE_NEW = "create a new key in Settings → API"


def why_refused(status: VerdictStatus, key: KeyIdentity) -> str | None:
    """When and why a key that once worked no longer does, for its caller's developer:
    deleted for inactivity, past its ``expires_at``, or replaced by a newer secret."""
    retired = key.retired
    if retired is not None:
        on = f"{retired.at:%Y-%m-%d}"
        if retired.reason is RetiredReason.INACTIVITY:
            days = retired.idle_days
            return f"the API key was deleted on {on} after {days} days unused; {_CREATE_NEW}"
        if retired.reason is RetiredReason.EXPIRY:
            return f"the API key expired on {on}, the expiry date set on it; {_CREATE_NEW}"
        return f"this secret was replaced by a newer secret on {on}; use the new secret"
    if (
        status is VerdictStatus.REVOKED
        and key.status is not KeyStatus.REVOKED
        and key.secret_valid_until is not None
    ):
        until = f"{key.secret_valid_until:%Y-%m-%d %H:%M} UTC"
        return (
            f"this secret was replaced by a newer secret; its grace period ended on {until};"
            " use the new secret"
        )
    if status is VerdictStatus.EXPIRED and key.expires_at is not None:
        return (
            f"the API key expired on {key.expires_at:%Y-%m-%d}, the expiry date set on it;"
            f" {_CREATE_NEW}"
        )
    return None


def check_identity(
    identity: KeyIdentity,
    host: str | None,
    host_suffix: str,
    origin: str | None,
    client_ip: str | None,
) -> Refusal | None:
    """The verified key against where the request came from: the instance ``host`` (an
    organization's is ``{slug}{host_suffix}``), the browser ``origin``, the client
    address."""
    if host and bound_slug(host, host_suffix) not in (None, identity.org_slug):
        return WRONG_TENANT
    if origin is not None and not origin_allowed(origin, identity.allowed_origins):
        return BROWSER_ORIGIN
    if identity.allowed_cidrs and not ip_allowed(client_ip, identity.allowed_cidrs):
        return IP_NOT_ALLOWED
    return None


def check_permissions(held: frozenset[str], required: frozenset[str]) -> Refusal | None:
    """``insufficient-permission`` naming the first of ``required`` the key does not hold."""
    if required <= held:
        return None
    missing = min(required - held)
    return Refusal("insufficient-permission", f"this key lacks the {missing!r} permission")


def check_admission(admission: Admission) -> Refusal | None:
    """A limiter's refusal as a 429: ``rate-limited`` or ``concurrency-limited``."""
    if admission.allowed:
        return None
    return Refusal(
        admission.decision.value,
        _THROTTLED[admission.decision],
        throttled_headers(admission.reset_seconds, admission),
    )


_REMOTE_VERDICTS = {
    RemoteCode.NOT_FOUND: VerdictStatus.NOT_FOUND,
    RemoteCode.REVOKED: VerdictStatus.REVOKED,
    RemoteCode.EXPIRED: VerdictStatus.EXPIRED,
    RemoteCode.DISABLED: VerdictStatus.DISABLED,
}


def check_remote(
    code: RemoteCode,
    held: frozenset[str],
    required: frozenset[str],
    retry_after: int | None = None,
    detail: str | None = None,
) -> Refusal | None:
    """A Keyrack instance's ``keys/verify`` answer as the refusal the gateway would give
    (``detail``: the instance's own word on why, when it gave one)."""
    if code is RemoteCode.VALID:
        return None
    if code is RemoteCode.RATE_LIMITED:
        return Refusal(
            Decision.RATE_LIMITED.value,
            _THROTTLED[Decision.RATE_LIMITED],
            {"Retry-After": str(max(1, retry_after or 1))},
        )
    if code is RemoteCode.INSUFFICIENT_PERMISSIONS:
        return check_permissions(held, required) or Refusal(
            "insufficient-permission", "this key lacks a required permission"
        )
    refusal = _BY_VERDICT[_REMOTE_VERDICTS[code]]
    return refusal._replace(detail=detail) if detail else refusal


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


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    wanted = origin.strip().rstrip("/").lower()
    return any(wanted == candidate.lower() for candidate in allowed)


@lru_cache(maxsize=4096)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


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
