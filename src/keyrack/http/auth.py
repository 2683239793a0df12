"""Finding the API key in a request, and turning a verdict into a principal or an error."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from keyrack.domain.verification import KeyIdentity, Verdict, VerdictStatus
from keyrack.errors import AccessDenied, AuthenticationFailed

QUERY_KEY_NAMES = ("api_key", "key", "token", "access_token")


class KeyParser:
    """One method per place a key may be presented (SPEC §4)."""

    def from_x_api_key(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("x-api-key", "").strip()
        return value or None

    def from_authorization(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
        credentials = credentials.strip()
        if not credentials:
            return None
        if scheme.lower() == "bearer":
            return credentials
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, _password = decoded.partition(":")
            return user.strip() or None
        return None

    def from_headers(self, headers: Mapping[str, str]) -> str | None:
        return self.from_x_api_key(headers) or self.from_authorization(headers)

    def from_query(self, query: Mapping[str, str]) -> str | None:
        """A key in the URL: never accepted, only detected so it can be revoked as leaked."""
        for name in QUERY_KEY_NAMES:
            value = query.get(name)
            if value:
                return value
        return None


def principal_from(verdict: Verdict) -> KeyIdentity:
    """The identity of a valid verdict; otherwise the matching error."""
    if verdict.valid and verdict.key is not None:
        return verdict.key
    code = verdict.status.problem_code
    if verdict.status is VerdictStatus.DISABLED:
        raise AccessDenied("API access is disabled for this organization", code=code)
    messages = {
        "malformed-key": "the API key is not well formed (check for a copy/paste error)",
        "invalid-key": "the API key is not valid",
        "revoked-key": "the API key has been revoked",
        "expired-key": "the API key has expired",
    }
    raise AuthenticationFailed(messages[code], code=code)
