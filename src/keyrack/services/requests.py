"""Production-key requests: a customer asks, staff approve or reject.

* Only a customer organization asks, and only for itself: the actor must belong to
  that organization, so a vendor (its users or keys) can never ask on a customer's
  behalf (``AccessDenied``). Adapters admit owners/admins or ``keys:manage`` keys.
* Requests are the agency's, like the keys they lead to: a location key neither asks
  nor sees them.
* A request names an app of the catalog, or carries a free-text message (a support
  request), or both.
* Staff decide. Approval issues, in the same transaction, a production key in the
  customer organization with exactly the permissions of the app's sandbox key (for a
  free-text request, the permissions staff give). Staff never see its secret: it is
  sealed as a one-time claim for the customer's admins (``keyrack.services.handoffs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.orm import Session

from keyrack.domain.ids import new_ref
from keyrack.domain.keys import Environment
from keyrack.domain.requests import RequestStatus
from keyrack.domain.tenancy import OrgKind, Scope, validate_name
from keyrack.errors import AccessDenied, Conflict, InvalidInput, NotFound
from keyrack.services import audit, handoffs, keys
from keyrack.services.apps import app_by_ref
from keyrack.services.context import Actor, Context
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.keys import ApiKey
from keyrack.storage.tables.requests import App, Handoff, KeyRequest
from keyrack.storage.tables.tenancy import Organization


@dataclass(frozen=True, slots=True)
class KeyRequestView:
    ref: str
    org_id: int
    org_slug: str
    app_ref: str | None
    app_name: str | None
    app_permissions: tuple[str, ...]
    """Those of the app's sandbox key: what approving gives the production key."""
    message: str | None
    status: RequestStatus
    requested_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    key_ref: str | None
    """The production key issued on approval."""
    claim_ref: str | None
    """The one-time claim through which the customer's admin reveals that key's secret."""

    def audit_snapshot(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "app": self.app_ref,
            "message": self.message,
            "reason": self.reason,
            "key": self.key_ref,
        }


def _views(session: Session, rows: Sequence[KeyRequest]) -> list[KeyRequestView]:
    """Views of ``rows`` with their organizations, apps (and their sandbox keys), keys and
    claims in five queries."""

    org_ids = {row.org_id for row in rows}
    app_ids = {row.app_id for row in rows if row.app_id is not None}
    key_ids = {row.key_id for row in rows if row.key_id is not None}
    orgs = {
        o.id: o for o in session.scalars(select(Organization).where(Organization.id.in_(org_ids)))
    }
    apps = {a.id: a for a in session.scalars(select(App).where(App.id.in_(app_ids)))}
    key_ids |= {app.sandbox_key_id for app in apps.values()}
    issued = {k.id: k for k in session.scalars(select(ApiKey).where(ApiKey.id.in_(key_ids)))}
    approved = [row.id for row in rows if row.key_id is not None]
    claims = {
        request_id: ref
        for request_id, ref in session.execute(
            select(Handoff.request_id, Handoff.ref).where(Handoff.request_id.in_(approved))
        )
    }
    views = []
    for row in rows:
        app = apps.get(row.app_id) if row.app_id is not None else None
        key = issued.get(row.key_id) if row.key_id is not None else None
        views.append(
            KeyRequestView(
                ref=row.ref,
                org_id=row.org_id,
                org_slug=orgs[row.org_id].slug,
                app_ref=app.ref if app else None,
                app_name=app.name if app else None,
                app_permissions=tuple(issued[app.sandbox_key_id].permissions) if app else (),
                message=row.message,
                status=RequestStatus(row.status),
                requested_by=row.requested_by_label,
                created_at=row.created_at,
                decided_by=row.decided_by_label,
                decided_at=row.decided_at,
                reason=row.reason,
                key_ref=key.ref if key else None,
                claim_ref=claims.get(row.id),
            )
        )
    return views


def _view(session: Session, row: KeyRequest) -> KeyRequestView:
    return _views(session, [row])[0]


def _request_by_ref(session: Session, ref: str, *, lock: bool = False) -> KeyRequest:
    stmt = select(KeyRequest).where(KeyRequest.ref == ref)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None:
        raise NotFound(f"no key request {ref!r}")
    return row


def create_request(
    ctx: Context,
    actor: Actor,
    *,
    org_id: int,
    app_ref: str | None = None,
    message: str | None = None,
) -> KeyRequestView:
    """A customer organization asks for a production key for ``app_ref`` and/or in free text."""
    if actor.org_id != org_id:
        raise AccessDenied("only the customer organization itself requests its production keys")
    if actor.key is not None and actor.key.location_id is not None:
        raise AccessDenied("production keys are agency keys: ask with an agency key")
    message = message.strip() if message else None
    if message is not None and len(message) > 2000:
        raise InvalidInput("message is at most 2000 characters")
    if app_ref is None and not message:
        raise InvalidInput("name an app from the catalog or describe what you need")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        org = session.get(Organization, org_id)
        if org is None:
            raise NotFound(f"no organization with id {org_id}")
        if org.kind != OrgKind.CUSTOMER.value:
            raise AccessDenied("only customer organizations request production keys")
        app_id = None
        if app_ref is not None:
            app_id = app_by_ref(session, app_ref).id
            pending = session.scalar(
                select(KeyRequest.ref).where(
                    KeyRequest.org_id == org_id,
                    KeyRequest.app_id == app_id,
                    KeyRequest.status == RequestStatus.PENDING.value,
                )
            )
            if pending is not None:
                raise Conflict(f"request {pending} for this app is already pending")
        row = KeyRequest(
            ref=new_ref("kreq"),
            org_id=org_id,
            app_id=app_id,
            message=message,
            status=RequestStatus.PENDING.value,
            requested_by_id=actor.user_id,
            requested_by_label=actor.label,
            created_at=now,
        )
        session.add(row)
        session.flush()
        view = _view(session, row)
        audit.record(
            session,
            actor,
            "key_request.created",
            now=now,
            org_id=org_id,
            target_type="key_request",
            target_ref=row.ref,
            after=view.audit_snapshot(),
        )
    return view


def _in_scope(scope: Scope) -> ColumnElement[bool]:
    """Requests are the agency's (no location): the key one leads to is an agency key,
    which no location key could have made, so a location scope sees none."""
    return within_scope(scope, KeyRequest.org_id, None)


def list_requests(
    ctx: Context,
    scope: Scope | None,
    *,
    status: RequestStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[KeyRequestView]:
    """Newest first: those within ``scope``, or every organization's with None (staff)."""
    stmt = select(KeyRequest)
    if scope is not None:
        stmt = stmt.where(_in_scope(scope))
    if status is not None:
        stmt = stmt.where(KeyRequest.status == status.value)
    with ctx.db.session() as session:
        page = paginate(session, stmt, KeyRequest.id, limit=limit, cursor=cursor)
        return Page(_views(session, page.data), page.next_cursor)


def get_request(ctx: Context, ref: str, *, scope: Scope | None = None) -> KeyRequestView:
    """One request; with ``scope``, only if it lies within it."""
    with ctx.db.session() as session:
        stmt = select(KeyRequest).where(KeyRequest.ref == ref)
        if scope is not None:
            stmt = stmt.where(_in_scope(scope))
        row = session.scalar(stmt)
        if row is None:
            raise NotFound(f"no key request {ref!r}")
        return _view(session, row)


def _require_staff(actor: Actor) -> None:
    if not actor.is_staff:
        raise AccessDenied("only platform staff decide key requests")


def _decide(
    session: Session,
    row: KeyRequest,
    status: RequestStatus,
    actor: Actor,
    now: datetime,
    *,
    reason: str | None = None,
) -> None:
    """Move a pending request to ``status`` with one conditional UPDATE: of concurrent
    deciders exactly one wins, on every backend; the others get ``Conflict``."""
    result = session.execute(
        update(KeyRequest)
        .where(KeyRequest.id == row.id, KeyRequest.status == RequestStatus.PENDING.value)
        .values(
            status=status.value,
            decided_by_id=actor.user_id,
            decided_by_label=actor.label,
            decided_at=now,
            reason=reason,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if cast(CursorResult[Any], result).rowcount != 1:
        raise Conflict(f"request {row.ref} is already {row.status}")


def approve_request(
    ctx: Context,
    actor: Actor,
    ref: str,
    *,
    permissions: Sequence[str] | None = None,
    name: str | None = None,
) -> KeyRequestView:
    """Approve: issue the production key and seal its secret as a claim for the customer.

    For an app request the key gets exactly the app sandbox key's permissions and
    ``permissions`` must be None; a free-text request needs ``permissions`` from staff.
    Unless ``name`` is given, the key is named after the app (or the request) and the
    organization that asked: "Nexla Sync — Acme Corp (production)". The returned view
    names the key and the claim; it never holds the secret.
    """
    _require_staff(actor)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _request_by_ref(session, ref, lock=True)
        before = _view(session, row)
        _decide(session, row, RequestStatus.APPROVED, actor, now)
        org = session.get(Organization, row.org_id)
        assert org is not None
        if row.app_id is not None:
            if permissions is not None:
                raise InvalidInput("an app's production key gets exactly its sandbox permissions")
            app = session.get(App, row.app_id)
            sandbox = session.get(ApiKey, app.sandbox_key_id) if app else None
            assert app is not None and sandbox is not None
            granted: Sequence[str] = list(sandbox.permissions)
            key_name = name or f"{app.name} — {org.name} (production)"
        else:
            if permissions is None:
                raise InvalidInput("a free-text request needs the permissions to grant")
            granted = permissions
            key_name = name or f"{org.name} (production)"
        key, secret = keys.insert_key(
            session,
            actor,
            Scope(row.org_id),
            now=now,
            name=validate_name(key_name),
            environment=Environment.PRODUCTION,
            owner_id=row.requested_by_id,
            permissions=granted,
        )
        handoffs.insert_claim(
            session, ctx, actor, key=key, secret=secret, request_id=row.id, now=now
        )
        row.key_id = key.id
        session.flush()
        view = _view(session, row)
        audit.record(
            session,
            actor,
            "key_request.approved",
            now=now,
            org_id=row.org_id,
            target_type="key_request",
            target_ref=ref,
            before=before.audit_snapshot(),
            after={**view.audit_snapshot(), "permissions": list(key.permissions)},
        )
    return view


def reject_request(ctx: Context, actor: Actor, ref: str, *, reason: str) -> KeyRequestView:
    """Reject a pending request, with a reason the customer sees."""
    _require_staff(actor)
    reason = validate_name(reason, "reason", 500)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _request_by_ref(session, ref, lock=True)
        before = _view(session, row)
        _decide(session, row, RequestStatus.REJECTED, actor, now, reason=reason)
        view = _view(session, row)
        audit.record(
            session,
            actor,
            "key_request.rejected",
            now=now,
            org_id=row.org_id,
            target_type="key_request",
            target_ref=ref,
            before=before.audit_snapshot(),
            after=view.audit_snapshot(),
        )
    return view
