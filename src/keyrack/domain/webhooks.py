"""Webhook signatures, in the style of Stripe's.

A delivery carries ``Keyrack-Signature: t=<unix seconds>,v1=<hex>`` where the
hex is HMAC-SHA256 under the endpoint's signing secret (``whsec_…``) over
``f"{t}.{body}"``. A receiver recomputes it and refuses a timestamp older than
the tolerance (default 5 minutes), so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from keyrack.domain.jobs import Backoff

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


MAX_ATTEMPTS = 8
"""Attempts at a webhook delivery or an email before it ends ``failed``."""
RETRY = Backoff(base=timedelta(seconds=30), cap=timedelta(hours=6))
"""After failed attempt ``n`` a delivery (or an email) waits a random time below
30 s, 1 min, 2 min, … (capped at 6 h): full jitter, so the deliveries that failed
together while a receiver was down do not all come back to it at once."""
