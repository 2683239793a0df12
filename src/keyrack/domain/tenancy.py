"""Organizations, locations and users: kinds, roles and who may do what."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from keyrack.domain.text import check_plain
from keyrack.errors import InvalidInput

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller sees and manages: an organization (the agency), or one location of it.

    An agency scope covers everything of its organization, whatever its location; a
    location scope covers only what belongs to its location, so nothing of the agency's
    own (no location) and nothing of another organization. ``covers`` is the rule;
    ``keyrack.storage.scoping.within_scope`` is the same rule as a query filter.
    """

    org_id: int
    location_id: int | None = None

    def covers(self, org_id: int, location_id: int | None) -> bool:
        """Whether something of organization ``org_id`` and location ``location_id`` (None:
        the agency's own) is within this scope."""
        return org_id == self.org_id and (
            self.location_id is None or location_id == self.location_id
        )


class OrgKind(enum.StrEnum):
    CUSTOMER = "customer"
    VENDOR = "vendor"


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def manages_settings(self) -> bool:
        """Owners and admins see Settings (API keys, team, integrations)."""
        return self in (Role.OWNER, Role.ADMIN)


class UserKind(enum.StrEnum):
    HUMAN = "human"
    SERVICE = "service"


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.fullmatch(slug):
        raise InvalidInput(
            f"invalid slug {slug!r}: use 1-63 lowercase letters, digits and inner hyphens"
        )
    return slug


def validate_email(email: str) -> str:
    email = check_plain(email, "an email address").strip().lower()
    if not EMAIL_PATTERN.fullmatch(email):
        raise InvalidInput(f"invalid email address {email!r}")
    return email


def validate_name(name: str, what: str = "name", max_length: int = 200) -> str:
    """A display name (or a reason): one line of text without control characters."""
    name = check_plain(name, what).strip()
    if not name or len(name) > max_length:
        raise InvalidInput(f"{what} is required and at most {max_length} characters")
    return name


def billable_seats(users: Iterable[tuple[UserKind, bool]]) -> int:
    """Active human users; service users never count."""
    return sum(1 for kind, active in users if active and kind is UserKind.HUMAN)
