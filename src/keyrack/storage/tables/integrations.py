"""Integrations (SPEC §7): connections, their syncs, their change history, runs and the
outcome of each record a run touched."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class Integration(Base):
    """A connection to a provider; ``credential_sealed`` is write-only (purpose
    ``integration-credential``)."""

    __tablename__ = "integrations"
    __table_args__ = (
        Index("ix_integrations_org_id_id", "org_id", "id"),
        Index("ix_integrations_last_probed_at", "last_probed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    provider: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(2000))
    credential_sealed: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    """``active``, ``expired``, ``revoked`` or ``unauthorized``."""
    status_reason: Mapped[str | None] = mapped_column(String(64))
    last_success_at: Mapped[datetime | None]
    last_error_at: Mapped[datetime | None]
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_probed_at: Mapped[datetime | None]
    connected_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class IntegrationSync(Base):
    """One record type and direction of a connection."""

    __tablename__ = "integration_syncs"
    __table_args__ = (
        UniqueConstraint("integration_id", "record_type", "direction"),
        Index("ix_integration_syncs_enabled_next_run_at", "enabled", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    record_type: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(default=False)
    filters: Mapped[list[Any]] = mapped_column(JSON, default=list)
    field_mappings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    schedule_seconds: Mapped[int] = mapped_column(default=900)
    watermark: Mapped[str | None] = mapped_column(String(200))
    """Where the last successful run stopped (the source's own opaque position)."""
    next_run_at: Mapped[datetime | None]
    """When the schedule is due (None: manual only, or disabled)."""
    updated_at: Mapped[datetime]


class IntegrationChange(Base):
    """Append-only: one change to a connection, its credential (that it changed) or a sync."""

    __tablename__ = "integration_changes"
    __table_args__ = (Index("ix_integration_changes_integration_id_id", "integration_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime]
    actor_label: Mapped[str] = mapped_column(String(200))
    actor_id: Mapped[int | None]
    what: Mapped[str] = mapped_column(String(100))
    """``connection``, ``credential``, ``status`` or ``sync:<record_type>:<direction>``."""
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (
        Index("ix_sync_runs_integration_id_id", "integration_id", "id"),
        Index("ix_sync_runs_integration_id_status", "integration_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    """``queued``, ``running``, ``succeeded``, ``partial``, ``failed`` or ``canceled``."""
    trigger: Mapped[str] = mapped_column(String(16))
    """``manual``, ``schedule`` or ``retry``."""
    requested_by: Mapped[str] = mapped_column(String(200))
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``{record_type: {direction: {synced, created, updated, unchanged, skipped, failed}}}``."""
    api_calls: Mapped[int] = mapped_column(default=0)
    rate_limit_wait_seconds: Mapped[float] = mapped_column(default=0.0)
    watermark_before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    watermark_after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """``{"<record_type>:<direction>": watermark}``: the checkpoint, moved after each batch."""
    done: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Syncs (``record_type:direction``) this run has finished, or failed records retried."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class SyncRunRecord(Base):
    """One record a run touched, and its outcome."""

    __tablename__ = "sync_run_records"
    __table_args__ = (
        Index("ix_sync_run_records_run_id_id", "run_id", "id"),
        Index("ix_sync_run_records_run_id_outcome_id", "run_id", "outcome", "id"),
        Index("ix_sync_run_records_local_id_keyed", "local_id", "keyed"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"))
    record_type: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    local_id: Mapped[str | None] = mapped_column(String(64))
    remote_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(16))
    """``synced``, ``skipped`` or ``failed``."""
    result: Mapped[str | None] = mapped_column(String(16))
    """For ``synced``: ``created``, ``updated`` or ``unchanged``."""
    skip: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(100))
    http_status: Mapped[int | None]
    exchange: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    keyed: Mapped[int | None]
    """For ``synced``: 1 if the provider's record now carries this Keyrack id (Keyrack wrote
    it), 0 if it does not (it came from the provider): the connector writes by Keyrack id."""
    created_at: Mapped[datetime]
