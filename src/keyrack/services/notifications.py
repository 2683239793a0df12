"""In-app notifications: a user's list, unread count, and marking read.

Every reader names a user; a key without an owner reads its organization's
notifications (``user_id=None`` with ``org_id``). A location's reader (a location
key) sees only notifications about that location's keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update

from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput, NotFound
from keyrack.services.context import Context
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.keys import ApiKey
from keyrack.storage.tables.notices import Notification


@dataclass(frozen=True, slots=True)
class NotificationView:
    id: int
    org_id: int
    user_id: int
    event_type: str
    title: str
    body: str
    target_type: str
    target_ref: str | None
    created_at: datetime
    read_at: datetime | None

    @property
    def read(self) -> bool:
        return self.read_at is not None

    @classmethod
    def of(cls, row: Notification) -> NotificationView:
        return cls(
            id=row.id,
            org_id=row.org_id,
            user_id=row.user_id,
            event_type=row.event_type,
            title=row.title,
            body=row.body,
            target_type=row.target_type,
            target_ref=row.target_ref,
            created_at=row.created_at,
            read_at=row.read_at,
        )


def _mine(
    user_id: int | None, org_id: int | None, location_id: int | None = None
) -> list[ColumnElement[bool]]:
    """Conditions selecting a reader's notifications."""
    if user_id is None and org_id is None:
        raise InvalidInput("name a user or an organization")
    conditions = []
    if user_id is not None:
        conditions.append(Notification.user_id == user_id)
    if org_id is not None:  # a location's are those about its keys (key refs are typed)
        scope = Scope(org_id, location_id)
        via = (Notification.target_ref, ApiKey.ref)
        conditions.append(within_scope(scope, Notification.org_id, ApiKey.location_id, via=via))
    return conditions


def list_notifications(
    ctx: Context,
    user_id: int | None,
    *,
    org_id: int | None = None,
    location_id: int | None = None,
    unread_only: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[NotificationView]:
    """Newest first: the user's notifications (or, with only ``org_id``, all of the org's)."""
    stmt = select(Notification).where(*_mine(user_id, org_id, location_id))
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    with ctx.db.session() as session:
        page = paginate(session, stmt, Notification.id, limit=limit, cursor=cursor)
        return page.map(NotificationView.of)


def unread_count(ctx: Context, user_id: int | None, *, org_id: int | None = None) -> int:
    stmt = select(func.count(Notification.id)).where(
        *_mine(user_id, org_id), Notification.read_at.is_(None)
    )
    with ctx.db.session() as session:
        return session.scalar(stmt) or 0


def mark_read(
    ctx: Context,
    user_id: int | None,
    notification_id: int,
    *,
    org_id: int | None = None,
    location_id: int | None = None,
) -> NotificationView:
    """Mark one notification read (idempotent). Someone else's is not found.

    Not audited: reading a notification changes nobody's access or settings.
    """
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.scalar(
            select(Notification).where(
                *_mine(user_id, org_id, location_id), Notification.id == notification_id
            )
        )
        if row is None:
            raise NotFound(f"no notification {notification_id}")
        if row.read_at is None:
            row.read_at = now
        return NotificationView.of(row)


def mark_all_read(ctx: Context, user_id: int | None, *, org_id: int | None = None) -> int:
    """Mark every unread notification read; returns how many changed."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        result = session.execute(
            update(Notification)
            .where(*_mine(user_id, org_id), Notification.read_at.is_(None))
            .values(read_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
