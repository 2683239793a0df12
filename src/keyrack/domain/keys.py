"""The API-key format: ``kr_{mode}_{body}{check}``.

``mode`` is ``test`` (sandbox) or ``live`` (production); ``body`` is 32 random
base62 characters (about 190 bits); ``check`` is 6 base62 characters of CRC32
over everything before it, so typos and garbage are refused without a lookup.
Only a SHA-256 digest of the whole key is ever stored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from keyrack.errors import InvalidInput

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECK_LENGTH = 6
PREFIX_LENGTH = len("kr_live_")
KEY_LENGTH = PREFIX_LENGTH + BODY_LENGTH + CHECK_LENGTH
MASK = "••••••••"
_SHAPE = re.compile(rf"kr_(?:live|test)_[0-9A-Za-z]{{{BODY_LENGTH + CHECK_LENGTH}}}")


class Environment(enum.StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"

    @property
    def prefix(self) -> str:
        return "kr_test_" if self is Environment.SANDBOX else "kr_live_"


_PREFIXES = {env.prefix: env for env in Environment}


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A fresh key: the secret goes to the caller once, the rest to storage."""

    secret: str
    prefix: str
    digest: str
    last4: str


def checksum(payload: str) -> str:
    """Six base62 digits of CRC32 (2**32 < 62**6), unrolled: this runs on every request."""
    n = zlib.crc32(payload.encode())
    a = ALPHABET
    return (
        a[n // 916_132_832 % 62]
        + a[n // 14_776_336 % 62]
        + a[n // 238_328 % 62]
        + a[n // 3_844 % 62]
        + a[n // 62 % 62]
        + a[n % 62]
    )


def digest(secret: str) -> str:
    """Hex SHA-256 of the whole key: fast and sufficient for 190-bit secrets."""
    return hashlib.sha256(secret.encode()).hexdigest()


def raw_digest(secret: str) -> bytes:
    """``digest`` as its 32 bytes (the verification cache's key)."""
    return hashlib.sha256(secret.encode()).digest()


def generate(environment: Environment) -> GeneratedKey:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    payload = environment.prefix + body
    secret = payload + checksum(payload)
    return GeneratedKey(
        secret=secret, prefix=environment.prefix, digest=digest(secret), last4=secret[-4:]
    )


def is_well_formed(candidate: str) -> bool:
    """True when ``candidate`` has the key shape and a valid checksum (no lookup)."""
    if _SHAPE.fullmatch(candidate) is None:
        return False
    return hmac.compare_digest(checksum(candidate[:-CHECK_LENGTH]), candidate[-CHECK_LENGTH:])


def environment_of(secret: str) -> Environment:
    return _PREFIXES[secret[:PREFIX_LENGTH]]


def mask(prefix: str, last4: str) -> str:
    """The form a key is shown in after its reveal window: ``kr_live_••••••••abcd``."""
    return f"{prefix}{MASK}{last4}"


def looks_like_key(candidate: str) -> bool:
    """Cheap test used to spot keys in places they do not belong (query strings, leaks)."""
    return candidate.startswith(("kr_live_", "kr_test_"))


def normalize_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Canonical CIDR strings for an IP allow-list; bad entries are refused."""
    out = set()
    for cidr in cidrs:
        try:
            out.add(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise InvalidInput(f"not an IP address or CIDR block: {cidr!r}") from None
    return tuple(sorted(out))
