"""Keyrack's error tree.

Every error has a stable ``code``: the slug of its RFC 9457 problem type
(``https://keyrack.dev/problems/<code>``). Domain and service code raise these;
``keyrack.http.problems`` alone maps a code to an HTTP status, and the CLI maps
``exit_code``.

    KeyrackError
    ├── InvalidInput            validation-error   (bad usage: exit 2)
    ├── NotFound                not-found
    ├── Conflict                conflict
    ├── PayloadTooLarge         payload-too-large
    ├── AuthenticationFailed    missing-key, malformed-key, invalid-key, revoked-key, expired-key
    ├── AccessDenied            api-disabled, wrong-tenant, insufficient-permission,
    │                           browser-origin, ip-not-allowed, tls-required, forbidden
    ├── Throttled               rate-limited, concurrency-limited
    └── Unavailable             unavailable        (the database cannot be reached: retry)

The server itself (``keyrack.http.protocol``) answers ``headers-too-large`` (431) and
``request-timeout`` (408) before a request reaches the app.
"""

from __future__ import annotations

from typing import ClassVar


class KeyrackError(Exception):
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    exit_code: ClassVar[int] = 1

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # type: ignore[misc]

    @property
    def for_operator(self) -> str:
        """The detail as the CLI and the logs say it; an HTTP answer says ``detail`` only."""
        return self.detail


class InvalidInput(KeyrackError):
    code = "validation-error"
    title = "Invalid input"
    exit_code = 2


class NotFound(KeyrackError):
    code = "not-found"
    title = "Not found"


class Conflict(KeyrackError):
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(KeyrackError):
    code = "payload-too-large"
    title = "Payload too large"


class AuthenticationFailed(KeyrackError):
    code = "invalid-key"
    title = "Authentication failed"


class AccessDenied(KeyrackError):
    code = "forbidden"
    title = "Access denied"


class Throttled(KeyrackError):
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, code: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Unavailable(KeyrackError):
    """Something the operation needs (the database) cannot be reached; retrying may work.

    ``reason`` is the driver's own words, for the operator (``for_operator``); it may
    name hosts and ports, so it never goes into an HTTP answer.
    """

    code = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason

    @property
    def for_operator(self) -> str:
        return f"{self.detail} ({self.reason})" if self.reason else self.detail
