"""Key management (``keys:manage``): list, create, read, update, roll, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from pydantic import AwareDatetime

from keyrack.domain.usage import Granularity
from keyrack.domain.verification import KeyStatus
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.keys import (
    KeyCreate,
    KeyOut,
    KeyRevoke,
    KeyRoll,
    KeyUpdate,
    KeyUsageOut,
    KeyWithSecret,
)
from keyrack.routing import Router
from keyrack.services import key_usage, keys

router = Router(
    prefix="/api/v2/keys", tags=["keys"], dependencies=[Depends(require("keys:manage"))]
)


def _with_secret(view: keys.KeyView, secret: str) -> KeyWithSecret:
    return KeyWithSecret(**KeyOut.of(view).model_dump(), key=secret)


@router.get("")
def list_keys(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: KeyStatus | None = None,
) -> ListPage[KeyOut]:
    page = keys.list_keys(ctx, scope, status=status, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[KeyOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201)
def create_key(ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: KeyCreate) -> KeyWithSecret:
    view, secret = keys.create_key(ctx, actor, scope, **body.model_dump())
    return _with_secret(view, secret)


@router.get("/{ref}")
def get_key(ctx: ContextDep, scope: ScopeDep, ref: str) -> KeyOut:
    return KeyOut.of(keys.get_key(ctx, scope, ref))


@router.get("/{ref}/usage", response_model_by_alias=True)
def get_key_usage(
    ctx: ContextDep,
    scope: ScopeDep,
    ref: str,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    granularity: Granularity = Granularity.MINUTE,
) -> KeyUsageOut:
    """The key's usage per minute, hour or day (SPEC §6.3): requests, successes, 429s,
    4xx by problem code, p50/p99 latency; every instance's requests counted once."""
    found = key_usage.series(ctx, scope, ref, start=start, end=end, granularity=granularity)
    return KeyUsageOut.of(found)


@router.patch(
    "/{ref}", responses={409: {"description": "The key is revoked or expired (conflict)"}}
)
def update_key(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, ref: str, body: KeyUpdate
) -> KeyOut:
    return KeyOut.of(keys.update_key(ctx, actor, scope, ref, **body.model_dump(exclude_unset=True)))


@router.delete("/{ref}")
def delete_key(ctx: ContextDep, scope: ScopeDep, actor: ActorDep, ref: str) -> KeyOut:
    """Deleting a key revokes it; the row stays for the audit trail."""
    return KeyOut.of(keys.revoke_key(ctx, actor, scope, ref, reason="deleted through the API"))


@router.post(
    "/{ref}/roll", responses={409: {"description": "Only an active key is rolled (conflict)"}}
)
def roll_key(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, ref: str, body: KeyRoll | None = None
) -> KeyWithSecret:
    grace = timedelta(seconds=body.grace_seconds if body else 0)
    view, secret = keys.roll_key(ctx, actor, scope, ref, grace=grace)
    return _with_secret(view, secret)


@router.post("/{ref}/revoke")
def revoke_key(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, ref: str, body: KeyRevoke
) -> KeyOut:
    return KeyOut.of(keys.revoke_key(ctx, actor, scope, ref, reason=body.reason))
