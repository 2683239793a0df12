"""Integration bodies: connections (the credential only ever comes in), syncs, change
history, runs and their records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from keyrack.http.schemas.common import Strict
from keyrack.services.integrations.connections import ChangeView, ConnectionView
from keyrack.services.integrations.runs import RecordView, RunView
from keyrack.services.integrations.syncs import SyncView

CREDENTIAL = (
    'Write-only: {"api_key": …} (an API key or private-app token) or the OAuth2 members '
    '{"access_token", "refresh_token", "expires_at", "token_url", "client_id", '
    '"client_secret"}. Sealed at rest, never returned.'
)


class IntegrationCreate(Strict):
    provider: str = Field(min_length=1, max_length=32, examples=["hubspot"])
    name: str = Field(min_length=1, max_length=200)
    base_url: str | None = Field(
        default=None, max_length=2000, description="None: the provider's own service"
    )
    location_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    credential: dict[str, Any] | None = Field(default=None, description=CREDENTIAL)


class IntegrationUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    base_url: str | None = Field(default=None, max_length=2000)
    location_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CredentialPut(Strict):
    credential: dict[str, Any] = Field(description=CREDENTIAL)


class LastError(BaseModel):
    at: datetime
    message: str = Field(description="exactly as the provider said it")


class IntegrationOut(BaseModel):
    id: str = Field(examples=["int_01HX…"])
    provider: str
    name: str
    location_id: int | None
    base_url: str | None
    has_credential: bool
    status: Literal["active", "expired", "revoked", "unauthorized"]
    status_reason: str | None
    last_success_at: datetime | None
    last_error: LastError | None
    last_probed_at: datetime | None
    connected_by: str
    created_at: datetime

    @classmethod
    def of(cls, view: ConnectionView) -> IntegrationOut:
        error = (
            LastError(at=view.last_error_at, message=view.last_error_message or "")
            if view.last_error_at is not None
            else None
        )
        return cls(
            id=view.id,
            provider=view.provider,
            name=view.name,
            location_id=view.location_id,
            base_url=view.base_url,
            has_credential=view.has_credential,
            status=view.status,
            status_reason=view.status_reason,
            last_success_at=view.last_success_at,
            last_error=error,
            last_probed_at=view.last_probed_at,
            connected_by=view.connected_by,
            created_at=view.created_at,
        )


class FilterIn(Strict):
    field: str = Field(min_length=1, max_length=100)
    op: Literal["eq", "ne", "in", "not_in", "exists", "contains", "gt", "gte", "lt", "lte"]
    value: Any = None


class MappingIn(Strict):
    local: str = Field(min_length=1, max_length=100)
    remote: str = Field(min_length=1, max_length=100)
    transform: (
        Literal["lower", "upper", "trim", "cents_to_units", "units_to_cents", "date", "bool"] | None
    ) = None


class SyncPut(Strict):
    enabled: bool | None = None
    filters: list[FilterIn] | None = Field(default=None, max_length=50)
    field_mappings: list[MappingIn] | None = Field(default=None, max_length=100)
    schedule_seconds: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)


class SyncOut(BaseModel):
    integration_id: str
    record_type: str
    direction: str
    enabled: bool
    filters: list[dict[str, Any]]
    field_mappings: list[dict[str, Any]]
    schedule_seconds: int
    watermark: str | None
    next_run_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, view: SyncView) -> SyncOut:
        return cls(
            integration_id=view.integration_id,
            record_type=view.record_type,
            direction=view.direction,
            enabled=view.enabled,
            filters=[f.as_dict() for f in view.filters],
            field_mappings=[m.as_dict() for m in view.field_mappings],
            schedule_seconds=view.schedule_seconds,
            watermark=view.watermark,
            next_run_at=view.next_run_at,
            updated_at=view.updated_at,
        )


class ChangeOut(BaseModel):
    id: int
    occurred_at: datetime
    actor: str
    what: str = Field(
        description="connection, credential, status or sync:<record_type>:<direction>"
    )
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def of(cls, view: ChangeView) -> ChangeOut:
        return cls(
            id=view.id,
            occurred_at=view.occurred_at,
            actor=view.actor,
            what=view.what,
            before=view.before,
            after=view.after,
        )


class RunOut(BaseModel):
    id: str = Field(examples=["run_01HX…"])
    integration_id: str
    status: Literal["queued", "running", "succeeded", "partial", "failed", "canceled"]
    trigger: str
    requested_by: str
    retry_of: str | None
    counts: dict[str, Any] = Field(
        description="{record_type: {direction: {synced, created, updated, unchanged, skipped, failed}}}"
    )
    api_calls: int
    rate_limit_wait_seconds: float
    watermark_before: dict[str, Any]
    watermark_after: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, view: RunView) -> RunOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields})


class RunRecordOut(BaseModel):
    id: int
    record_type: str
    direction: str
    local_id: str | None
    remote_id: str | None
    name: str | None
    outcome: Literal["synced", "skipped", "failed"]
    result: str | None = Field(description="for synced: created, updated or unchanged")
    skip: dict[str, Any] | None = Field(description="for skipped: the filter and the value tested")
    error_message: str | None = Field(description="for failed: the provider's exact words")
    error_code: str | None
    http_status: int | None
    exchange: dict[str, Any] | None = Field(description="the request and response, redacted")
    created_at: datetime

    @classmethod
    def of(cls, view: RecordView) -> RunRecordOut:
        return cls(**{name: getattr(view, name) for name in cls.model_fields})


class InboundOut(BaseModel):
    """What an inbound POST did: its run (trigger ``inbound``) and each record's outcome,
    in the order they were taken (clients first)."""

    run: RunOut
    records: list[RunRecordOut]
