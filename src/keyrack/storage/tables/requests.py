"""The app catalog, production-key requests, and one-time hand-offs of a key secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class App(Base):
    """An app a vendor organization built; its sandbox key's permissions define it."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    vendor_org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    sandbox_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime]
    created_by_label: Mapped[str] = mapped_column(String(200))


class KeyRequest(Base):
    """A customer organization asks for a production key (for an app, or in free text)."""

    __tablename__ = "key_requests"
    __table_args__ = (
        Index("ix_key_requests_org_id_id", "org_id", "id"),
        Index("ix_key_requests_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    app_id: Mapped[int | None] = mapped_column(ForeignKey("apps.id"))
    message: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_by_label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_by_label: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))


class Handoff(Base):
    """A key secret sealed (AES-GCM) for exactly one later reading.

    ``purpose`` is ``claim`` (a production key issued on approval, waiting for the
    customer's admin) or ``link`` (a one-time URL for the vendor, found by the
    SHA-256 ``token_digest`` of its random token). ``sealed`` is erased (NULL) when the
    hand-off is opened or expires; the row stays for the audit trail.
    """

    __tablename__ = "handoffs"
    __table_args__ = (Index("ix_handoffs_org_id_id", "org_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("key_requests.id"))
    token_digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    sealed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by_label: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    opened_at: Mapped[datetime | None]
    opened_by_label: Mapped[str | None] = mapped_column(String(200))
    erased_at: Mapped[datetime | None]
