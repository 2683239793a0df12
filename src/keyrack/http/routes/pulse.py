"""Pulse (``pulse:read`` / ``pulse:write``): NPS answers and the NPS per client and period."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Response

from keyrack.domain.crm import Period
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.crm import (
    NpsSummaryOut,
    PulseCreate,
    PulseOut,
    Timestamp,
)
from keyrack.routing import Router
from keyrack.services.crm import pulse

router = Router(prefix="/api/v2/pulse", tags=["pulse"])
READ = [Depends(require("pulse:read"))]

ClientFilter = Annotated[str | None, Query(max_length=40)]
Since = Annotated[Timestamp | None, Query(description="inclusive")]
Until = Annotated[Timestamp | None, Query(description="exclusive")]


@router.post("", status_code=201, dependencies=[Depends(require("pulse:write"))])
def create_pulse_response(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: PulseCreate
) -> PulseOut:
    view = pulse.record_response(
        ctx,
        actor,
        scope,
        client_ref=body.client_id,
        contact_ref=body.contact_id,
        score=body.score,
        comment=body.comment,
        responded_at=body.responded_at,
    )
    return PulseOut.of(view)


@router.get("", dependencies=READ)
def list_pulse_responses(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    client_id: ClientFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[PulseOut]:
    page = pulse.list_responses(
        ctx, scope, client_ref=client_id, since=since, until=until, limit=limit, cursor=cursor
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[PulseOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.get("/summary", dependencies=READ)
def get_nps_summary(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    period: Annotated[Period, Query(description="UTC day, month, quarter or year")] = Period.MONTH,
    client_id: ClientFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[NpsSummaryOut]:
    """NPS = % promoters (9-10) - % detractors (0-6), per client and period."""
    page = pulse.nps_summary(
        ctx,
        scope,
        period=period,
        client_ref=client_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[NpsSummaryOut.of(s) for s in page.data], next_cursor=page.next_cursor)


@router.get("/{response_id}", dependencies=READ)
def get_pulse_response(ctx: ContextDep, scope: ScopeDep, response_id: str) -> PulseOut:
    return PulseOut.of(pulse.get_response(ctx, scope, response_id))
