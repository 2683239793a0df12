"""Credential check and introspection for any valid key (no permission needed).

Both sit on the hot path and are served from the gateway's cache: the key's
record is read from the database at most once per cache lifetime (and rendered
to JSON then), the last use comes from the write-behind buffer, and the
principal is read from the request state without a dependency chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyrack.cache.keycache import KeyCache
from keyrack.domain.verification import KeyIdentity
from keyrack.http.deps import get_principal
from keyrack.http.schemas.introspection import (
    EffectiveRateLimit,
    HealthOut,
    KeySelf,
    OrganizationRef,
    ScopeOut,
)
from keyrack.services import keys, tenancy
from keyrack.services.context import Context
from keyrack.services.last_used import LastUsedBuffer

router = APIRouter(prefix="/api/v2", tags=["introspection"])


@dataclass(frozen=True, slots=True)
class SelfView:
    """A verified key as introspection shows it, rendered once per cache load."""

    organization: str
    body: dict[str, Any]
    """``KeySelf`` as JSON-ready values."""
    last_used_at: datetime | None
    inactivity_days: int
    active: bool


def load_self(ctx: Context, identity: KeyIdentity) -> SelfView:
    """Read what the cached identity lacks (creation, last use, org name): two queries."""
    view = keys.get_key(ctx, keys.Scope(identity.org_id), identity.ref)
    organization = tenancy.get_org_by_id(ctx, identity.org_id).name
    body = KeySelf(
        ref=view.ref,
        name=view.name,
        masked=view.masked,
        last4=view.last4,
        environment=view.environment,
        status=view.status,
        scope=ScopeOut(
            organization=OrganizationRef(
                id=identity.org_id, slug=identity.org_slug, name=organization
            ),
            location_id=view.location_id,
        ),
        owner_id=view.owner_id,
        permissions=list(view.permissions),
        rate_limit=EffectiveRateLimit(
            rate_per_second=identity.rate_per_second, concurrency=identity.concurrency
        ),
        allowed_cidrs=list(view.allowed_cidrs),
        created_at=view.created_at,
        created_by=view.created_by,
        last_used_at=view.last_used_at,
        last_used_ip=view.last_used_ip,
        expires_at=view.expires_at,
        inactivity_days=view.inactivity_days,
        inactivity_deadline=view.inactivity_deadline,
    ).model_dump(mode="json")
    return SelfView(
        organization,
        body,
        view.last_used_at,
        view.inactivity_days,
        view.inactivity_deadline is not None,
    )


def _json_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _self_view(request: Request) -> tuple[KeyIdentity, SelfView]:
    principal = get_principal(request)
    cache: KeyCache[SelfView] = request.app.state.key_cache
    return principal, await cache.view(principal)


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get(
    "/health", response_model=HealthOut, responses={401: {"description": "the key is not valid"}}
)
async def health(request: Request) -> Response:
    principal, found = await _self_view(request)
    return _json({"status": "ok", "organization": found.organization, "key": principal.ref})


@router.get("/keys/self", response_model=KeySelf)
async def key_self(request: Request) -> Response:
    principal, found = await _self_view(request)
    body = found.body
    buffer: LastUsedBuffer = request.app.state.last_used
    pending = buffer.pending(principal.key_id)
    if pending is not None and (found.last_used_at is None or found.last_used_at < pending[0]):
        used_at, ip = pending
        body = {**body, "last_used_at": _json_time(used_at), "last_used_ip": ip}
        if found.active:
            deadline = used_at + timedelta(days=found.inactivity_days)
            body["inactivity_deadline"] = _json_time(deadline)
    return _json(body)
