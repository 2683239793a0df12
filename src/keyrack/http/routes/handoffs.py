"""One-time reveals: approved production keys (claims) and hand-off links to a vendor.

Claims and link creation need ``keys:manage`` in the key's organization. Opening a
link needs no key (a public route): the token is the capability, and it works once.
"""

from __future__ import annotations

from fastapi import Depends, Request, Response

from keyrack.domain.handoffs import HandoffPurpose, HandoffStatus
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.requests import (
    HandoffCreate,
    HandoffOpen,
    HandoffOut,
    LinkOut,
    RevealedOut,
)
from keyrack.routing import Router, client_ip, public
from keyrack.services import handoffs

router = Router(tags=["handoffs"])
managed = [Depends(require("keys:manage"))]


@router.get("/api/v2/handoffs", dependencies=managed)
def list_handoffs(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    purpose: HandoffPurpose | None = None,
    status: HandoffStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[HandoffOut]:
    """Claims waiting to be opened (``?purpose=claim&status=pending``) and links given out,
    for keys within this key's scope."""
    page = handoffs.list_handoffs(
        ctx, scope, purpose=purpose, status=status, limit=limit, cursor=cursor
    )
    link_header(request, response, page.next_cursor)
    return ListPage(data=[HandoffOut.of(v) for v in page.data], next_cursor=page.next_cursor)


@router.post("/api/v2/claims/{ref}/open", dependencies=managed)
def open_claim(ctx: ContextDep, scope: ScopeDep, actor: ActorDep, ref: str) -> RevealedOut:
    """Read, once, the secret of a production key issued on approval; then it is erased.

    Only a key that could have made that key opens it (403 otherwise). Like every API
    answer, it goes out with ``Cache-Control: no-store`` (the gateway)."""
    return RevealedOut.of(handoffs.open_claim(ctx, actor, scope, ref))


@router.post("/api/v2/keys/{ref}/handoff", status_code=201, dependencies=managed)
def create_handoff_link(
    ctx: ContextDep,
    scope: ScopeDep,
    actor: ActorDep,
    ref: str,
    body: HandoffCreate,
    request: Request,
) -> LinkOut:
    """Seal the secret you hold for key ``ref`` behind a one-time link for the vendor."""
    link = handoffs.create_link(ctx, actor, scope, ref, body.key)
    return LinkOut.of_link(link, str(request.base_url).rstrip("/") + link.path)


OPEN_LINK_PATH = "/api/v2/handoffs/open"


@router.post(OPEN_LINK_PATH, responses={404: {}, 410: {}})
@public
def open_handoff_link(ctx: ContextDep, body: HandoffOpen, request: Request) -> RevealedOut:
    """Read the handed-off secret, once; afterwards 410 gone, unknown tokens 404.

    The token travels in the body, not the URL, so that it stays out of access logs.
    People open the link page ``/handoff/{token}`` in the console instead.
    """
    return RevealedOut.of(handoffs.open_link(ctx, body.token, ip=client_ip(request)))
