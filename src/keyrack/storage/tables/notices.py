"""Expiry notices, in-app notifications and the email outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class ExpiryNotice(Base):
    """One step of a key's expiry cycle, taken once: the unique row is the lock.

    ``threshold`` is ``15``, ``7``, ``1`` or ``expired``; ``anchor`` is the idle
    stretch's start (or ``expires_at``), so a use of the key starts a new cycle.
    """

    __tablename__ = "expiry_notices"
    __table_args__ = (UniqueConstraint("key_id", "kind", "anchor", "threshold"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    anchor: Mapped[datetime]
    threshold: Mapped[str] = mapped_column(String(16))
    deadline: Mapped[datetime]
    created_at: Mapped[datetime]


class Notification(Base):
    """An in-app notification for one user (owners and admins of the organization)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index("ix_notifications_org_id_id", "org_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    audit_event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    target_type: Mapped[str] = mapped_column(String(32))
    target_ref: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]


class OutboxEmail(Base):
    """An email to send (SMTP configured) or to list for the operator (no SMTP).

    Its ``email.send`` job sends it; the row is what happened: status, attempts, error.
    """

    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    audit_event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``sent`` or ``failed``."""
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
