"""Bodies of ``GET /api/v2/health`` and ``GET /api/v2/keys/self``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from keyrack.domain.keys import Environment
from keyrack.domain.verification import KeyStatus


class HealthOut(BaseModel):
    status: Literal["ok"]
    organization: str = Field(description="The name of the key's organization")
    key: str = Field(description="The key's ref")


class OrganizationRef(BaseModel):
    id: int
    slug: str
    name: str


class ScopeOut(BaseModel):
    organization: OrganizationRef
    location_id: int | None = Field(description="null: an agency key (the whole organization)")


class EffectiveRateLimit(BaseModel):
    rate_per_second: int
    concurrency: int


class KeySelf(BaseModel):
    ref: str
    name: str
    masked: str
    last4: str | None
    environment: Environment
    status: KeyStatus
    scope: ScopeOut
    owner_id: int | None
    permissions: list[str]
    rate_limit: EffectiveRateLimit = Field(description="In force now: the key's or its plan's")
    allowed_cidrs: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    inactivity_days: int
    # last: these change with every use (the gateway renders them per request)
    last_used_at: datetime | None
    last_used_ip: str | None
    inactivity_deadline: datetime | None
