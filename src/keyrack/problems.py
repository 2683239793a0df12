"""The problem vocabulary: each error code's HTTP status and title, and the RFC 9457 body.

The one place that maps a code to an HTTP status, for every answer Keyrack gives: the
API's problem documents (``keyrack.http.problems``), the console's error pages, and
what the server itself answers before the app (``keyrack.http.protocol``).
"""

from __future__ import annotations

from typing import Any

from keyrack.logging import redact

PROBLEM_BASE = "https://keyrack.dev/problems/"
MEDIA_TYPE = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "validation-error": 400,
    "key-in-url": 400,
    "missing-key": 401,
    "malformed-key": 401,
    "invalid-key": 401,
    "revoked-key": 401,
    "expired-key": 401,
    "unauthenticated": 401,
    "invalid-signature": 401,
    "api-disabled": 403,
    "wrong-tenant": 403,
    "insufficient-permission": 403,
    "browser-origin": 403,
    "ip-not-allowed": 403,
    "tls-required": 403,
    "forbidden": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "request-timeout": 408,
    "conflict": 409,
    "gone": 410,
    "payload-too-large": 413,
    "unsupported-media-type": 415,
    "range-not-satisfiable": 416,
    "rate-limited": 429,
    "concurrency-limited": 429,
    "headers-too-large": 431,
    "internal-error": 500,
    "unavailable": 503,
}

TITLES: dict[str, str] = {
    "validation-error": "Invalid request",
    "key-in-url": "API key in URL",
    "missing-key": "API key missing",
    "malformed-key": "Malformed API key",
    "invalid-key": "Invalid API key",
    "revoked-key": "Revoked API key",
    "expired-key": "Expired API key",
    "unauthenticated": "Sign-in required",
    "invalid-signature": "Invalid signature",
    "api-disabled": "API access disabled",
    "wrong-tenant": "Wrong tenant",
    "insufficient-permission": "Insufficient permission",
    "browser-origin": "Browser origin refused",
    "ip-not-allowed": "IP address not allowed",
    "tls-required": "HTTPS required",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "request-timeout": "Request timeout",
    "conflict": "Conflict",
    "gone": "Gone",
    "payload-too-large": "Payload too large",
    "unsupported-media-type": "Unsupported media type",
    "range-not-satisfiable": "Range not satisfiable",
    "rate-limited": "Rate limit exceeded",
    "concurrency-limited": "Too many requests in flight",
    "headers-too-large": "Request header fields too large",
    "internal-error": "Internal error",
    "unavailable": "Service unavailable",
}


def problem_body(
    code: str, detail: str, *, request_id: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The RFC 9457 document for ``code`` (also written by the server itself, before the app)."""
    return {
        "type": PROBLEM_BASE + code,
        "title": TITLES.get(code, code.replace("-", " ").capitalize()),
        "status": STATUS_BY_CODE.get(code, 400),
        "detail": redact(detail),  # e.g. "no client 'kr_live_…'" when a key was pasted as an id
        "request_id": request_id,
        **(extra or {}),
    }
