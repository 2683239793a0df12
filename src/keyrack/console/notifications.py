"""The notifications inbox: expiry notices, leaks, request decisions."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    PREFIX,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    SignedInDep,
    render,
    see_other,
)
from keyrack.routing import Router
from keyrack.services import notifications

router = Router(prefix=f"{PREFIX}/notifications", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
def inbox(
    ctx: CtxDep, request: Request, current: SignedInDep, cursor: str | None = None
) -> HTMLResponse:
    page = notifications.list_notifications(ctx, current.user.id, limit=50, cursor=cursor)
    return render(request, "notifications.html", page=page)


@router.post("/read", dependencies=[CsrfDep])
def mark_all_read(ctx: CtxDep, current: SignedInDep) -> Response:
    notifications.mark_all_read(ctx, current.user.id)
    return see_other(f"{PREFIX}/notifications")
