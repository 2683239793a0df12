"""Bulk exports and uploads: one row per job, its file in parts every instance can read."""

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


class Import(Base):
    """An upload of ``resource`` rows in the scope of the key that sent it, and its counts."""

    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_org_id_id", "org_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    created_by: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ImportPart(Base):
    """Part ``seq`` of an uploaded file, as it arrived."""

    __tablename__ = "import_parts"

    import_id: Mapped[int] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ImportRow(Base):
    """What became of the record on ``line`` of an upload (``created``, ``updated``,
    ``unchanged`` or ``failed`` with its ``error``)."""

    __tablename__ = "import_rows"
    __table_args__ = (
        Index("ix_import_rows_import_id_outcome_line", "import_id", "outcome", "line"),
    )

    import_id: Mapped[int] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    outcome: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(String(2000))
