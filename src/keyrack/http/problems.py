"""RFC 9457 problem documents as the API's answers: every error, expected or not, becomes
one (codes, statuses and titles: ``keyrack.problems``)."""

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
from keyrack.problems import MEDIA_TYPE, problem_body

log = logging.getLogger(__name__)


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


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
        extra = getattr(exc, "extra", None)
        return problem(
            exc.code, exc.detail, request_id=request_id_of(request), headers=headers, extra=extra
        )

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
