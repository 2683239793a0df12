"""The Python SDK: ``Client`` and the errors it raises (hierarchy in ``_errors``)."""

from keyrack.client._client import Client
from keyrack.client._errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    KeyrackError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
)
from keyrack.client._pagination import Page

__all__ = [
    "APIError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "KeyrackError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "ValidationError",
]
