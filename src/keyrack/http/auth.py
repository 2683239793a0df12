"""Finding the API key in a request."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import parse_qsl

from keyrack.domain.keys import looks_like_key
from keyrack.errors import AuthenticationFailed

QUERY_KEY_NAMES = frozenset({"api_key", "key", "token", "access_token"})


class KeyParser:
    """One method per place a key may be presented (SPEC §4).

    Header methods return the presented string (not yet checked) or None when that
    header is absent; a header that is there but unusable raises ``malformed-key``.
    """

    def from_x_api_key(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("x-api-key", "").strip()
        return value or None

    def from_authorization(self, headers: Mapping[str, str]) -> str | None:
        header = headers.get("authorization", "").strip()
        if not header:
            return None
        scheme, _, credentials = header.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and credentials:
            return credentials
        if scheme == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _malformed("the Basic credentials are not valid base64") from None
            user, _, _password = decoded.partition(":")
            if user.strip():
                return user.strip()
            raise _malformed("send the API key as the Basic user name")
        raise _malformed("use Authorization: Bearer <key>, Basic, or the X-API-Key header")

    def from_headers(self, headers: Mapping[str, str]) -> str | None:
        return self.from_x_api_key(headers) or self.from_authorization(headers)

    def from_query(self, query_string: bytes) -> str | None:
        """A key in the URL: never accepted, only found so it can be revoked as leaked.

        Refused are a key-shaped value under any name, and any value under the usual
        credential names (``api_key``, ``key``, ``token``, ``access_token``).
        """
        if not query_string:
            return None
        found = None
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=False):
            if looks_like_key(value.strip()):
                return value.strip()
            if name.lower() in QUERY_KEY_NAMES and found is None:
                found = value.strip()
        return found or None

    def from_path(self, path: str) -> str | None:
        """A key-shaped path segment (e.g. ``/api/v2/keys/kr_live_…`` in place of a ref)."""
        if "kr_" not in path:
            return None
        for segment in path.split("/"):
            if looks_like_key(segment.strip()):
                return segment.strip()
        return None


def _malformed(detail: str) -> AuthenticationFailed:
    return AuthenticationFailed(detail, code="malformed-key")
