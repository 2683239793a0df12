"""Usage (``usage:write`` to push event batches, ``usage:read`` for aggregates)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from keyrack.domain.crm import Period
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import (
    Timestamp,
    UsageBatch,
    UsageBucketOut,
    UsageIngestOut,
)
from keyrack.routing import Router
from keyrack.services.crm import usage

router = Router(prefix="/api/v2/usage", tags=["usage"])


@router.post("", dependencies=[Depends(require("usage:write"))])
def push_usage(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: UsageBatch
) -> UsageIngestOut:
    """Store up to 1,000 events. Event ids already received are listed as duplicates."""
    events = [
        usage.UsageEventIn(e.id, e.client_id, e.event, e.count, e.timestamp) for e in body.events
    ]
    return UsageIngestOut.of(usage.record_usage(ctx, actor, scope, events))


@router.get("", dependencies=[Depends(require("usage:read"))])
def list_usage(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    period: Annotated[Period, Query(description="day or month (UTC)")] = Period.DAY,
    client_id: Annotated[str | None, Query(max_length=40)] = None,
    event: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[^\x00]+$")] = None,
    since: Annotated[Timestamp | None, Query(description="inclusive")] = None,
    until: Annotated[Timestamp | None, Query(description="exclusive")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[UsageBucketOut]:
    """Totals per client, period and event, oldest period first."""
    page = usage.usage_aggregates(
        ctx,
        scope,
        period=period,
        client_ref=client_id,
        event=event,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[UsageBucketOut.of(b) for b in page.data], next_cursor=page.next_cursor)
