"""Bulk exports: one row per export job, its file in parts every instance can read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class Export(Base):
    """An export of ``resource`` in the scope (``org_id``, ``location_id``) of the key that
    asked for it. ``status`` is written by the job; while it says queued or running, the
    job (``job_id``) tells the rest (a job that died says failed)."""

    __tablename__ = "exports"
    __table_args__ = (
        Index("ix_exports_org_id_id", "org_id", "id"),
        Index("ix_exports_status_download_expires_at", "status", "download_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    created_by: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    gzip: Mapped[bool]
    updated_since: Mapped[datetime | None]
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    next_updated_since: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    download_expires_at: Mapped[datetime | None]


class ExportPart(Base):
    """Bytes ``position`` to ``position + len(data)`` of an export's file: part ``seq`` starts
    at ``seq * PART_SIZE`` (every part but the last is full)."""

    __tablename__ = "export_parts"

    export_id: Mapped[int] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
