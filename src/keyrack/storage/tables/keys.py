"""API keys and their secrets (digests only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_org_id_id", "org_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(8))
    last4: Mapped[str | None] = mapped_column(String(4))
    permissions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rate_per_second: Mapped[int | None]
    concurrency: Mapped[int | None]
    allowed_cidrs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_by_label: Mapped[str] = mapped_column(String(200))
    last_used_at: Mapped[datetime | None]
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    inactivity_days: Mapped[int] = mapped_column(default=90)
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(500))


class KeySecret(Base):
    """One verifiable secret of a key, by digest. A roll with grace leaves two."""

    __tablename__ = "key_secrets"
    __table_args__ = (Index("ix_key_secrets_imported_id", "imported", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    imported: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Brought over by digest from another system: not of the ``kr_`` shape."""
