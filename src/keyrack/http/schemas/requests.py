"""App catalog, production-key requests, one-time hand-offs, and staff bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keyrack.domain.handoffs import HandoffPurpose, HandoffStatus
from keyrack.domain.keys import Environment
from keyrack.domain.requests import RequestStatus
from keyrack.http.schemas.common import Strict
from keyrack.services.apps import AppView
from keyrack.services.handoffs import HandoffView, NewLink, Revealed
from keyrack.services.requests import KeyRequestView


class AppOut(BaseModel):
    ref: str
    name: str
    description: str
    vendor: str
    vendor_name: str
    permissions: list[str] = Field(description="What a production key for this app may do")
    created_at: datetime

    @classmethod
    def of(cls, view: AppView) -> AppOut:
        return cls(
            ref=view.ref,
            name=view.name,
            description=view.description,
            vendor=view.vendor_slug,
            vendor_name=view.vendor_name,
            permissions=list(view.permissions),
            created_at=view.created_at,
        )


class AppCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    sandbox_key: str = Field(
        min_length=1, max_length=40, description="ref of the vendor's sandbox key defining the app"
    )


class KeyRequestOut(BaseModel):
    ref: str
    organization: str
    app: str | None
    app_name: str | None
    message: str | None
    status: RequestStatus
    requested_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    key_ref: str | None = Field(description="The production key issued on approval")
    claim_ref: str | None = Field(
        description="Open it once (POST /api/v2/claims/{ref}/open) to read the key's secret"
    )

    @classmethod
    def of(cls, view: KeyRequestView) -> KeyRequestOut:
        return cls(
            ref=view.ref,
            organization=view.org_slug,
            app=view.app_ref,
            app_name=view.app_name,
            message=view.message,
            status=view.status,
            requested_by=view.requested_by,
            created_at=view.created_at,
            decided_by=view.decided_by,
            decided_at=view.decided_at,
            reason=view.reason,
            key_ref=view.key_ref,
            claim_ref=view.claim_ref,
        )


class KeyRequestCreate(Strict):
    app: str | None = Field(default=None, max_length=40, description="ref of a catalog app")
    message: str | None = Field(default=None, max_length=2000, description="free-text request")


class Approval(Strict):
    permissions: list[str] | None = Field(
        default=None, max_length=50, description="only for free-text requests"
    )
    name: str | None = Field(default=None, min_length=1, max_length=200)


class Rejection(Strict):
    reason: str = Field(min_length=1, max_length=500)


class OrgAccess(Strict):
    api_enabled: bool


class OrgOut(BaseModel):
    slug: str
    name: str
    kind: str
    api_enabled: bool


class HandoffOut(BaseModel):
    ref: str
    purpose: HandoffPurpose
    status: HandoffStatus
    key_ref: str
    key_name: str
    key_masked: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    opened_at: datetime | None

    @classmethod
    def of(cls, view: HandoffView) -> HandoffOut:
        return cls(
            ref=view.ref,
            purpose=view.purpose,
            status=view.status,
            key_ref=view.key_ref,
            key_name=view.key_name,
            key_masked=view.key_masked,
            created_at=view.created_at,
            created_by=view.created_by,
            expires_at=view.expires_at,
            opened_at=view.opened_at,
        )


class HandoffCreate(Strict):
    key: str = Field(min_length=1, max_length=100, description="The secret you hold for this key")


class HandoffOpen(Strict):
    token: str = Field(min_length=16, max_length=100, description="The token of a hand-off link")


class LinkOut(HandoffOut):
    url: str = Field(description="Give this to the vendor yourself; it opens once. Never emailed.")

    @classmethod
    def of_link(cls, link: NewLink, url: str) -> LinkOut:
        return cls(**HandoffOut.of(link.handoff).model_dump(), url=url)


class RevealedOut(BaseModel):
    key: str = Field(description="The secret. Shown once: store it now.")
    ref: str
    name: str
    environment: Environment
    permissions: list[str]
    organization_id: int
    handoff: str

    @classmethod
    def of(cls, revealed: Revealed) -> RevealedOut:
        return cls(
            key=revealed.secret,
            ref=revealed.key.ref,
            name=revealed.key.name,
            environment=revealed.key.environment,
            permissions=list(revealed.key.permissions),
            organization_id=revealed.key.org_id,
            handoff=revealed.handoff.ref,
        )
