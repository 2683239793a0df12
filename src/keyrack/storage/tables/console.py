"""Console sign-in sessions, reveal windows and sign-in attempt counts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
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


class ConsoleSignInCount(Base):
    """Sign-in attempts of one subject (a digest of email and/or client IP) in the window
    opened by the first of them; counted and judged in one statement (for throttling)."""

    __tablename__ = "console_sign_in_counts"

    subject_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int]
    window_started_at: Mapped[datetime] = mapped_column(index=True)
