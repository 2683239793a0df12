"""Production-key requests of the caller's organization (``keys:manage``)."""

from __future__ import annotations

from fastapi import Depends, Request, Response

from keyrack.domain.requests import RequestStatus
from keyrack.http.deps import ActorDep, ContextDep, PrincipalDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.requests import KeyRequestCreate, KeyRequestOut
from keyrack.routing import Router
from keyrack.services import requests

router = Router(
    prefix="/api/v2/key-requests",
    tags=["key-requests"],
    dependencies=[Depends(require("keys:manage"))],
)


@router.get("")
def list_key_requests(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    status: RequestStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[KeyRequestOut]:
    """The organization's requests; a location key sees none (they lead to agency keys)."""
    page = requests.list_requests(ctx, scope, status=status, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[KeyRequestOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=201,
    responses={409: {"description": "A request for this app is already pending (conflict)"}},
)
def create_key_request(
    ctx: ContextDep, principal: PrincipalDep, actor: ActorDep, body: KeyRequestCreate
) -> KeyRequestOut:
    """Ask staff for a production key for a catalog app, or describe the need in free text.

    Only customer organizations ask, for themselves, with an agency key: a vendor's key,
    or a location key, is refused (403).
    """
    view = requests.create_request(
        ctx, actor, org_id=principal.org_id, app_ref=body.app, message=body.message
    )
    return KeyRequestOut.of(view)


@router.get("/{ref}")
def get_key_request(ctx: ContextDep, scope: ScopeDep, ref: str) -> KeyRequestOut:
    return KeyRequestOut.of(requests.get_request(ctx, ref, scope=scope))
