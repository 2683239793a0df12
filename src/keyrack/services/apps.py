"""The app catalog: vendor organizations register the apps customers can request keys for.

An app is defined by one sandbox key of its vendor: a production key issued for
the app gets exactly that key's permissions (see ``keyrack.services.requests``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from keyrack.domain.ids import new_ref
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import OrgKind, validate_name
from keyrack.domain.text import check_plain
from keyrack.domain.verification import KeyStatus
from keyrack.errors import AccessDenied, InvalidInput, NotFound
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.keys import ApiKey
from keyrack.storage.tables.requests import App
from keyrack.storage.tables.tenancy import Organization


@dataclass(frozen=True, slots=True)
class AppView:
    """A catalog entry, visible to every organization."""

    id: int
    ref: str
    name: str
    description: str
    vendor_org_id: int
    vendor_slug: str
    vendor_name: str
    sandbox_key_ref: str
    permissions: tuple[str, ...]
    created_at: datetime

    @classmethod
    def of(cls, app: App, vendor: Organization, sandbox_key: ApiKey) -> AppView:
        return cls(
            id=app.id,
            ref=app.ref,
            name=app.name,
            description=app.description,
            vendor_org_id=vendor.id,
            vendor_slug=vendor.slug,
            vendor_name=vendor.name,
            sandbox_key_ref=sandbox_key.ref,
            permissions=tuple(sandbox_key.permissions),
            created_at=app.created_at,
        )


def _catalog() -> Select[App, Organization, ApiKey]:
    return (
        select(App, Organization, ApiKey)
        .join(Organization, App.vendor_org_id == Organization.id)
        .join(ApiKey, App.sandbox_key_id == ApiKey.id)
    )


def app_by_ref(session: Session, ref: str) -> AppView:
    found = session.execute(_catalog().where(App.ref == ref)).first()
    if found is None:
        raise NotFound(f"no app {ref!r} in the catalog")
    app, vendor, key = found
    return AppView.of(app, vendor, key)


def register_app(
    ctx: Context,
    actor: Actor,
    *,
    vendor_org_id: int,
    name: str,
    sandbox_key_ref: str,
    description: str = "",
) -> AppView:
    """Add an app of a vendor organization to the catalog.

    ``sandbox_key_ref`` names an active sandbox key of that vendor; its permissions
    define what a production key for the app may do.
    """
    name = validate_name(name)
    description = check_plain(description, "description", paragraph=True).strip()
    if len(description) > 2000:
        raise InvalidInput("description is at most 2000 characters")
    if not actor.is_staff and actor.org_id != vendor_org_id:
        raise AccessDenied("only the vendor itself registers its apps")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        vendor = session.get(Organization, vendor_org_id)
        if vendor is None:
            raise NotFound(f"no organization with id {vendor_org_id}")
        if vendor.kind != OrgKind.VENDOR.value:
            raise AccessDenied("only vendor organizations register apps in the catalog")
        key = session.scalar(
            select(ApiKey).where(ApiKey.ref == sandbox_key_ref, ApiKey.org_id == vendor.id)
        )
        if key is None:
            raise NotFound(f"no key {sandbox_key_ref!r}")
        if key.environment != Environment.SANDBOX.value or key.status != KeyStatus.ACTIVE.value:
            raise InvalidInput("an app is defined by an active sandbox key of its vendor")
        app = App(
            ref=new_ref("app"),
            vendor_org_id=vendor.id,
            name=name,
            description=description,
            sandbox_key_id=key.id,
            created_at=now,
            created_by_label=actor.label,
        )
        session.add(app)
        session.flush()
        view = AppView.of(app, vendor, key)
        audit.record(
            session,
            actor,
            "app.registered",
            now=now,
            org_id=vendor.id,
            target_type="app",
            target_ref=app.ref,
            after={
                "name": name,
                "sandbox_key": key.ref,
                "permissions": list(view.permissions),
            },
        )
    return view


def list_apps(ctx: Context, *, limit: int = 50, cursor: str | None = None) -> Page[AppView]:
    """The whole catalog, newest first."""
    with ctx.db.session() as session:
        page = paginate(session, select(App), App.id, limit=limit, cursor=cursor)
        ids = [app.id for app in page.data]
        views = {
            app.id: AppView.of(app, vendor, key)
            for app, vendor, key in session.execute(_catalog().where(App.id.in_(ids)))
        }
    return page.map(lambda app: views[app.id])


def get_app(ctx: Context, ref: str) -> AppView:
    with ctx.db.session() as session:
        return app_by_ref(session, ref)
