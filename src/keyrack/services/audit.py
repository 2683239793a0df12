"""The audit trail: append-only records written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack.domain.keys import looks_like_key
from keyrack.services import notices
from keyrack.services.context import Actor, Context
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.audit import AuditEvent


def _assert_no_secret(value: Any) -> None:
    """Refuse to write anything shaped like a key: a bug must not become a leak."""
    if isinstance(value, str):
        if looks_like_key(value) and len(value) > 12:
            raise ValueError("refusing to write a key secret into the audit trail")
    elif isinstance(value, Mapping):
        for item in value.values():
            _assert_no_secret(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _assert_no_secret(item)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    now: datetime,
    org_id: int | None,
    target_type: str,
    target_ref: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit record; notice-worthy actions fan out in the same transaction."""
    _assert_no_secret(before)
    _assert_no_secret(after)
    event = AuditEvent(
        occurred_at=now,
        org_id=org_id,
        actor_id=actor.user_id,
        actor_label=actor.label,
        ip=actor.ip,
        action=action,
        target_type=target_type,
        target_ref=target_ref,
        before=before,
        after=after,
    )
    session.add(event)
    notices.fan_out(session, event)
    return event


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    target_ref: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(
    ctx: Context,
    org_id: int | None,
    filters: AuditFilter = AuditFilter(),
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[AuditEvent]:
    """Newest first. ``org_id=None`` lists platform-wide events (staff)."""
    stmt = select(AuditEvent)
    if org_id is not None:
        stmt = stmt.where(AuditEvent.org_id == org_id)
    if filters.actor:
        stmt = stmt.where(AuditEvent.actor_label.contains(filters.actor, autoescape=True))
    if filters.target_ref:
        stmt = stmt.where(AuditEvent.target_ref == filters.target_ref)
    if filters.action:
        stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.since:
        stmt = stmt.where(AuditEvent.occurred_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEvent.occurred_at < filters.until)
    with ctx.db.session() as session:
        return paginate(session, stmt, AuditEvent.id, limit=limit, cursor=cursor)
