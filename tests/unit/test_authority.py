"""The authority rule as a pure function: who may hold a key, and what a key-made key inherits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from keyrack.domain.authority import (
    ALLOWED,
    Authority,
    Bounds,
    Powers,
    Rank,
    Refusal,
    check,
    inherit,
)
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Role

NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PARENT = Powers(
    owner=Rank.ADMIN,
    permissions=frozenset({"keys:manage", "clients:read"}),
    rate_per_second=2,
    concurrency=1,
    allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"),
    expires_at=NOON,
    environment=Environment.PRODUCTION,
    location_id=7,
)
KEY = Authority.of_key(PARENT)
WITHIN = replace(PARENT, permissions=frozenset({"clients:read"}), allowed_cidrs=("10.1.0.0/16",))


def test_ranks_follow_roles_with_staff_above_all_and_nobody_below() -> None:
    assert Rank.of(None) < Rank.of(Role.MEMBER) < Rank.of("admin") < Rank.of(Role.OWNER)
    assert Rank.of(Role.MEMBER, is_staff=True) is Rank.STAFF > Rank.OWNER


@pytest.mark.parametrize(
    ("actor", "owner", "allowed"),
    [
        (Rank.ADMIN, Rank.ADMIN, True),
        (Rank.ADMIN, Rank.OWNER, False),
        (Rank.OWNER, Rank.STAFF, False),
        (Rank.NOBODY, Rank.MEMBER, False),
        (Rank.STAFF, Rank.STAFF, True),
    ],
)
def test_nobody_holds_a_key_acting_as_someone_above_them(
    actor: Rank, owner: Rank, allowed: bool
) -> None:
    ruling = check(Authority(actor), replace(PARENT, owner=owner))
    assert ruling.allowed is allowed
    assert allowed or ruling.refusal is Refusal.OUTRANKED


def test_a_person_acts_under_their_role_only() -> None:
    strong = replace(PARENT, permissions=frozenset({"keys:manage", "usage:write"}), expires_at=None)
    assert check(Authority(Rank.ADMIN), strong) is ALLOWED


def test_a_key_holds_what_lies_within_it_and_itself() -> None:
    assert check(KEY, WITHIN).allowed
    assert check(KEY, PARENT).allowed


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"permissions": frozenset({"usage:write"})}, Refusal.PERMISSIONS),
        ({"rate_per_second": 3}, Refusal.LIMITS),
        ({"concurrency": 2}, Refusal.LIMITS),
        ({"allowed_cidrs": ()}, Refusal.NETWORKS),
        ({"allowed_cidrs": ("10.0.0.0/7",)}, Refusal.NETWORKS),
        ({"allowed_cidrs": ("10.1.0.0/16", "192.0.2.1/32")}, Refusal.NETWORKS),
        ({"allowed_cidrs": ("::ffff:10.0.0.1/128",)}, Refusal.NETWORKS),
        ({"expires_at": None}, Refusal.EXPIRY),
        ({"expires_at": NOON + timedelta(seconds=1)}, Refusal.EXPIRY),
        ({"location_id": None}, Refusal.LOCATION),
        ({"location_id": 8}, Refusal.LOCATION),
        ({"owner": Rank.OWNER}, Refusal.OUTRANKED),
    ],
)
def test_a_key_holds_nothing_stronger_than_itself(
    change: dict[str, object], refusal: Refusal
) -> None:
    ruling = check(KEY, replace(WITHIN, **change))  # type: ignore[arg-type]
    assert ruling.refusal is refusal and ruling.detail


def test_a_sandbox_key_holds_no_production_key_and_a_production_key_may_hold_sandbox() -> None:
    sandbox = Authority.of_key(replace(PARENT, environment=Environment.SANDBOX))
    assert check(sandbox, WITHIN).refusal is Refusal.ENVIRONMENT
    assert check(KEY, replace(WITHIN, environment=Environment.SANDBOX)).allowed


def test_an_unfenced_undying_agency_key_bounds_nothing_of_those() -> None:
    wide = Authority.of_key(replace(PARENT, allowed_cidrs=(), expires_at=None, location_id=None))
    assert check(wide, replace(WITHIN, allowed_cidrs=(), expires_at=None)).allowed


def test_a_staff_key_is_bounded_by_nothing() -> None:
    staff = Authority.of_key(replace(PARENT, owner=Rank.STAFF, permissions=frozenset()))
    assert check(staff, replace(WITHIN, owner=Rank.STAFF)) is ALLOWED


def test_a_key_made_key_inherits_what_it_left_unset_where_the_default_is_wider() -> None:
    unset = Bounds(None, None, (), None)
    assert inherit(KEY, unset, plan_rate=5, plan_concurrency=1) == Bounds(
        2, None, PARENT.allowed_cidrs, NOON
    )
    asked = Bounds(1, 1, ("10.0.0.1/32",), NOON - timedelta(hours=1))
    assert inherit(KEY, asked, plan_rate=5, plan_concurrency=1) == asked


def test_what_people_ask_for_stands_as_asked() -> None:
    unset = Bounds(None, None, (), None)
    assert inherit(Authority(Rank.ADMIN), unset, plan_rate=5, plan_concurrency=1) == unset
