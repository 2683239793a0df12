"""Organizations, locations, users, seats and first run, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from keyrack.domain.tenancy import OrgKind, Role
from keyrack.errors import AccessDenied, Conflict, InvalidInput
from keyrack.services import tenancy
from keyrack.services.context import Actor, Context
from tests.conftest import OPERATOR


def test_org_slugs_are_unique_and_validated(ctx: Context) -> None:
    tenancy.create_org(ctx, OPERATOR, name="Acme", slug="acme", kind=OrgKind.VENDOR)
    with pytest.raises(Conflict):
        tenancy.create_org(ctx, OPERATOR, name="Acme 2", slug="acme")
    with pytest.raises(InvalidInput):
        tenancy.create_org(ctx, OPERATOR, name="Bad", slug="Not A Slug")


def test_new_orgs_follow_the_api_enabled_default(ctx: Context) -> None:
    assert tenancy.create_org(ctx, OPERATOR, name="A", slug="a").api_enabled
    ctx.settings.api_enabled_by_default = False
    assert not tenancy.create_org(ctx, OPERATOR, name="B", slug="b").api_enabled


def test_only_staff_switch_api_access(ctx: Context) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="A", slug="a")
    admin = Actor(label="user:admin@a", org_id=org.id)
    with pytest.raises(AccessDenied):
        tenancy.update_org(ctx, admin, "a", api_enabled=False)
    assert not tenancy.update_org(ctx, OPERATOR, "a", api_enabled=False).api_enabled


def test_billable_seats_count_active_humans_only(ctx: Context) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="A", slug="a")
    tenancy.create_user(ctx, OPERATOR, org_slug="a", email="o@a.test", role=Role.OWNER)
    bob = tenancy.create_user(ctx, OPERATOR, org_slug="a", email="b@a.test").user
    tenancy.create_user(ctx, OPERATOR, org_slug="a", email="api@a.test", service=True)
    assert tenancy.seat_count(ctx, org.id) == 2
    tenancy.set_user_active(ctx, OPERATOR, bob.id, False)
    assert tenancy.seat_count(ctx, org.id) == 1


def test_passwords_are_argon2id_and_authenticate(ctx: Context) -> None:
    tenancy.create_org(ctx, OPERATOR, name="A", slug="a")
    created = tenancy.create_user(ctx, OPERATOR, org_slug="a", email="o@a.test", role=Role.OWNER)
    assert created.password and created.user.password_hash
    assert created.user.password_hash.startswith("$argon2id$")
    assert created.password not in created.user.password_hash
    assert tenancy.authenticate(ctx, "O@A.test", created.password) is not None
    assert tenancy.authenticate(ctx, "o@a.test", "wrong password!") is None
    assert tenancy.authenticate(ctx, "nobody@a.test", created.password) is None


def test_service_users_have_no_password(ctx: Context) -> None:
    tenancy.create_org(ctx, OPERATOR, name="A", slug="a")
    created = tenancy.create_user(ctx, OPERATOR, org_slug="a", email="api@a.test", service=True)
    assert created.password is None and created.user.password_hash is None
    assert created.user.name == "API Access"


def test_first_run_creates_one_owner_once(ctx: Context) -> None:
    first = tenancy.bootstrap(ctx)
    assert first is not None
    user = tenancy.authenticate(ctx, first.email, first.password)
    assert user is not None and user.role == "owner" and user.is_staff
    assert tenancy.bootstrap(ctx) is None
