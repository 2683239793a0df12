"""Bodies of ``POST /api/v2/keys/verify``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keyrack.domain.keys import Environment
from keyrack.domain.verification import KeyIdentity, RemoteCode
from keyrack.http.schemas.common import Strict
from keyrack.http.schemas.introspection import EffectiveRateLimit


class VerifyIn(Strict):
    key: str = Field(min_length=1, max_length=256, description="The key presented to your service")
    permissions: list[str] = Field(
        default_factory=list, max_length=50, description="All of these are required"
    )


class VerifiedKey(BaseModel):
    ref: str
    name: str
    organization_id: int
    organization_slug: str
    location_id: int | None
    owner_id: int | None
    environment: Environment
    permissions: list[str]
    rate_limit: EffectiveRateLimit
    expires_at: datetime | None

    @classmethod
    def of(cls, identity: KeyIdentity) -> VerifiedKey:
        return cls(
            ref=identity.ref,
            name=identity.name,
            organization_id=identity.org_id,
            organization_slug=identity.org_slug,
            location_id=identity.location_id,
            owner_id=identity.owner_id,
            environment=identity.environment,
            permissions=sorted(identity.permissions),
            rate_limit=EffectiveRateLimit(
                rate_per_second=identity.rate_per_second, concurrency=identity.concurrency
            ),
            expires_at=identity.expires_at,
        )


class VerifyOut(BaseModel):
    valid: bool
    code: RemoteCode
    key: VerifiedKey | None = Field(
        description="The key found (never its secret); null when none is found in your scope"
    )
    retry_after: int | None = Field(
        default=None, description="Seconds to wait when the code is RATE_LIMITED"
    )
    detail: str | None = Field(
        default=None,
        description="When and why a key that once worked stopped (EXPIRED, REVOKED), if known",
    )
