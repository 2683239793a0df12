"""Settings → API → Webhooks: registered endpoints, their deliveries, redelivery.

Over the same services as ``/api/v2/webhooks``: registering shows the signing secret
once, in that answer only (like a new user's password); a refused registration shows
the form again as it was typed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    PREFIX,
    ActorDep,
    AdminDep,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    render,
    see_other,
)
from keyrack.errors import InvalidInput
from keyrack.routing import Router
from keyrack.services import webhooks
from keyrack.services.context import Context
from keyrack.services.notices import EVENT_TYPES
from keyrack.services.webhooks import EndpointView

PAGE = f"{PREFIX}/settings/api/webhooks"
router = Router(prefix=PAGE, route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
NOTICES = {
    "deleted": "Webhook deleted: nothing more is sent to it.",
    "redelivered": "Delivery queued again: it goes out in a moment.",
}


def _list_page(
    ctx: Context,
    request: Request,
    org_id: int,
    *,
    cursor: str | None = None,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    typed: dict[str, object] | None = None,
    created: tuple[EndpointView, str] | None = None,
) -> HTMLResponse:
    """``typed``: what the form held when it was refused; ``created``: the endpoint just
    registered and its secret, shown this once."""
    return render(
        request,
        "webhooks.html",
        status_code=status,
        page=webhooks.list_endpoints(ctx, org_id, limit=PAGE_SIZE, cursor=cursor),
        event_types=EVENT_TYPES,
        notice=notice,
        error=error,
        typed=typed or {"events": ["*"]},
        created=created,
    )


@router.get("")
def endpoints(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    assert current.user.org_id is not None
    return _list_page(
        ctx, request, current.user.org_id, cursor=cursor, notice=NOTICES.get(notice or "")
    )


@router.post("", dependencies=[CsrfDep])
def register(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    url: Annotated[str, Form(max_length=2000)] = "",
    events: Annotated[list[str] | None, Form()] = None,
    description: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    org_id = current.user.org_id
    assert org_id is not None
    typed: dict[str, object] = {"url": url, "events": events or [], "description": description}
    try:
        created = webhooks.create_endpoint(
            ctx, actor, org_id, url=url, events=events or ["*"], description=description
        )
    except InvalidInput as exc:
        return _list_page(ctx, request, org_id, status=400, error=exc.detail, typed=typed)
    return _list_page(ctx, request, org_id, status=201, created=created)


@router.post("/{endpoint_id}/delete", dependencies=[CsrfDep])
def delete(ctx: CtxDep, endpoint_id: RowId, current: AdminDep, actor: ActorDep) -> Response:
    assert current.user.org_id is not None
    webhooks.delete_endpoint(ctx, actor, current.user.org_id, endpoint_id)
    return see_other(f"{PAGE}?notice=deleted")


@router.get("/{endpoint_id}")
def deliveries(
    ctx: CtxDep,
    request: Request,
    endpoint_id: RowId,
    current: AdminDep,
    cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """An endpoint and its deliveries, newest first, 50 a page."""
    org_id = current.user.org_id
    assert org_id is not None
    return render(
        request,
        "webhook.html",
        endpoint=webhooks.get_endpoint(ctx, org_id, endpoint_id),
        page=webhooks.list_deliveries(ctx, org_id, endpoint_id, limit=PAGE_SIZE, cursor=cursor),
        notice=NOTICES.get(notice or ""),
    )


@router.post("/deliveries/{delivery_id}/redeliver", dependencies=[CsrfDep])
def redeliver(ctx: CtxDep, delivery_id: RowId, current: AdminDep, actor: ActorDep) -> Response:
    assert current.user.org_id is not None
    delivery = webhooks.redeliver(ctx, actor, current.user.org_id, delivery_id)
    return see_other(f"{PAGE}/{delivery.endpoint_id}?notice=redelivered")
