"""Errors raised by the SDK.

    KeyrackError                    anything the SDK raises
    ├── TransportError              no answer: connection refused, timeout, broken stream
    └── APIError                    the server answered with an error status;
        │                           carries ``problem`` (the RFC 9457 document),
        │                           ``status``, ``code`` and ``request_id``
        ├── AuthenticationError     401  missing, malformed, invalid, revoked or expired key
        ├── PermissionDeniedError   403  insufficient-permission, api-disabled, wrong-tenant, …
        ├── NotFoundError           404
        ├── ConflictError           409
        ├── ValidationError         400, 422  (validation-error, key-in-url)
        ├── PayloadTooLargeError    413
        ├── RateLimitedError        429  after the retries ran out; ``retry_after`` seconds
        └── ServerError             5xx

Any other error status raises a plain ``APIError``. ``code`` is the slug of the
problem ``type`` (``https://keyrack.dev/problems/<code>``); messages quote it with
the detail and request id, so a log line is enough for support. The server never
echoes a key, so neither does an error.
"""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_BASE = "https://keyrack.dev/problems/"


class KeyrackError(Exception):
    """Base class of every SDK error."""


class TransportError(KeyrackError):
    """The request got no HTTP answer (network failure or timeout)."""


class APIError(KeyrackError):
    """The server refused the request; ``problem`` is its RFC 9457 document."""

    def __init__(
        self,
        problem: dict[str, Any],
        *,
        status: int,
        code: str,
        request_id: str | None = None,
    ) -> None:
        self.problem = problem
        self.status = status
        self.code = code
        self.request_id = request_id
        self.detail = str(problem.get("detail") or problem.get("title") or "")
        message = f"{status} {code}: {self.detail}"
        if request_id:
            message += f" (request {request_id})"
        super().__init__(message)


class AuthenticationError(APIError):
    """401: the key is missing, malformed, unknown, revoked or expired."""


class PermissionDeniedError(APIError):
    """403: the key is valid but may not do this."""


class NotFoundError(APIError):
    """404."""


class ConflictError(APIError):
    """409."""


class ValidationError(APIError):
    """400 or 422: the request itself is wrong; ``problem["errors"]`` lists fields when known."""


class PayloadTooLargeError(APIError):
    """413."""


class RateLimitedError(APIError):
    """429 after every retry; wait ``retry_after`` seconds before trying again."""

    def __init__(
        self,
        problem: dict[str, Any],
        *,
        status: int,
        code: str,
        request_id: str | None = None,
        retry_after: float = 1.0,
    ) -> None:
        super().__init__(problem, status=status, code=code, request_id=request_id)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed; quote ``request_id`` to support."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
}


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The response's problem document, or one built from the status line when it has none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {
        "type": "about:blank",
        "title": response.reason_phrase,
        "status": response.status_code,
        "detail": response.text[:500],
    }


def error_for(response: httpx.Response, *, retry_after: float = 1.0) -> APIError:
    """The typed error for an error ``response`` (``retry_after`` is used for 429 only)."""
    problem = problem_of(response)
    status = response.status_code
    kind = str(problem.get("type", ""))
    code = kind.removeprefix(PROBLEM_BASE) if kind.startswith(PROBLEM_BASE) else str(status)
    request_id = problem.get("request_id") or response.headers.get("X-Request-ID")
    if status == 429:
        return RateLimitedError(
            problem, status=status, code=code, request_id=request_id, retry_after=retry_after
        )
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, APIError)
    return cls(problem, status=status, code=code, request_id=request_id)
