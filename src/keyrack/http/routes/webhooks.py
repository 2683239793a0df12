"""Webhook endpoints and their delivery log (``keys:manage``, organization keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Response

from keyrack.domain.verification import KeyIdentity
from keyrack.errors import AccessDenied
from keyrack.http.deps import ActorDep, ContextDep, PrincipalDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.webhooks import DeliveryOut, WebhookCreate, WebhookOut, WebhookWithSecret
from keyrack.routing import Router
from keyrack.services import webhooks


async def _org_key(principal: PrincipalDep) -> KeyIdentity:
    """Webhooks belong to the organization: a location key may not manage them."""
    if principal.location_id is not None:
        raise AccessDenied("webhooks belong to the organization; use an agency (organization) key")
    return principal


router = Router(
    prefix="/api/v2/webhooks",
    tags=["webhooks"],
    dependencies=[Depends(require("keys:manage")), Depends(_org_key)],
)
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("")
def list_webhooks(
    ctx: ContextDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[WebhookOut]:
    page = webhooks.list_endpoints(ctx, principal.org_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[WebhookOut.of(e) for e in page.data], next_cursor=page.next_cursor)


@router.post("", status_code=201)
def create_webhook(
    ctx: ContextDep, principal: PrincipalDep, actor: ActorDep, body: WebhookCreate
) -> WebhookWithSecret:
    view, secret = webhooks.create_endpoint(ctx, actor, principal.org_id, **body.model_dump())
    return WebhookWithSecret(**WebhookOut.of(view).model_dump(), secret=secret)


@router.delete("/{webhook_id}")
def delete_webhook(
    ctx: ContextDep, principal: PrincipalDep, actor: ActorDep, webhook_id: RowId
) -> WebhookOut:
    return WebhookOut.of(webhooks.delete_endpoint(ctx, actor, principal.org_id, webhook_id))


@router.get("/{webhook_id}/deliveries")
def list_webhook_deliveries(
    ctx: ContextDep,
    principal: PrincipalDep,
    request: Request,
    response: Response,
    webhook_id: RowId,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[DeliveryOut]:
    page = webhooks.list_deliveries(ctx, principal.org_id, webhook_id, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[DeliveryOut.of(d) for d in page.data], next_cursor=page.next_cursor)


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    responses={409: {"description": "An attempt of this delivery is in flight (conflict)"}},
)
def redeliver_webhook_delivery(
    ctx: ContextDep, principal: PrincipalDep, actor: ActorDep, delivery_id: RowId
) -> DeliveryOut:
    return DeliveryOut.of(webhooks.redeliver(ctx, actor, principal.org_id, delivery_id))
