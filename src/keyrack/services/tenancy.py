"""Organizations, locations, users, staff, and the first-run owner."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyrack.domain import passwords
from keyrack.domain.events import OrgChanged
from keyrack.domain.tenancy import (
    OrgKind,
    Role,
    UserKind,
    billable_seats,
    validate_email,
    validate_name,
    validate_slug,
)
from keyrack.errors import AccessDenied, Conflict, InvalidInput, NotFound
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.storage.tables.tenancy import Location, Organization, User

DEFAULT_ORG_SLUG = "default"


def _org_snapshot(org: Organization) -> dict[str, object]:
    return {
        "slug": org.slug,
        "name": org.name,
        "kind": org.kind,
        "api_enabled": org.api_enabled,
        "plan_rate_per_second": org.plan_rate_per_second,
        "plan_concurrency": org.plan_concurrency,
        "allowed_origins": list(org.allowed_origins),
    }


def _user_snapshot(user: User) -> dict[str, object]:
    return {
        "email": user.email,
        "role": user.role,
        "kind": user.kind,
        "active": user.active,
        "is_staff": user.is_staff,
    }


def org_by_slug(session: Session, slug: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise NotFound(f"no organization with slug {slug!r}")
    return org


def get_org(ctx: Context, slug: str) -> Organization:
    with ctx.db.session() as session:
        return org_by_slug(session, slug)


def get_org_by_id(ctx: Context, org_id: int) -> Organization:
    with ctx.db.session() as session:
        org = session.get(Organization, org_id)
        if org is None:
            raise NotFound(f"no organization with id {org_id}")
        return org


def list_orgs(ctx: Context) -> list[Organization]:
    with ctx.db.session() as session:
        return list(session.scalars(select(Organization).order_by(Organization.slug)))


def create_org(
    ctx: Context,
    actor: Actor,
    *,
    name: str,
    slug: str,
    kind: OrgKind = OrgKind.CUSTOMER,
    api_enabled: bool | None = None,
) -> Organization:
    name = validate_name(name)
    slug = validate_slug(slug)
    now = ctx.clock()
    org = Organization(
        slug=slug,
        name=name,
        kind=OrgKind(kind).value,
        api_enabled=ctx.settings.api_enabled_by_default if api_enabled is None else api_enabled,
        plan="standard",
        plan_rate_per_second=ctx.settings.default_rate_per_second,
        plan_concurrency=ctx.settings.default_concurrency,
        allowed_origins=[],
        created_at=now,
    )
    try:
        with ctx.db.transaction() as session:
            session.add(org)
            session.flush()
            audit.record(
                session,
                actor,
                "org.created",
                now=now,
                org_id=org.id,
                target_type="organization",
                target_ref=slug,
                after=_org_snapshot(org),
            )
    except IntegrityError:
        raise Conflict(f"an organization with slug {slug!r} already exists") from None
    return org


def update_org(
    ctx: Context,
    actor: Actor,
    slug: str,
    *,
    api_enabled: bool | None = None,
    allowed_origins: list[str] | None = None,
    plan_rate_per_second: int | None = None,
    plan_concurrency: int | None = None,
) -> Organization:
    """Change an organization's settings. The API switch and plan are staff-only."""
    if (api_enabled is not None or plan_rate_per_second or plan_concurrency) and not actor.is_staff:
        raise AccessDenied("only platform staff change API access and plans")
    if plan_rate_per_second is not None and plan_rate_per_second < 1:
        raise InvalidInput("plan_rate_per_second must be at least 1")
    if plan_concurrency is not None and plan_concurrency < 1:
        raise InvalidInput("plan_concurrency must be at least 1")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        org = org_by_slug(session, slug)
        if not actor.is_staff and actor.org_id != org.id:
            raise NotFound(f"no organization with slug {slug!r}")
        before = _org_snapshot(org)
        if api_enabled is not None:
            org.api_enabled = api_enabled
        if allowed_origins is not None:
            org.allowed_origins = sorted({o.strip().rstrip("/") for o in allowed_origins if o})
        if plan_rate_per_second is not None:
            org.plan_rate_per_second = plan_rate_per_second
        if plan_concurrency is not None:
            org.plan_concurrency = plan_concurrency
        after = _org_snapshot(org)
        if after != before:
            action = (
                "org.api_access_changed"
                if before["api_enabled"] != after["api_enabled"]
                else "org.updated"
            )
            audit.record(
                session,
                actor,
                action,
                now=now,
                org_id=org.id,
                target_type="organization",
                target_ref=slug,
                before=before,
                after=after,
            )
    ctx.bus.publish(OrgChanged(org.id))
    return org


def create_location(ctx: Context, actor: Actor, *, org_slug: str, name: str, slug: str) -> Location:
    name = validate_name(name)
    slug = validate_slug(slug)
    now = ctx.clock()
    try:
        with ctx.db.transaction() as session:
            org = org_by_slug(session, org_slug)
            location = Location(org_id=org.id, slug=slug, name=name, created_at=now)
            session.add(location)
            session.flush()
            audit.record(
                session,
                actor,
                "location.created",
                now=now,
                org_id=org.id,
                target_type="location",
                target_ref=slug,
                after={"name": name, "slug": slug},
            )
    except IntegrityError:
        raise Conflict(f"location {slug!r} already exists in {org_slug!r}") from None
    return location


def location_by_slug(session: Session, org_id: int, slug: str) -> Location:
    location = session.scalar(
        select(Location).where(Location.org_id == org_id, Location.slug == slug)
    )
    if location is None:
        raise NotFound(f"no location with slug {slug!r}")
    return location


def user_by_email(session: Session, org_id: int, email: str) -> User:
    """The user of organization ``org_id`` with this email (NotFound otherwise)."""
    user = session.scalar(
        select(User).where(User.org_id == org_id, User.email == email.strip().lower())
    )
    if user is None:
        raise NotFound(f"no user {email!r} in this organization")
    return user


def list_locations(ctx: Context, org_id: int) -> list[Location]:
    with ctx.db.session() as session:
        return list(
            session.scalars(
                select(Location).where(Location.org_id == org_id).order_by(Location.slug)
            )
        )


@dataclass(frozen=True, slots=True)
class NewUser:
    user: User
    password: str | None
    """A generated password, returned once when none was given; it must be
    changed at the first sign-in."""


def create_user(
    ctx: Context,
    actor: Actor,
    *,
    org_slug: str | None,
    email: str,
    role: Role = Role.MEMBER,
    name: str | None = None,
    service: bool = False,
    staff: bool = False,
    password: str | None = None,
) -> NewUser:
    """Create a user. Service users ("API Access") have no password and no seat; a person
    given no ``password`` gets a generated one, to be changed at the first sign-in."""
    email = validate_email(email)
    role = Role(role)
    if password is not None:
        passwords.check_length(password)
    generated = None
    if password is None and not service:
        password = generated = passwords.generate_password()
    now = ctx.clock()
    try:
        with ctx.db.transaction() as session:
            org = org_by_slug(session, org_slug) if org_slug else None
            if org is None and not staff:
                raise InvalidInput("a user belongs to an organization unless it is staff")
            user = User(
                org_id=org.id if org else None,
                email=email,
                name=validate_name(name or ("API Access" if service else email.split("@")[0])),
                role=role.value,
                kind=(UserKind.SERVICE if service else UserKind.HUMAN).value,
                is_staff=staff,
                active=True,
                password_hash=passwords.hash_password(password) if password else None,
                password_must_change=generated is not None,
                created_at=now,
            )
            session.add(user)
            session.flush()
            audit.record(
                session,
                actor,
                "user.created",
                now=now,
                org_id=user.org_id,
                target_type="user",
                target_ref=email,
                after=_user_snapshot(user),
            )
    except IntegrityError:
        raise Conflict(f"a user with email {email!r} already exists") from None
    return NewUser(user, generated)


def set_user_active(ctx: Context, actor: Actor, user_id: int, active: bool) -> User:
    now = ctx.clock()
    with ctx.db.transaction() as session:
        user = session.get(User, user_id)
        if user is None or (not actor.is_staff and user.org_id != actor.org_id):
            raise NotFound("no such user")
        if user.role == Role.OWNER.value and not actor.is_staff:
            acting = session.get(User, actor.user_id) if actor.user_id is not None else None
            if acting is None or acting.role != Role.OWNER.value:
                raise AccessDenied("only an owner can deactivate or reactivate an owner")
        before = _user_snapshot(user)
        user.active = active
        audit.record(
            session,
            actor,
            "user.activated" if active else "user.deactivated",
            now=now,
            org_id=user.org_id,
            target_type="user",
            target_ref=user.email,
            before=before,
            after=_user_snapshot(user),
        )
    return user


def list_users(ctx: Context, org_id: int) -> list[User]:
    with ctx.db.session() as session:
        return list(session.scalars(select(User).where(User.org_id == org_id).order_by(User.id)))


def seat_count(ctx: Context, org_id: int) -> int:
    with ctx.db.session() as session:
        rows = session.execute(select(User.kind, User.active).where(User.org_id == org_id))
        return billable_seats((UserKind(kind), active) for kind, active in rows)


def authenticate(ctx: Context, email: str, password: str) -> User | None:
    """The active user with these credentials, or None (same work either way)."""
    with ctx.db.session() as session:
        user = session.scalar(select(User).where(User.email == email.strip().lower()))
    ok = passwords.verify_password(user.password_hash if user else None, password)
    return user if ok and user is not None and user.active else None


@dataclass(frozen=True, slots=True)
class FirstRun:
    org_slug: str
    email: str
    password: str


def bootstrap(ctx: Context) -> FirstRun | None:
    """On an empty database, create a default organization and its first owner.

    The first owner is also platform staff: the operator who installed Keyrack.

    Returns the issued password once; on any later call (users exist) returns None.
    """
    with ctx.db.session() as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
    actor = Actor.system("first-run")
    org = create_org(ctx, actor, name="Default organization", slug=DEFAULT_ORG_SLUG)
    created = create_user(
        ctx,
        actor,
        org_slug=org.slug,
        email="owner@keyrack.local",
        role=Role.OWNER,
        name="Owner",
        staff=True,
    )
    assert created.password is not None
    return FirstRun(org.slug, created.user.email, created.password)


def actor_for_user(user: User, ip: str | None = None) -> Actor:
    return Actor(
        label=f"user:{user.email}",
        user_id=user.id,
        org_id=user.org_id,
        ip=ip,
        is_staff=user.is_staff,
    )
