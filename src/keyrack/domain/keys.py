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
import secrets
import zlib
from dataclasses import dataclass

from keyrack.errors import InvalidInput

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(ALPHABET)
BODY_LENGTH = 32
CHECK_LENGTH = 6
PREFIX_LENGTH = len("kr_live_")
KEY_LENGTH = PREFIX_LENGTH + BODY_LENGTH + CHECK_LENGTH
MASK = "••••••••"


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


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def checksum(payload: str) -> str:
    return _base62(zlib.crc32(payload.encode()), CHECK_LENGTH)


def digest(secret: str) -> str:
    """Hex SHA-256 of the whole key: fast and sufficient for 190-bit secrets."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate(environment: Environment) -> GeneratedKey:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    payload = environment.prefix + body
    secret = payload + checksum(payload)
    return GeneratedKey(
        secret=secret, prefix=environment.prefix, digest=digest(secret), last4=secret[-4:]
    )


def is_well_formed(candidate: str) -> bool:
    """True when ``candidate`` has the key shape and a valid checksum (no lookup)."""
    if len(candidate) != KEY_LENGTH or candidate[:PREFIX_LENGTH] not in _PREFIXES:
        return False
    tail = candidate[PREFIX_LENGTH:]
    if not _ALPHABET_SET.issuperset(tail):
        return False
    payload, check = candidate[:-CHECK_LENGTH], candidate[-CHECK_LENGTH:]
    return hmac.compare_digest(checksum(payload), check)


def environment_of(secret: str) -> Environment:
    return _PREFIXES[secret[:PREFIX_LENGTH]]


def mask(prefix: str, last4: str) -> str:
    """The form a key is shown in after its reveal window: ``kr_live_••••••••abcd``."""
    return f"{prefix}{MASK}{last4}"


def looks_like_key(candidate: str) -> bool:
    """Cheap test used to spot keys in places they do not belong (query strings, leaks)."""
    return candidate.startswith(("kr_live_", "kr_test_"))


def normalize_cidrs(cidrs: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Canonical CIDR strings for an IP allow-list; bad entries are refused."""
    out = set()
    for cidr in cidrs:
        try:
            out.add(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise InvalidInput(f"not an IP address or CIDR block: {cidr!r}") from None
    return tuple(sorted(out))
