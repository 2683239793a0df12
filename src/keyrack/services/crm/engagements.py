"""Engagements: the emails, calls, meetings and notes logged against a client, and maybe one
of its contacts, with when they happened and who owned them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from keyrack.domain import crm
from keyrack.domain.crm import (
    MAX_ENGAGEMENT_BODY,
    MAX_SUBJECT,
    UNSET,
    EngagementKind,
    RecordType,
    Unset,
)
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.services.crm.records import ExternalIdChanges
from keyrack.services.crm.scoping import (
    client_in_scope,
    contact_of,
    in_scope,
    of_client,
    one_in_scope,
    within,
)
from keyrack.storage.paging import Page
from keyrack.storage.scoping import user_in_org
from keyrack.storage.tables.crm import Contact, Engagement

RECORD_TYPE = RecordType.ENGAGEMENTS


@dataclass(frozen=True, slots=True)
class EngagementView:
    ref: str
    client_ref: str
    contact_ref: str | None
    kind: EngagementKind
    occurred_at: datetime
    subject: str | None
    body: str | None
    owner_id: int | None
    external_ids: Mapping[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Engagement, external_ids: Mapping[str, str]) -> EngagementView:
        return cls(
            ref=row.ref,
            client_ref=row.client.ref,
            contact_ref=row.contact.ref if row.contact else None,
            kind=EngagementKind(row.kind),
            occurred_at=row.occurred_at,
            subject=row.subject,
            body=row.body,
            owner_id=row.owner_id,
            external_ids=dict(external_ids),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "client_ref": self.client_ref,
            "contact_ref": self.contact_ref,
            "kind": self.kind.value,
            "occurred_at": self.occurred_at.isoformat(),
            "external_ids": dict(self.external_ids),
        }


def _subject(subject: str | None) -> str | None:
    return crm.validate_text(subject, "subject", MAX_SUBJECT)


def _body(body: str | None) -> str | None:
    return crm.validate_text(body, "body", MAX_ENGAGEMENT_BODY, paragraph=True)


def validated(
    *, kind: Any = UNSET, subject: Any = UNSET, body: Any = UNSET, occurred_at: Any = UNSET
) -> dict[str, Any]:
    """The fields given, validated as ``create_engagement`` and ``update_engagement`` do (a
    bulk upload's rows; the contact and owner are looked up by the caller)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "kind": _kind,
        "subject": _subject,
        "body": _body,
        "occurred_at": lambda v: v,
    }
    given = {"kind": kind, "subject": subject, "body": body, "occurred_at": occurred_at}
    return {k: checks[k](v) for k, v in given.items() if not isinstance(v, Unset)}


def _kind(value: Any) -> str:
    try:
        return EngagementKind(value).value
    except ValueError:
        known = ", ".join(k.value for k in EngagementKind)
        raise InvalidInput(f"kind: {value!r} is not one of {known}") from None


def _engagement(session: Any, scope: Scope, ref: str) -> Engagement:
    row: Engagement = one_in_scope(session, Engagement, "eng", "engagement", scope, ref)
    return row


def create_engagement(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    client_ref: str,
    kind: EngagementKind,
    occurred_at: datetime | None = None,
    contact_ref: str | None = None,
    subject: str | None = None,
    body: str | None = None,
    owner_id: int | None = None,
    external_ids: ExternalIdChanges | None = None,
) -> EngagementView:
    """Log one engagement; ``contact_ref`` must be a contact of the same client, ``owner_id``
    a user of the organization. ``occurred_at`` defaults to now (a meeting may be ahead)."""
    values = {
        "kind": EngagementKind(kind).value,
        "subject": _subject(subject),
        "body": _body(body),
    }
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        client = client_in_scope(session, scope, client_ref)
        row = Engagement(
            ref=new_ref("eng"),
            org_id=scope.org_id,
            client=client,
            contact=contact_of(session, scope, client, contact_ref),
            occurred_at=occurred_at or at,
            owner_id=user_in_org(session, scope, owner_id),
            **values,
        )
        ids = records.created(
            session, scope, RECORD_TYPE, row, at=at, external_id_changes=external_ids
        )
        return EngagementView.of(row, ids)


def list_engagements(
    ctx: Context,
    scope: Scope,
    *,
    client_ref: str | None = None,
    contact_ref: str | None = None,
    kind: EngagementKind | None = None,
    occurred_since: datetime | None = None,
    occurred_until: datetime | None = None,
    external_id: str | None = None,
    updated_since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[EngagementView]:
    """Newest first, or by change from ``updated_since`` (``records.page``); narrowed to a
    client, a contact (404 if out of scope), a kind and ``occurred_since <= occurred_at <
    occurred_until``."""
    crm.check_range(occurred_since, occurred_until)
    stmt = in_scope(select(Engagement), Engagement, scope)
    stmt = within(stmt, Engagement.occurred_at, occurred_since, occurred_until)
    if kind is not None:
        stmt = stmt.where(Engagement.kind == EngagementKind(kind).value)
    with ctx.db.session() as session:
        stmt = of_client(session, stmt, Engagement, scope, client_ref)
        if contact_ref is not None:
            contact = one_in_scope(session, Contact, "con", "contact", scope, contact_ref)
            stmt = stmt.where(Engagement.contact_id == contact.id)
        return records.page(
            session,
            stmt,
            RECORD_TYPE,
            scope,
            EngagementView.of,
            external_id=external_id,
            updated_since=updated_since,
            limit=limit,
            cursor=cursor,
        )


def get_engagement(ctx: Context, scope: Scope, ref: str) -> EngagementView:
    with ctx.db.session() as session:
        return records.shown(
            session, RECORD_TYPE, _engagement(session, scope, ref), EngagementView.of
        )


def update_engagement(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    kind: EngagementKind | Unset = UNSET,
    occurred_at: datetime | Unset = UNSET,
    contact_ref: str | Unset | None = UNSET,
    subject: str | Unset | None = UNSET,
    body: str | Unset | None = UNSET,
    owner_id: int | Unset | None = UNSET,
    external_ids: ExternalIdChanges | Unset = UNSET,
) -> EngagementView:
    """Change the given fields; the client stays, a contact must be one of its contacts."""
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = _engagement(session, scope, ref)
        before = records.state(row)
        if not isinstance(kind, Unset):
            row.kind = EngagementKind(kind).value
        if not isinstance(occurred_at, Unset):
            row.occurred_at = occurred_at
        if not isinstance(contact_ref, Unset):
            row.contact = contact_of(session, scope, row.client, contact_ref)
        if not isinstance(subject, Unset):
            row.subject = _subject(subject)
        if not isinstance(body, Unset):
            row.body = _body(body)
        if not isinstance(owner_id, Unset):
            row.owner_id = user_in_org(session, scope, owner_id)
        ids = records.updated(
            session, scope, RECORD_TYPE, row, before=before, at=at, external_id_changes=external_ids
        )
        return EngagementView.of(row, ids)


def delete_engagement(ctx: Context, actor: Actor, scope: Scope, ref: str) -> EngagementView:
    with ctx.db.transaction() as session:
        row = _engagement(session, scope, ref)
        view = records.shown(session, RECORD_TYPE, row, EngagementView.of)
        records.deleted(session, RECORD_TYPE, row)
        audit.record(
            session,
            actor,
            "engagement.deleted",
            now=ctx.clock(),
            org_id=scope.org_id,
            target_type="engagement",
            target_ref=ref,
            before=view.snapshot(),
        )
    return view
