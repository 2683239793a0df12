"""Key management bodies."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from keyrack.domain.keys import Environment
from keyrack.domain.usage import RATE_LIMITED, REQUESTS, SUCCESSES, Granularity, quantile_ms
from keyrack.domain.verification import KeyStatus
from keyrack.http.schemas.common import Strict
from keyrack.services.key_usage import Point, Series
from keyrack.services.keys import KeyView

Name = Field(min_length=1, max_length=200)


class RateLimitOut(BaseModel):
    rate_per_second: int | None = Field(description="null: the organization plan's default")
    concurrency: int | None


class KeyOut(BaseModel):
    ref: str
    name: str
    environment: Environment
    masked: str
    last4: str | None
    status: KeyStatus
    organization_id: int
    location_id: int | None
    owner_id: int | None
    permissions: list[str]
    rate_limit: RateLimitOut
    allowed_cidrs: list[str]
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    last_used_ip: str | None
    expires_at: datetime | None
    inactivity_days: int
    inactivity_deadline: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None

    @classmethod
    def of(cls, view: KeyView) -> KeyOut:
        return cls(
            ref=view.ref,
            name=view.name,
            environment=view.environment,
            masked=view.masked,
            last4=view.last4,
            status=view.status,
            organization_id=view.org_id,
            location_id=view.location_id,
            owner_id=view.owner_id,
            permissions=list(view.permissions),
            rate_limit=RateLimitOut(
                rate_per_second=view.rate_per_second, concurrency=view.concurrency
            ),
            allowed_cidrs=list(view.allowed_cidrs),
            created_at=view.created_at,
            created_by=view.created_by,
            last_used_at=view.last_used_at,
            last_used_ip=view.last_used_ip,
            expires_at=view.expires_at,
            inactivity_days=view.inactivity_days,
            inactivity_deadline=view.inactivity_deadline,
            revoked_at=view.revoked_at,
            revoked_reason=view.revoked_reason,
        )


class KeyWithSecret(KeyOut):
    key: str = Field(description="The secret. Shown once: store it now.")


class KeyCreate(Strict):
    name: str = Name
    environment: Environment = Environment.SANDBOX
    location_id: int | None = None
    owner_id: int | None = None
    permissions: list[str] = Field(default_factory=list, max_length=50)
    rate_per_second: int | None = Field(default=None, ge=1, le=100_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    allowed_cidrs: list[str] = Field(default_factory=list, max_length=100)
    expires_at: AwareDatetime | None = None
    inactivity_days: int = Field(default=90, ge=1, le=3650)


class KeyUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    permissions: list[str] | None = Field(default=None, max_length=50)
    rate_per_second: int | None = Field(default=None, ge=1, le=100_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    allowed_cidrs: list[str] | None = Field(default=None, max_length=100)
    expires_at: AwareDatetime | None = None


class KeyRoll(Strict):
    grace_seconds: int = Field(default=0, ge=0, le=int(timedelta(days=7).total_seconds()))


class KeyRevoke(Strict):
    reason: str = Field(min_length=1, max_length=500)


class Health(BaseModel):
    status: Literal["ok"]
    organization: str
    key: str


class LatencyOut(BaseModel):
    p50_ms: int | None = Field(description="upper bound of the latency bucket holding the median")
    p99_ms: int | None


class UsagePointOut(BaseModel):
    start: datetime
    requests: int
    successes: int = Field(description="answers below 400")
    rate_limited: int = Field(description="429 answers")
    problems: dict[str, int] = Field(description="4xx answers by problem code")
    latency: LatencyOut

    @classmethod
    def of(cls, point: Point) -> UsagePointOut:
        histogram = point.histogram
        return cls(
            start=point.start,
            requests=point.counts[REQUESTS],
            successes=point.counts[SUCCESSES],
            rate_limited=point.counts[RATE_LIMITED],
            problems=dict(sorted(point.problems.items())),
            latency=LatencyOut(
                p50_ms=quantile_ms(histogram, 0.5), p99_ms=quantile_ms(histogram, 0.99)
            ),
        )


class KeyUsageOut(BaseModel):
    key: str
    granularity: Granularity
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    total: UsagePointOut
    series: list[UsagePointOut]

    @classmethod
    def of(cls, found: Series) -> KeyUsageOut:
        return cls(
            key=found.ref,
            granularity=found.granularity,
            start=found.start,
            end=found.end,
            total=UsagePointOut.of(found.total),
            series=[UsagePointOut.of(point) for point in found.points],
        )
