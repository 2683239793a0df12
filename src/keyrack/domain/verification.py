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
from datetime import datetime
from typing import Any, NamedTuple

from keyrack.domain.keys import KEY_LENGTH, Environment, is_well_formed, raw_digest


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


class Deadlines(NamedTuple):
    """A key's deadlines and retirement; most keys have none (``KeyProfile.deadlines`` is
    then None)."""

    expires_at: datetime | None
    secret_valid_until: datetime | None
    retired: Retirement | None


class KeyProfile(NamedTuple):
    """All of a key but its id, ref and name: what it shares with many others (its
    organization, limits, permissions, address ranges; its deadlines, which most keys do
    not have). One interned copy serves every key with the same (``KeyIdentity.shared``)."""

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
    allowed_cidrs: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    owner_is_staff: bool
    deadlines: Deadlines | None
    ref_length: int
    """Where the ref ends in ``KeyIdentity._label`` (ref and name are one string)."""


class KeyIdentity:
    """What a verified secret stands for: a cacheable snapshot, no secret inside.

    Compact, since the verification cache holds one per key: three slots (the key id,
    ref and name as one string, the shared ``KeyProfile``); every field reads as an
    attribute. Immutable.
    """

    __slots__ = ("_label", "key_id", "profile")

    key_id: int
    _label: str
    profile: KeyProfile

    def __init__(
        self,
        *,
        key_id: int,
        ref: str,
        name: str,
        org_id: int,
        org_slug: str,
        org_api_enabled: bool,
        location_id: int | None,
        owner_id: int | None,
        environment: Environment,
        permissions: frozenset[str],
        rate_per_second: int,
        concurrency: int,
        status: KeyStatus,
        expires_at: datetime | None,
        secret_valid_until: datetime | None,
        allowed_cidrs: tuple[str, ...] = (),
        allowed_origins: tuple[str, ...] = (),
        owner_is_staff: bool = False,
        retired: Retirement | None = None,
    ) -> None:
        deadlines = (
            None
            if expires_at is None and secret_valid_until is None and retired is None
            else Deadlines(expires_at, secret_valid_until, retired)
        )
        profile = KeyProfile(
            org_id,
            org_slug,
            org_api_enabled,
            location_id,
            owner_id,
            environment,
            permissions,
            rate_per_second,
            concurrency,
            status,
            allowed_cidrs,
            allowed_origins,
            owner_is_staff,
            deadlines,
            len(ref),
        )
        self._set(key_id, ref + name, profile)

    def _set(self, key_id: int, label: str, profile: KeyProfile) -> None:
        setter = object.__setattr__
        setter(self, "key_id", key_id)
        setter(self, "_label", label)
        setter(self, "profile", profile)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"KeyIdentity is immutable ({name})")

    def shared(self, shared: dict[object, Any]) -> KeyIdentity:
        """This identity with its profile (and the values inside it) taken from ``shared``
        when an equal one is there, and added to it otherwise."""
        profile = shared.get(self.profile)
        if profile is None:
            p = self.profile
            profile = p._replace(
                org_slug=shared.setdefault(p.org_slug, p.org_slug),
                permissions=shared.setdefault(p.permissions, p.permissions),
                allowed_cidrs=shared.setdefault(p.allowed_cidrs, p.allowed_cidrs),
                allowed_origins=shared.setdefault(p.allowed_origins, p.allowed_origins),
            )
            shared[profile] = profile
        compact = object.__new__(KeyIdentity)
        compact._set(self.key_id, self._label, profile)
        return compact

    def replace(self, **changes: Any) -> KeyIdentity:
        """A copy with ``changes`` (constructor keywords) applied."""
        fields = {name: getattr(self, name) for name in _FIELDS} | changes
        return KeyIdentity(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyIdentity):
            return NotImplemented
        return (self.key_id, self._label, self.profile) == (
            other.key_id,
            other._label,
            other.profile,
        )

    def __hash__(self) -> int:
        return hash((self.key_id, self._label, self.profile))

    def __repr__(self) -> str:
        return f"KeyIdentity(key_id={self.key_id!r}, ref={self.ref!r}, org_id={self.org_id!r})"

    @property
    def ref(self) -> str:
        return self._label[: self.profile.ref_length]

    @property
    def name(self) -> str:
        return self._label[self.profile.ref_length :]

    @property
    def org_id(self) -> int:
        return self.profile.org_id

    @property
    def org_slug(self) -> str:
        return self.profile.org_slug

    @property
    def org_api_enabled(self) -> bool:
        return self.profile.org_api_enabled

    @property
    def location_id(self) -> int | None:
        return self.profile.location_id

    @property
    def owner_id(self) -> int | None:
        return self.profile.owner_id

    @property
    def environment(self) -> Environment:
        return self.profile.environment

    @property
    def permissions(self) -> frozenset[str]:
        return self.profile.permissions

    @property
    def rate_per_second(self) -> int:
        return self.profile.rate_per_second

    @property
    def concurrency(self) -> int:
        return self.profile.concurrency

    @property
    def status(self) -> KeyStatus:
        return self.profile.status

    @property
    def allowed_cidrs(self) -> tuple[str, ...]:
        return self.profile.allowed_cidrs

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        return self.profile.allowed_origins

    @property
    def owner_is_staff(self) -> bool:
        """The key acts as a platform staff user: it may call the staff API."""
        return self.profile.owner_is_staff

    @property
    def deadlines(self) -> Deadlines | None:
        return self.profile.deadlines

    @property
    def expires_at(self) -> datetime | None:
        deadlines = self.profile.deadlines
        return None if deadlines is None else deadlines.expires_at

    @property
    def secret_valid_until(self) -> datetime | None:
        deadlines = self.profile.deadlines
        return None if deadlines is None else deadlines.secret_valid_until

    @property
    def retired(self) -> Retirement | None:
        """Set when the secret it was found under stopped working for good (the key's own
        state may have moved on since)."""
        deadlines = self.profile.deadlines
        return None if deadlines is None else deadlines.retired


_FIELDS = (
    "key_id",
    "ref",
    "name",
    *(name for name in KeyProfile._fields if name not in ("deadlines", "ref_length")),
    *Deadlines._fields,
)


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
Known = Callable[[bytes], tuple[KeyIdentity | None] | None]
"""A raw digest's identity when it is known (boxed; ``(None,)``: known to be no key), or
None when it has to be read."""


class Miss(NamedTuple):
    """``verify`` knows nothing of ``digest`` (hex): read its identity, then ``check`` it."""

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
    wanted = raw_digest(presented)
    boxed = known(wanted)
    if boxed is not None and boxed[0] is not None:
        return check(boxed[0], clock)
    if not (
        (imported and wanted.hex() in imported)
        or (len(presented) == KEY_LENGTH and is_well_formed(presented))
    ):
        return MALFORMED
    if boxed is not None:
        return NOT_FOUND
    return Miss(wanted.hex())


def is_current(digest: str, valid_until: datetime | None, wanted: str, clock: Clock) -> bool:
    """Whether a stored secret (its ``digest``, and ``valid_until`` once rolled) is the one
    whose digest is ``wanted``, and still in force (constant-time compare)."""
    return hmac.compare_digest(digest, wanted) and (valid_until is None or clock() < valid_until)


def check(identity: KeyIdentity | None, clock: Clock) -> Verdict:
    """The verdict for the identity found under the presented secret's digest (or None).

    A retired secret, and a rolled-away one past its grace, is told apart from garbage
    (``EXPIRED`` / ``REVOKED``, so the refusal can say when and why). ``clock`` is read
    only for a key with a deadline (most have none).
    """
    if identity is None:
        return NOT_FOUND
    profile = identity.profile
    deadlines = profile.deadlines
    if deadlines is not None:
        if deadlines.retired is not None:
            return Verdict(deadlines.retired.reason.status, identity)
        if deadlines.secret_valid_until is not None and clock() >= deadlines.secret_valid_until:
            return Verdict(VerdictStatus.REVOKED, identity)
    if profile.status is KeyStatus.REVOKED:
        return Verdict(VerdictStatus.REVOKED, identity)
    if profile.status is KeyStatus.EXPIRED or (
        deadlines is not None
        and deadlines.expires_at is not None
        and clock() >= deadlines.expires_at
    ):
        return Verdict(VerdictStatus.EXPIRED, identity)
    if not profile.org_api_enabled:
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
