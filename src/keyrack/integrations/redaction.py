"""Redaction of what connectors keep of their calls (failures, exchanges, error texts).

``redact`` is the one function: whatever a connector stores or raises about a call goes
through it with the secrets it knows (its credential's values, tokens it was issued).
It removes, at any depth of strings, mappings and lists:

* mapping entries whose key names a secret (``Authorization``, ``access_token``,
  ``client_secret``, ``api_key``…, and any ``…Signature`` header such as
  ``Keyrack-Signature``: a replayable credential; case, ``-`` and ``_`` ignored);
* in text: the value of ``name=value`` and ``"name": "value"`` pairs with such a name
  (query strings, form bodies, JSON), and a credential (8 characters or more) after ``Bearer``/``Basic``/``OAuth``;
* every occurrence of a known secret, as is or URL-encoded, wherever it stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

REDACTED = "[redacted]"

SECRET_NAMES = frozenset(
    {
        "accesstoken",
        "apikey",
        "authorization",
        "clientsecret",
        "cookie",
        "hapikey",
        "idtoken",
        "password",
        "proxyauthorization",
        "refreshtoken",
        "secret",
        "sessionid",
        "setcookie",
        "signature",
        "token",
        "xapikey",
    }
)

MIN_SECRET = 6
"""Known secrets shorter than this are not searched for (they would match ordinary text)."""

_NAMES = r"access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|api[_-]?key|hapikey|password|session[_-]?id|token|secret|signature"
_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>["']?\b(?:{_NAMES})\b["']?)      # a secret's name, perhaps quoted
    (?P<sep>\s*[:=]\s*)
    (?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^&\s,;}}\]"']+)
    """
)
_WORDS = ("token", "secret", "key", "password", "session", "signature")  # in every name
_SCHEMES = ("bearer", "basic", "oauth")
_SCHEME = re.compile(r"(?i)\b(bearer|basic|oauth)\s+[A-Za-z0-9._~+/=!%$:-]{8,}")


def _is_secret_name(name: str) -> bool:
    plain = name.replace("-", "").replace("_", "").lower()
    return plain in SECRET_NAMES or plain.endswith("signature")


def _text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if any(scheme in lowered for scheme in _SCHEMES):
        text = _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if not any(word in lowered for word in _WORDS):
        return text

    def pair(match: re.Match[str]) -> str:
        value = match.group("value")
        quote_char = value[0] if value[:1] in ('"', "'") else ""
        return f"{match.group('key')}{match.group('sep')}{quote_char}{REDACTED}{quote_char}"

    return _PAIR.sub(pair, text)


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (str, mapping, list or tuple, to any depth) with its secrets replaced by
    ``[redacted]``; other values are returned as they are."""
    spellings = {s for s in secrets if len(s) >= MIN_SECRET}
    spellings |= {quote(s, safe="") for s in spellings}
    return _redact(value, sorted(spellings, key=len, reverse=True))


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _text(value, secrets)
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _is_secret_name(key)
            else _redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(item, secrets) for item in value)
    return value
