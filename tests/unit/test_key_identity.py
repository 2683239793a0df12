"""KeyIdentity: compact (three slots, a shared profile), yet every field reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyrack.domain.keys import Environment
from keyrack.domain.verification import (
    KeyIdentity,
    KeyStatus,
    RetiredReason,
    Retirement,
    VerdictStatus,
    check,
)

FIELDS: dict[str, object] = {
    "key_id": 123_456,
    "ref": "key_01JD0000000000000000000042",
    "name": "CRM sync ünïcode",
    "org_id": 7,
    "org_slug": "acme",
    "org_api_enabled": True,
    "location_id": 3,
    "owner_id": 9,
    "environment": Environment.PRODUCTION,
    "permissions": frozenset({"clients:read"}),
    "rate_per_second": 5,
    "concurrency": 2,
    "status": KeyStatus.ACTIVE,
    "expires_at": datetime(2027, 1, 1, tzinfo=UTC),
    "secret_valid_until": None,
    "allowed_cidrs": ("10.0.0.0/8",),
    "allowed_origins": ("https://app.example",),
    "owner_is_staff": True,
    "retired": None,
}


def test_every_field_reads_back_and_replace_changes_only_what_it_names() -> None:
    identity = KeyIdentity(**FIELDS)  # type: ignore[arg-type]
    assert {name: getattr(identity, name) for name in FIELDS} == FIELDS
    moved = identity.replace(name="renamed", rate_per_second=9)
    assert (moved.name, moved.rate_per_second, moved.ref) == ("renamed", 9, FIELDS["ref"])
    assert moved != identity and moved.replace(name=FIELDS["name"], rate_per_second=5) == identity
    with pytest.raises(AttributeError):
        identity.key_id = 1  # type: ignore[misc]


def test_keys_alike_share_one_profile() -> None:
    shared: dict[object, object] = {}
    one = KeyIdentity(**FIELDS).shared(shared)  # type: ignore[arg-type]
    two = KeyIdentity(**(FIELDS | {"key_id": 2, "ref": "key_01JD0000000000000000000002"})).shared(
        shared
    )  # type: ignore[arg-type]
    assert one.profile is two.profile and two.ref.endswith("02") and two.name == FIELDS["name"]
    assert not hasattr(one, "__dict__")


def test_deadlines_in_the_profile_still_decide_the_verdict() -> None:
    now = datetime(2027, 6, 1, tzinfo=UTC)
    expired = KeyIdentity(**FIELDS)  # type: ignore[arg-type]
    assert check(expired, lambda: now).status is VerdictStatus.EXPIRED
    retired = expired.replace(retired=Retirement(RetiredReason.ROLLED, now), expires_at=None)
    assert check(retired, lambda: now).status is VerdictStatus.REVOKED
    fine = expired.replace(expires_at=None)
    assert fine.deadlines is None and check(fine, lambda: now).valid
