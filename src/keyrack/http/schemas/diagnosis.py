"""Diagnostics bodies: test with one record, diagnose and its support bundle, issues."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keyrack.http.schemas.common import Strict

RecordTypeIn = Literal["clients", "contacts", "contracts", "engagements"]
DirectionIn = Literal["inbound", "outbound"]


class TestRecordIn(Strict):
    record_type: RecordTypeIn
    direction: DirectionIn
    record_id: str = Field(
        min_length=1,
        max_length=255,
        description="outbound: the Keyrack id; inbound: the provider's id (or a Keyrack id "
        "whose provider id is known)",
    )
    dry_run: bool = Field(default=True, description="true (the default) stops before the write")


class StepOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(
        description="sync, credential, load, filter, mapping, links, request, write-back"
    )
    outcome: Literal["ok", "passed", "skipped", "failed", "not-run"]
    detail: str


class TestRecordOut(BaseModel):
    integration_id: str
    record_type: str
    direction: str
    record_id: str
    dry_run: bool
    outcome: Literal["synced", "would-sync", "skipped", "failed"]
    steps: list[StepOut]


class DiagnoseIn(Strict):
    record_type: RecordTypeIn | None = None
    direction: DirectionIn | None = None
    since: datetime | None = Field(
        default=None,
        description="look at runs and changes from then (default: around when it last worked)",
    )


class CheckOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Literal["credentials", "direction-and-filters", "recent-changes", "single-record"]
    verdict: Literal["ok", "warning", "problem", "not-run"]
    summary: str


class DiagnosisOut(BaseModel):
    integration_id: str
    checks: list[CheckOut] = Field(description="the four checks, in the article's order")
    bundle: dict[str, Any] = Field(
        description="the support bundle: integration, affected record types and direction, "
        "when it last worked, example records, the exact error, recent changes; no secret"
    )
    markdown: str = Field(description="the bundle as Markdown, for a support ticket")


class IssueOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(examples=["iss_01HX…"])
    integration_id: str
    cause: str
    kind: Literal["credential", "failing", "filter-skips-all", "direction-off"]
    record_type: str | None
    direction: str | None
    summary: str
    status: Literal["open", "resolved"]
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    bundle: dict[str, Any] | None = Field(description="the support bundle when it opened")
