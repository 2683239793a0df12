"""The app catalog: every organization reads it; a vendor registers its apps (``keys:manage``)."""

from __future__ import annotations

from fastapi import Depends, Request, Response

from keyrack.http.deps import ActorDep, ContextDep, PrincipalDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.requests import AppCreate, AppOut
from keyrack.routing import Router
from keyrack.services import apps

router = Router(prefix="/api/v2/apps", tags=["apps"])


@router.get("")
def list_apps(
    ctx: ContextDep,
    _principal: PrincipalDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[AppOut]:
    page = apps.list_apps(ctx, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[AppOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.get("/{ref}")
def get_app(ctx: ContextDep, _principal: PrincipalDep, ref: str) -> AppOut:
    return AppOut.of(apps.get_app(ctx, ref))


@router.post("", status_code=201, dependencies=[Depends(require("keys:manage"))])
def register_app(
    ctx: ContextDep, principal: PrincipalDep, actor: ActorDep, body: AppCreate
) -> AppOut:
    view = apps.register_app(
        ctx,
        actor,
        vendor_org_id=principal.org_id,
        name=body.name,
        description=body.description,
        sandbox_key_ref=body.sandbox_key,
    )
    return AppOut.of(view)
