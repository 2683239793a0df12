"""Credential check and introspection for any valid key (no permission needed).

Both sit on the hot path and are served from the gateway's cache: the key's
record is read from the database at most once per cache lifetime (and rendered
to JSON then), the last use comes from the write-behind buffer, and the
principal is read from the request state without a dependency chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from fastapi import Request
from starlette.responses import Response

from keyrack.cache.keycache import KeyCache
from keyrack.domain.expiry import inactivity_deadline
from keyrack.domain.verification import KeyIdentity
from keyrack.http.deps import get_principal
from keyrack.http.schemas.introspection import (
    EffectiveRateLimit,
    HealthOut,
    KeySelf,
    OrganizationRef,
    ScopeOut,
)
from keyrack.routing import Router
from keyrack.services.introspection import SelfView
from keyrack.services.last_used import LastUsedBuffer, Use

router = Router(prefix="/api/v2", tags=["introspection"])


LAST_USE_FIELDS = frozenset({"last_used_at", "last_used_ip", "inactivity_deadline"})


@dataclass(frozen=True, slots=True)
class RenderedSelf:
    """A key's ``SelfView`` as introspection shows it, rendered to JSON once per cache load.

    The last use changes with every request: ``keys/self`` is stored whole as of the
    load, and as ``head`` (every other field) for appending a newer use to.
    """

    health: bytes
    """The whole ``GET /api/v2/health`` body."""
    stored: bytes
    """The whole ``keys/self`` body, with the last use as stored at the load."""
    head: bytes
    """``stored`` without its last-use fields: ``{...,`` ready for them."""
    created_at: datetime
    last_used_at: datetime | None
    inactivity_days: int
    active: bool
    """Whether the key can still lapse from inactivity (it has a deadline)."""

    def render(self, pending: Use | None) -> bytes:
        """The ``keys/self`` body, with ``pending`` as the last use when it is newer."""
        if pending is None or (self.last_used_at is not None and pending[0] <= self.last_used_at):
            return self.stored
        return self.head + _last_use_fields(
            *pending, self.created_at, self.inactivity_days, self.active
        )


@lru_cache(maxsize=1024)
def _last_use_fields(
    used_at: datetime, ip: str | None, created_at: datetime, inactivity_days: int, active: bool
) -> bytes:
    """The closing fields of ``keys/self``: one rendering per key, second and address
    (uses are recorded to the second)."""
    deadline = inactivity_deadline(created_at, used_at, inactivity_days) if active else None
    return b'"last_used_at":%s,"last_used_ip":%s,"inactivity_deadline":%s}' % (
        _json_time(used_at),
        json.dumps(ip).encode(),
        _json_time(deadline) if deadline is not None else b"null",
    )


def render_self(found: SelfView) -> RenderedSelf:
    """The answers of ``keys/self`` and ``health`` for ``found``, as JSON."""
    identity, view, organization = found.identity, found.key, found.organization
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
        expires_at=view.expires_at,
        inactivity_days=view.inactivity_days,
        last_used_at=view.last_used_at,
        last_used_ip=view.last_used_ip,
        inactivity_deadline=view.inactivity_deadline,
    )
    health = HealthOut(status="ok", organization=organization, key=identity.ref)
    return RenderedSelf(
        health=health.model_dump_json().encode(),
        stored=body.model_dump_json().encode(),
        head=body.model_dump_json(exclude=set(LAST_USE_FIELDS)).encode()[:-1] + b",",
        created_at=view.created_at,
        last_used_at=view.last_used_at,
        inactivity_days=view.inactivity_days,
        active=view.inactivity_deadline is not None,
    )


def _json_time(moment: datetime) -> bytes:
    return b'"%s"' % moment.isoformat().replace("+00:00", "Z").encode()


async def _self_view(request: Request) -> tuple[KeyIdentity, RenderedSelf]:
    principal = await get_principal(request)
    cache: KeyCache[RenderedSelf] = request.app.state.key_cache
    return principal, await cache.view(principal)


@router.get(
    "/health", response_model=HealthOut, responses={401: {"description": "the key is not valid"}}
)
async def get_health(request: Request) -> Response:
    _, found = await _self_view(request)
    return Response(found.health, media_type="application/json")


@router.get("/keys/self", response_model=KeySelf)
async def get_key_self(request: Request) -> Response:
    principal, found = await _self_view(request)
    buffer: LastUsedBuffer = request.app.state.last_used
    return Response(found.render(buffer.pending(principal.key_id)), media_type="application/json")
