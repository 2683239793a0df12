"""Webhook endpoint and delivery bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from keyrack.http.schemas.common import Strict
from keyrack.services.notices import EVENT_TYPES
from keyrack.services.webhooks import DeliveryView, EndpointView


class WebhookCreate(Strict):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// URL")
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        max_length=len(EVENT_TYPES) + 1,
        description=f"'*' or any of: {', '.join(EVENT_TYPES)}",
    )
    description: str = Field(default="", max_length=200)


class WebhookOut(BaseModel):
    id: int
    url: str
    description: str
    events: list[str]
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, view: EndpointView) -> WebhookOut:
        return cls(
            id=view.id,
            url=view.url,
            description=view.description,
            events=list(view.events),
            active=view.active,
            created_at=view.created_at,
        )


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_…). Shown once: store it now.")


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_response_ms: int | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, view: DeliveryView) -> DeliveryOut:
        return cls(
            id=view.id,
            webhook_id=view.endpoint_id,
            event_id=view.event_id,
            event_type=view.event_type,
            payload=view.payload,
            status=view.status,
            attempts=view.attempts,
            next_attempt_at=view.next_attempt_at,
            last_status_code=view.last_status_code,
            last_error=view.last_error,
            last_response_ms=view.last_response_ms,
            created_at=view.created_at,
            delivered_at=view.delivered_at,
        )
