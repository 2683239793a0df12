"""Usage per key and minute (hour, once rolled up): counters, a latency histogram, and
4xx answers by problem code (SPEC §6.3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.domain.usage import BUCKETS
from keyrack.storage.tables.base import Base

LATENCY_COLUMNS = tuple(f"latency_{i}" for i in range(BUCKETS))


class KeyUsage(Base):
    __tablename__ = "key_usage"
    __table_args__ = (Index("ix_key_usage_period_start", "period", "start"),)

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    """``minute`` or ``hour`` (rolled up)."""
    start: Mapped[datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(default=0)
    successes: Mapped[int] = mapped_column(default=0)
    rate_limited: Mapped[int] = mapped_column(default=0)
    latency_0: Mapped[int] = mapped_column(default=0)
    latency_1: Mapped[int] = mapped_column(default=0)
    latency_2: Mapped[int] = mapped_column(default=0)
    latency_3: Mapped[int] = mapped_column(default=0)
    latency_4: Mapped[int] = mapped_column(default=0)
    latency_5: Mapped[int] = mapped_column(default=0)
    latency_6: Mapped[int] = mapped_column(default=0)
    latency_7: Mapped[int] = mapped_column(default=0)
    latency_8: Mapped[int] = mapped_column(default=0)
    latency_9: Mapped[int] = mapped_column(default=0)
    latency_10: Mapped[int] = mapped_column(default=0)
    latency_11: Mapped[int] = mapped_column(default=0)
    latency_12: Mapped[int] = mapped_column(default=0)


class KeyUsageProblem(Base):
    __tablename__ = "key_usage_problems"
    __table_args__ = (Index("ix_key_usage_problems_period_start", "period", "start"),)

    key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    start: Mapped[datetime] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
