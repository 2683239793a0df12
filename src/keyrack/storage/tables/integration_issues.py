"""An integration's issues (SPEC §7): persisting problems, one per cause, that open and
resolve themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class IntegrationIssue(Base):
    """One cause (``credential``, ``failing:<type>:<direction>``,
    ``filter-skips-all:<type>:<direction>:<filter>``, ``direction-off:<type>:<direction>``);
    at most one open per cause and connection."""

    __tablename__ = "integration_issues"
    __table_args__ = (
        Index("ix_integration_issues_integration_id_resolved_at", "integration_id", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    cause: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(32))
    record_type: Mapped[str | None] = mapped_column(String(16))
    direction: Mapped[str | None] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    bundle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The support bundle as it was when the issue opened (no secret)."""
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
