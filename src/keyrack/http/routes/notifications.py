"""In-app notifications (``keys:manage``): a key reads its owner's, or its organization's;
a location key only those about its location's keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Response

from keyrack.http.deps import ContextDep, PrincipalDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.notifications import NotificationOut
from keyrack.routing import Router
from keyrack.services import notifications

router = Router(
    prefix="/api/v2/notifications",
    tags=["notifications"],
    dependencies=[Depends(require("keys:manage"))],
)
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("")
def list_notifications(
    ctx: ContextDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
    unread: bool = False,
) -> ListPage[NotificationOut]:
    page = notifications.list_notifications(
        ctx,
        principal.owner_id,
        org_id=principal.org_id,
        location_id=principal.location_id,
        unread_only=unread,
        limit=limit,
        cursor=cursor,
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[NotificationOut.of(n) for n in page.data], next_cursor=page.next_cursor)


@router.post("/{notification_id}/read")
def mark_notification_read(
    ctx: ContextDep, principal: PrincipalDep, notification_id: RowId
) -> NotificationOut:
    view = notifications.mark_read(
        ctx,
        principal.owner_id,
        notification_id,
        org_id=principal.org_id,
        location_id=principal.location_id,
    )
    return NotificationOut.of(view)
