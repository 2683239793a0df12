"""Credential check and introspection for any valid key (no permission needed).

Both are served from the gateway's cache: the key's record is read from the
database at most once per cache lifetime, and the last use comes from the
write-behind buffer, so calling these in a loop costs no database query.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fastapi import APIRouter, Request

from keyrack.cache.keycache import KeyCache
from keyrack.domain.verification import KeyIdentity
from keyrack.http.deps import PrincipalDep
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
    key: keys.KeyView
    organization: str


def load_self(ctx: Context, identity: KeyIdentity) -> SelfView:
    """What introspection shows beyond the cached identity (one read per cache lifetime)."""
    view = keys.get_key(ctx, keys.Scope(identity.org_id), identity.ref)
    return SelfView(view, tenancy.get_org_by_id(ctx, identity.org_id).name)


async def _self_view(request: Request, principal: KeyIdentity) -> SelfView:
    cache: KeyCache[SelfView] = request.app.state.key_cache
    found = await cache.view(principal)
    buffer: LastUsedBuffer = request.app.state.last_used
    pending = buffer.pending(principal.key_id)
    view = found.key
    if pending is not None and (view.last_used_at is None or view.last_used_at < pending[0]):
        view = dataclasses.replace(view, last_used_at=pending[0], last_used_ip=pending[1])
        return SelfView(view, found.organization)
    return found


@router.get("/health", responses={401: {"description": "the key is not valid"}})
async def health(request: Request, principal: PrincipalDep) -> HealthOut:
    found = await _self_view(request, principal)
    return HealthOut(status="ok", organization=found.organization, key=principal.ref)


@router.get("/keys/self")
async def key_self(request: Request, principal: PrincipalDep) -> KeySelf:
    found = await _self_view(request, principal)
    view = found.key
    return KeySelf(
        ref=view.ref,
        name=view.name,
        masked=view.masked,
        last4=view.last4,
        environment=view.environment,
        status=view.status,
        scope=ScopeOut(
            organization=OrganizationRef(
                id=principal.org_id, slug=principal.org_slug, name=found.organization
            ),
            location_id=view.location_id,
        ),
        owner_id=view.owner_id,
        permissions=list(view.permissions),
        rate_limit=EffectiveRateLimit(
            rate_per_second=principal.rate_per_second, concurrency=principal.concurrency
        ),
        allowed_cidrs=list(view.allowed_cidrs),
        created_at=view.created_at,
        created_by=view.created_by,
        last_used_at=view.last_used_at,
        last_used_ip=view.last_used_ip,
        expires_at=view.expires_at,
        inactivity_days=view.inactivity_days,
        inactivity_deadline=view.inactivity_deadline,
    )
