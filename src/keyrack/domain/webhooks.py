"""Webhook signatures, in the style of Stripe's.

A delivery carries ``Keyrack-Signature: t=<unix seconds>,v1=<hex>`` where the
hex is HMAC-SHA256 under the endpoint's signing secret (``whsec_…``) over
``f"{t}.{body}"``. A receiver recomputes it and refuses a timestamp older than
the tolerance (default 5 minutes), so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from datetime import timedelta

SIGNATURE_HEADER = "Keyrack-Signature"
EVENT_ID_HEADER = "Keyrack-Event-Id"
EVENT_TYPE_HEADER = "Keyrack-Event-Type"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
DEFAULT_TOLERANCE = 300


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Keyrack-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def parse_header(header: str) -> tuple[int | None, list[str]]:
    """The timestamp and every ``v1`` signature in a header (unknown parts are ignored)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    return timestamp, signatures


def verify(
    secret: str, body: bytes, header: str, *, now: int, tolerance: int = DEFAULT_TOLERANCE
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``.

    Constant-time in the signature comparison; a timestamp older (or further in
    the future) than ``tolerance`` is refused, which defeats replays.
    """
    timestamp, signatures = parse_header(header)
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance:
        return False
    expected = _mac(secret, body, timestamp)
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


_CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in (
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "::/96",  # IPv4-compatible (deprecated; also holds :: and ::1)
        "64:ff9b::/96",  # NAT64, well-known prefix
    )
)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address: not loopback, private, link-local
    (cloud metadata), shared, reserved or multicast.

    An IPv6 address that carries an IPv4 one (mapped, translated, compatible, NAT64,
    6to4) is judged by that IPv4 address, which is where a packet to it may end up;
    the local-use NAT64 prefix is never public.
    """
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0]
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        if ip.sixtofour is not None:
            ip = ip.sixtofour
        elif any(ip in prefix for prefix in _CARRYING_IPV4):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def numeric_address(host: str) -> str | None:
    """The IP address ``host`` is by itself, in any notation the system resolver reads as
    one, or None for a name that only DNS can answer.

    This is ``getaddrinfo`` with ``AI_NUMERICHOST`` (no lookup), the very parser that
    connecting would use: besides dotted quads and IPv6 it reads the ``inet_aton`` forms
    (``0x7f000001``, ``2130706433``, ``017700000001``, ``127.1``, ``0x7f.0.0.1``) and,
    after IDNA mapping, full-width digits and dots (``\\uff11\\uff12\\uff17.0.0.1``).
    """
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(found[0][4][0]) if found else None


def names_internal_host(hostname: str) -> bool:
    """True when ``hostname`` is, by its name alone, an internal target: ``localhost``, or
    an address (in any notation, see ``numeric_address``) that is not public. Other names
    are checked when resolved."""
    name = hostname.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = numeric_address(name)
    return address is not None and not is_public_address(address)


MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after ``attempts`` failed tries: 30 s, 1 min, 2 min, … capped at 6 h.

    Used for webhook deliveries and for outbox emails alike.
    """
    delay: timedelta = FIRST_RETRY * 2 ** min(max(0, attempts - 1), 20)
    return min(delay, MAX_RETRY)
