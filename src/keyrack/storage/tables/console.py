"""Console sign-in sessions, reveal windows and failed sign-in attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class ConsoleSession(Base):
    """A signed-in browser. The cookie holds the token; only its SHA-256 digest is stored."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ConsoleReveal(Base):
    """A just-issued key secret, sealed (AES-GCM), readable by one session until ``expires_at``."""

    __tablename__ = "console_reveals"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("console_sessions.id", ondelete="CASCADE"), index=True
    )
    key_ref: Mapped[str] = mapped_column(String(40))
    sealed_secret: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ConsoleLoginFailure(Base):
    """One failed sign-in, keyed by a digest of email and client IP (for throttling)."""

    __tablename__ = "console_login_failures"
    __table_args__ = (
        Index("ix_console_login_failures_subject_at", "subject_digest", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_digest: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
