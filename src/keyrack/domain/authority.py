"""Who may hold a key: the one rule behind creating, changing, rolling, revoking and claiming keys.

Creating a key, changing it, rolling it (and so reading its new secret), revoking it,
and opening its production-key claim all hand its power to the actor, or take it away
from someone else. So an actor may do any of them only with a key it could have made
itself (a change is checked on the key as it is and as it will be):

* **Rank.** The key acts as its owner; it must not act as someone above the actor.
  Platform staff rank above an organization's owners, owners above admins, admins above
  members, members above nobody (a key without an owner acts as nobody in particular).
  A person ranks by their role; an API key by its owner. Staff may hold any key.
* **Reach**, when the actor is an API key: a key hands out no more than it holds. The
  other key has only permissions the actor has; an effective rate and concurrency (the
  plan's default where it sets none) no higher than the actor's; when the actor is
  fenced to networks, only networks inside them; when the actor expires, an expiry no
  later (and not none); production only when the actor is production; and when the
  actor is a location key, that location.

People in the console act under their role: for them only the rank counts. Without
the rule, ``keys:manage`` (or an admin's seat) would lead to any permission, past any
limit, and to platform staff, by rolling a stronger key and reading its secret.

``inherit`` fills what a key-made key leaves unset so that it starts within its maker.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Role


class Rank(enum.IntEnum):
    """How much power someone (or the key acting as them) has; higher outranks lower."""

    NOBODY = 0
    MEMBER = 1
    ADMIN = 2
    OWNER = 3
    STAFF = 4

    @classmethod
    def of(cls, role: Role | str | None, *, is_staff: bool = False) -> Rank:
        """A user's rank (staff above any role); ``role=None``: no user at all."""
        if is_staff:
            return cls.STAFF
        return cls.NOBODY if role is None else _ROLE_RANKS[Role(role)]

    @property
    def label(self) -> str:
        return _LABELS[self]


_ROLE_RANKS = {Role.MEMBER: Rank.MEMBER, Role.ADMIN: Rank.ADMIN, Role.OWNER: Rank.OWNER}
_LABELS = {
    Rank.NOBODY: "nobody in particular",
    Rank.MEMBER: "a member",
    Rank.ADMIN: "an admin",
    Rank.OWNER: "an owner",
    Rank.STAFF: "platform staff",
}


@dataclass(frozen=True, slots=True)
class Powers:
    """What a key can do (or would, once made or changed): what the rule compares."""

    owner: Rank
    permissions: frozenset[str]
    rate_per_second: int
    """Effective: the key's own, else its organization plan's default."""
    concurrency: int
    allowed_cidrs: tuple[str, ...] = ()
    """Empty: usable from anywhere."""
    expires_at: datetime | None = None
    environment: Environment = Environment.SANDBOX
    location_id: int | None = None
    """None: an agency key (the whole organization)."""


@dataclass(frozen=True, slots=True)
class Authority:
    """Who acts: a person of some rank, or an API key (ranked as its owner)."""

    rank: Rank
    key: Powers | None = None

    @classmethod
    def of_key(cls, powers: Powers) -> Authority:
        return cls(powers.owner, powers)

    @property
    def bound(self) -> Powers | None:
        """The key whose powers bound what this actor hands out (None: a person, or staff)."""
        return None if self.rank is Rank.STAFF else self.key


class Refusal(enum.StrEnum):
    OUTRANKED = "outranked"
    PERMISSIONS = "permissions"
    LIMITS = "limits"
    NETWORKS = "networks"
    EXPIRY = "expiry"
    ENVIRONMENT = "environment"
    LOCATION = "location"


class Ruling(NamedTuple):
    """``check``'s answer: allowed, or the refusal and a sentence for the caller."""

    refusal: Refusal | None = None
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.refusal is None


ALLOWED = Ruling()


def check(actor: Authority, key: Powers) -> Ruling:
    """Whether ``actor`` may hold (create, change, roll, revoke, claim) a key with ``key``'s powers."""
    if key.owner > actor.rank:
        whom = "this key, which acts as" if actor.key is not None else "you, who are"
        return Ruling(
            Refusal.OUTRANKED,
            f"that key acts as {key.owner.label}, above {whom} {actor.rank.label}",
        )
    parent = actor.bound
    return ALLOWED if parent is None else _within(parent, key)


def _within(parent: Powers, key: Powers) -> Ruling:
    beyond = sorted(key.permissions - parent.permissions)
    if beyond:
        return _stronger(Refusal.PERMISSIONS, f"permissions this key lacks: {', '.join(beyond)}")
    if key.rate_per_second > parent.rate_per_second or key.concurrency > parent.concurrency:
        return _stronger(
            Refusal.LIMITS,
            f"higher limits than this key's ({parent.rate_per_second}/s, "
            f"{parent.concurrency} in flight)",
        )
    if parent.allowed_cidrs and not _inside(key.allowed_cidrs, parent.allowed_cidrs):
        return _stronger(
            Refusal.NETWORKS,
            f"networks outside this key's allow-list ({', '.join(parent.allowed_cidrs)})",
        )
    if parent.expires_at is not None and (
        key.expires_at is None or key.expires_at > parent.expires_at
    ):
        return _stronger(
            Refusal.EXPIRY, f"a life beyond this key's expiry ({parent.expires_at.isoformat()})"
        )
    if key.environment is Environment.PRODUCTION and parent.environment is Environment.SANDBOX:
        return _stronger(Refusal.ENVIRONMENT, "production access, and this is a sandbox key")
    if parent.location_id is not None and key.location_id != parent.location_id:
        return _stronger(Refusal.LOCATION, "a scope beyond this location key's location")
    return ALLOWED


def _stronger(refusal: Refusal, what: str) -> Ruling:
    return Ruling(refusal, f"that key would be stronger than this one: {what}")


def _inside(cidrs: tuple[str, ...], allowed: tuple[str, ...]) -> bool:
    """Every network of ``cidrs`` lies within one of ``allowed``; none at all means anywhere."""
    if not cidrs:
        return False
    outer = [ipaddress.ip_network(cidr) for cidr in allowed]
    for cidr in cidrs:
        inner = ipaddress.ip_network(cidr)
        if not any(
            inner.version == net.version and inner.subnet_of(net)  # type: ignore[arg-type]
            for net in outer
        ):
            return False
    return True


class Bounds(NamedTuple):
    """A new key's limits as asked for: None (or no networks) where the request set none."""

    rate_per_second: int | None
    concurrency: int | None
    allowed_cidrs: tuple[str, ...]
    expires_at: datetime | None


def inherit(actor: Authority, asked: Bounds, plan_rate: int, plan_concurrency: int) -> Bounds:
    """``asked``, with what a key-made key left unset taken from its maker.

    Left unset, a key runs at its plan's default limits, from anywhere, for ever: more
    than a slower, fenced or expiring maker holds. So it gets the maker's rate or
    concurrency where the plan's default is higher, and the maker's allow-list and
    expiry. A person's (or staff's) choice stands as asked.
    """
    parent = actor.bound
    if parent is None:
        return asked
    rate, concurrency, cidrs, expires_at = asked
    if rate is None and plan_rate > parent.rate_per_second:
        rate = parent.rate_per_second
    if concurrency is None and plan_concurrency > parent.concurrency:
        concurrency = parent.concurrency
    return Bounds(
        rate,
        concurrency,
        cidrs or parent.allowed_cidrs,
        parent.expires_at if expires_at is None else expires_at,
    )
