"""Contacts: the people at a client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from keyrack.domain import crm
from keyrack.domain.crm import UNSET, RecordType, Unset
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope, validate_email, validate_name
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.services.crm.records import ExternalIdChanges
from keyrack.services.crm.scoping import client_in_scope, in_scope, of_client, one_in_scope
from keyrack.storage.paging import Page
from keyrack.storage.tables.crm import Contact, Engagement

RECORD_TYPE = RecordType.CONTACTS


@dataclass(frozen=True, slots=True)
class ContactView:
    ref: str
    client_ref: str
    name: str
    email: str | None
    phone: str | None
    title: str | None
    external_ids: Mapping[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Contact, external_ids: Mapping[str, str]) -> ContactView:
        return cls(
            ref=row.ref,
            client_ref=row.client.ref,
            name=row.name,
            email=row.email,
            phone=row.phone,
            title=row.title,
            external_ids=dict(external_ids),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _email(email: str | None) -> str | None:
    return validate_email(email) if email else None


def _title(title: str | None) -> str | None:
    return crm.validate_text(title, "title", 200)


def validated(
    *,
    name: Any = UNSET,
    email: Any = UNSET,
    phone: Any = UNSET,
    title: Any = UNSET,
) -> dict[str, Any]:
    """The fields given, validated as ``create_contact`` and ``update_contact`` do (a bulk
    upload's rows)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "name": validate_name,
        "email": _email,
        "phone": crm.validate_phone,
        "title": _title,
    }
    given = {"name": name, "email": email, "phone": phone, "title": title}
    return {k: checks[k](v) for k, v in given.items() if not isinstance(v, Unset)}


def _contact(session: Any, scope: Scope, ref: str) -> Contact:
    row: Contact = one_in_scope(session, Contact, "con", "contact", scope, ref)
    return row


def create_contact(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    client_ref: str,
    name: str,
    email: str | None = None,
    phone: str | None = None,
    title: str | None = None,
    external_ids: ExternalIdChanges | None = None,
) -> ContactView:
    values = {
        "name": validate_name(name),
        "email": _email(email),
        "phone": crm.validate_phone(phone),
        "title": _title(title),
    }
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        client = client_in_scope(session, scope, client_ref)
        row = Contact(ref=new_ref("con"), org_id=scope.org_id, client=client, **values)
        ids = records.created(
            session, scope, RECORD_TYPE, row, at=at, external_id_changes=external_ids
        )
        return ContactView.of(row, ids)


def list_contacts(
    ctx: Context,
    scope: Scope,
    *,
    client_ref: str | None = None,
    external_id: str | None = None,
    updated_since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ContactView]:
    """Newest first, or by change from ``updated_since`` (``records.page``); ``client_ref``
    narrows to one client (404 if out of scope)."""
    with ctx.db.session() as session:
        stmt = of_client(
            session, in_scope(select(Contact), Contact, scope), Contact, scope, client_ref
        )
        return records.page(
            session,
            stmt,
            RECORD_TYPE,
            scope,
            ContactView.of,
            external_id=external_id,
            updated_since=updated_since,
            limit=limit,
            cursor=cursor,
        )


def get_contact(ctx: Context, scope: Scope, ref: str) -> ContactView:
    with ctx.db.session() as session:
        return records.shown(session, RECORD_TYPE, _contact(session, scope, ref), ContactView.of)


def update_contact(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    name: str | Unset = UNSET,
    email: str | Unset | None = UNSET,
    phone: str | Unset | None = UNSET,
    title: str | Unset | None = UNSET,
    external_ids: ExternalIdChanges | Unset = UNSET,
) -> ContactView:
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = _contact(session, scope, ref)
        before = records.state(row)
        if not isinstance(name, Unset):
            row.name = validate_name(name)
        if not isinstance(email, Unset):
            row.email = _email(email)
        if not isinstance(phone, Unset):
            row.phone = crm.validate_phone(phone)
        if not isinstance(title, Unset):
            row.title = _title(title)
        ids = records.updated(
            session, scope, RECORD_TYPE, row, before=before, at=at, external_id_changes=external_ids
        )
        return ContactView.of(row, ids)


def delete_contact(ctx: Context, actor: Actor, scope: Scope, ref: str) -> ContactView:
    """Delete a contact (audited); its pulse responses and engagements stay, without the
    contact (the engagements changed, so their ``updated_at`` moves)."""
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = _contact(session, scope, ref)
        view = records.shown(session, RECORD_TYPE, row, ContactView.of)
        session.execute(
            update(Engagement)
            .where(Engagement.contact_id == row.id)
            .values(contact_id=None, updated_at=at)
        )
        records.deleted(session, RECORD_TYPE, row)
        audit.record(
            session,
            actor,
            "contact.deleted",
            now=ctx.clock(),
            org_id=scope.org_id,
            target_type="contact",
            target_ref=ref,
            before={"client_ref": view.client_ref, "name": view.name},
        )
    return view
