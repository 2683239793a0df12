"""Bulk exports and uploads: the requests and the jobs as shown."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keyrack.domain.exports import Format, Resource, Status
from keyrack.domain.imports import Outcome
from keyrack.domain.imports import Status as ImportStatus
from keyrack.http.schemas.common import Strict
from keyrack.http.schemas.crm import Timestamp


class ExportCreate(Strict):
    resource: Resource
    format: Format = Format.CSV
    gzip: bool = False
    updated_since: Timestamp | None = Field(
        default=None,
        description="rows changed at or after this; pass the last export's next_updated_since "
        "for the rows changed since, none skipped or repeated",
    )
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description="clients: status; the others: client_id (a client's id)",
        max_length=5,
    )


class ExportOut(BaseModel):
    """An export job; ``view.ref`` is its ``id``."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(validation_alias="ref", examples=["exp_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"])
    resource: Resource
    format: Format
    gzip: bool
    status: Status
    updated_since: datetime | None
    filters: dict[str, str]
    location_id: int | None = Field(description="the location of the key that asked for it")
    rows_total: int | None = Field(description="an estimate, known once the job starts")
    rows_done: int
    bytes: int
    next_updated_since: datetime | None = Field(
        description="the watermark: updated_since for the next incremental export"
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    download_expires_at: datetime | None


class ImportOut(BaseModel):
    """An upload job and its counts; ``view.ref`` is its ``id``."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(validation_alias="ref", examples=["imp_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"])
    resource: Resource
    format: Format
    status: ImportStatus
    bytes: int
    rows_done: int
    created: int
    updated: int
    unchanged: int
    failed: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    line: int = Field(description="the line of the file the row starts on (1: the header)")
    outcome: Outcome
    record_id: str | None
    error: str | None = Field(description="for a failed row: why, exactly")
