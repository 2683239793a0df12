"""Key verification: a presented string in, a ``Verdict`` out.

``verify`` is the one procedure (shape, digest, what is known, ``check``); the server's
verifier (``keyrack.cache.keycache.CachedVerifier``) runs it over its cache and reads
a miss from the database. Verification never raises on the hot path; the HTTP edge
turns a non-valid verdict into a problem document. A malformed string (wrong shape or
checksum) is refused before any lookup.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from keyrack.domain.keys import KEY_LENGTH, Environment, digest, is_well_formed


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class VerdictStatus(enum.StrEnum):
    VALID = "VALID"
    MALFORMED = "MALFORMED"
    NOT_FOUND = "NOT_FOUND"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    DISABLED = "DISABLED"

    @property
    def problem_code(self) -> str:
        return _PROBLEM_CODES[self]


_PROBLEM_CODES = {
    VerdictStatus.VALID: "",
    VerdictStatus.MALFORMED: "malformed-key",
    VerdictStatus.NOT_FOUND: "invalid-key",
    VerdictStatus.REVOKED: "revoked-key",
    VerdictStatus.EXPIRED: "expired-key",
    VerdictStatus.DISABLED: "api-disabled",
}


class RetiredReason(enum.StrEnum):
    """Why a secret stopped working for good (its digest is kept to say so)."""

    INACTIVITY = "inactivity"
    """the key was deleted after ``inactivity_days`` unused"""
    EXPIRY = "expiry"
    """the key reached its ``expires_at``"""
    ROLLED = "rolled"
    """a newer secret replaced it"""

    @property
    def status(self) -> VerdictStatus:
        return VerdictStatus.REVOKED if self is RetiredReason.ROLLED else VerdictStatus.EXPIRED


class Retirement(NamedTuple):
    """A retired secret: why, since when, and (inactivity) after how many idle days."""

    reason: RetiredReason
    at: datetime
    idle_days: int | None = None


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What a verified secret stands for: a cacheable snapshot, no secret inside."""

    digest: str
    key_id: int
    ref: str
    name: str
    org_id: int
    org_slug: str
    org_api_enabled: bool
    location_id: int | None
    owner_id: int | None
    environment: Environment
    permissions: frozenset[str]
    rate_per_second: int
    concurrency: int
    status: KeyStatus
    expires_at: datetime | None
    secret_valid_until: datetime | None
    allowed_cidrs: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    owner_is_staff: bool = False
    """The key acts as a platform staff user: it may call the staff API."""
    retired: Retirement | None = None
    """Set when ``digest`` is a secret that stopped working for good (the key's own
    state may have moved on since)."""


class Verdict(NamedTuple):
    """Immutable and cheap to build: one is made per request."""

    status: VerdictStatus
    key: KeyIdentity | None = None

    @property
    def valid(self) -> bool:
        return self.status is VerdictStatus.VALID


MALFORMED = Verdict(VerdictStatus.MALFORMED)
NOT_FOUND = Verdict(VerdictStatus.NOT_FOUND)

Clock = Callable[[], datetime]
Known = Callable[[str], tuple[KeyIdentity | None] | None]
"""A digest's identity when it is known (boxed; ``(None,)``: known to be no key), or None
when it has to be read."""


class Miss(NamedTuple):
    """``verify`` knows nothing of ``digest``: read its identity, then ``check`` it."""

    digest: str


NO_IMPORTS: frozenset[str] = frozenset()


def verify(
    presented: str, known: Known, clock: Clock, imported: Container[str] = NO_IMPORTS
) -> Verdict | Miss:
    """The verdict for the ``presented`` string from what is ``known`` (a cache), or the
    ``Miss`` to read first.

    A digest known to be a key's needs no shape check: it is the digest of a real key.
    Anything else is shape- and checksum-checked before it may cost a read, unless its
    digest is one of the ``imported`` secrets' (brought over from another system, they
    lack the ``kr_`` shape); with none imported, a string of the wrong length is not
    even digested.
    """
    if len(presented) != KEY_LENGTH and not imported:
        return MALFORMED
    wanted = digest(presented)
    boxed = known(wanted)
    if boxed is not None and boxed[0] is not None:
        return check(boxed[0], wanted, clock)
    if not (wanted in imported or (len(presented) == KEY_LENGTH and is_well_formed(presented))):
        return MALFORMED
    if boxed is not None:
        return NOT_FOUND
    return Miss(wanted)


def is_current(digest: str, valid_until: datetime | None, wanted: str, clock: Clock) -> bool:
    """Whether a stored secret (its ``digest``, and ``valid_until`` once rolled) is the one
    whose digest is ``wanted``, and still in force (constant-time compare)."""
    return hmac.compare_digest(digest, wanted) and (valid_until is None or clock() < valid_until)


def check(identity: KeyIdentity | None, wanted: str, clock: Clock) -> Verdict:
    """The verdict for the identity found under the digest ``wanted`` (or None).

    A retired secret, and a rolled-away one past its grace, is told apart from garbage
    (``EXPIRED`` / ``REVOKED``, so the refusal can say when and why). ``clock`` is read
    only for a key with a deadline (most have none).
    """
    if identity is None or not hmac.compare_digest(identity.digest, wanted):
        return NOT_FOUND
    if identity.retired is not None:
        return Verdict(identity.retired.reason.status, identity)
    if identity.secret_valid_until is not None and clock() >= identity.secret_valid_until:
        return Verdict(VerdictStatus.REVOKED, identity)
    if identity.status is KeyStatus.REVOKED:
        return Verdict(VerdictStatus.REVOKED, identity)
    if identity.status is KeyStatus.EXPIRED or (
        identity.expires_at is not None and clock() >= identity.expires_at
    ):
        return Verdict(VerdictStatus.EXPIRED, identity)
    if not identity.org_api_enabled:
        return Verdict(VerdictStatus.DISABLED, identity)
    return Verdict(VerdictStatus.VALID, identity)


class RemoteCode(enum.StrEnum):
    """The answer of ``POST /api/v2/keys/verify`` (SPEC §6), for services verifying keys."""

    VALID = "VALID"
    NOT_FOUND = "NOT_FOUND"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    RATE_LIMITED = "RATE_LIMITED"
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
    DISABLED = "DISABLED"


_REMOTE_CODES = {
    VerdictStatus.VALID: RemoteCode.VALID,
    VerdictStatus.MALFORMED: RemoteCode.NOT_FOUND,
    VerdictStatus.NOT_FOUND: RemoteCode.NOT_FOUND,
    VerdictStatus.REVOKED: RemoteCode.REVOKED,
    VerdictStatus.EXPIRED: RemoteCode.EXPIRED,
    VerdictStatus.DISABLED: RemoteCode.DISABLED,
}


def remote_code(verdict: Verdict, required: frozenset[str] = frozenset()) -> RemoteCode:
    """The verify-endpoint code for a verdict and the permissions the caller requires."""
    code = _REMOTE_CODES[verdict.status]
    if (
        code is RemoteCode.VALID
        and verdict.key is not None
        and not required <= verdict.key.permissions
    ):
        return RemoteCode.INSUFFICIENT_PERMISSIONS
    return code
