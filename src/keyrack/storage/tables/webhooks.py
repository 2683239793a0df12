"""Webhook endpoints of an organization and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyrack.storage.tables.base import Base


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_org_id_id", "org_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[Any]] = mapped_column(JSON, default=list)
    secret_sealed: Mapped[str] = mapped_column(String(200))
    """The signing secret, sealed (AES-GCM, purpose ``webhook-secret``)."""
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    created_by_label: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One event for one endpoint: what its ``webhook.deliver`` job did (the delivery log)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``delivered`` or ``failed``."""
    attempts: Mapped[int] = mapped_column(default=0)
    """The attempts its job has begun (one cut short by a dead worker included)."""
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_response_ms: Mapped[int | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
