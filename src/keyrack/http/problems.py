"""RFC 9457 problem documents: the one place that maps an error code to an HTTP status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from keyrack.domain.limits import throttled_headers
from keyrack.errors import KeyrackError, Throttled
from keyrack.logging import redact

log = logging.getLogger(__name__)

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
    "rate-limited": "Rate limit exceeded",
    "concurrency-limited": "Too many requests in flight",
    "headers-too-large": "Request header fields too large",
    "internal-error": "Internal error",
    "unavailable": "Service unavailable",
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


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


def problem(
    code: str,
    detail: str,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = problem_body(code, detail, request_id=request_id, extra=extra)
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=MEDIA_TYPE)


_HTTP_CODES = {
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for error in exc.errors():
        location = redact(".".join(str(part) for part in error.get("loc", ())))
        errors.append({"field": location, "message": redact(str(error.get("msg", "invalid")))})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return summary or "the request is invalid", errors


def install(app: FastAPI) -> None:
    """Register handlers so that every error, expected or not, becomes a problem document."""

    async def keyrack_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KeyrackError)
        headers = throttled_headers(exc.retry_after) if isinstance(exc, Throttled) else None
        return problem(exc.code, exc.detail, request_id=request_id_of(request), headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail, errors = _validation_detail(exc)
        return problem(
            "validation-error", detail, request_id=request_id_of(request), extra={"errors": errors}
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(
            exc.status_code, "validation-error" if exc.status_code < 500 else "internal-error"
        )
        return problem(
            code, str(exc.detail), request_id=request_id_of(request), headers=exc.headers
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return problem(
            "internal-error",
            "an unexpected error occurred; quote the request id to support",
            request_id=request_id_of(request),
        )

    app.add_exception_handler(KeyrackError, keyrack_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
