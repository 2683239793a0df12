"""Platform staff over the API: decide key requests, switch organizations' API access.

Only keys owned by a staff user reach these routes; any other key gets 404, so the
staff surface is not advertised to customers.
"""

from __future__ import annotations

from fastapi import Depends, Request, Response

from keyrack.domain.requests import RequestStatus
from keyrack.domain.verification import KeyIdentity
from keyrack.errors import NotFound
from keyrack.http.deps import ActorDep, ContextDep, PrincipalDep
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.requests import Approval, KeyRequestOut, OrgAccess, OrgOut, Rejection
from keyrack.routing import Router
from keyrack.services import requests, tenancy


async def require_staff(principal: PrincipalDep) -> KeyIdentity:
    if not principal.owner_is_staff:
        raise NotFound("not found")
    return principal


router = Router(
    prefix="/api/v2/staff",
    tags=["staff"],
    dependencies=[Depends(require_staff)],
    responses={404: {"description": "Not found (not-found), also to a key not owned by staff"}},
)


@router.get("/requests")
def list_all_key_requests(
    ctx: ContextDep,
    request: Request,
    response: Response,
    status: RequestStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[KeyRequestOut]:
    page = requests.list_requests(ctx, None, status=status, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(data=[KeyRequestOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post(
    "/requests/{ref}/approve", responses={409: {"description": "Already decided (conflict)"}}
)
def approve_key_request(
    ctx: ContextDep, actor: ActorDep, ref: str, body: Approval | None = None
) -> KeyRequestOut:
    """Issue the production key; its secret goes to the customer as a one-time claim."""
    body = body or Approval()
    view = requests.approve_request(ctx, actor, ref, permissions=body.permissions, name=body.name)
    return KeyRequestOut.of(view)


@router.post(
    "/requests/{ref}/reject", responses={409: {"description": "Already decided (conflict)"}}
)
def reject_key_request(
    ctx: ContextDep, actor: ActorDep, ref: str, body: Rejection
) -> KeyRequestOut:
    return KeyRequestOut.of(requests.reject_request(ctx, actor, ref, reason=body.reason))


@router.patch("/orgs/{slug}")
def set_api_access(ctx: ContextDep, actor: ActorDep, slug: str, body: OrgAccess) -> OrgOut:
    """Enable or disable API access for an organization (audited)."""
    org = tenancy.update_org(ctx, actor, slug, api_enabled=body.api_enabled)
    return OrgOut(slug=org.slug, name=org.name, kind=org.kind, api_enabled=org.api_enabled)
