"""Retired secrets: digests that stopped working for good, kept to say when and why."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class RetiredDigest(Base):
    """A secret of a key that expired (inactivity, ``expires_at``) or was rolled away.

    Read only when verification meets an unknown digest; the SHA-256 of a 190-bit
    secret reveals nothing, so keeping it costs no safety.
    """

    __tablename__ = "retired_digests"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    """When it stopped working."""
    idle_days: Mapped[int | None]
