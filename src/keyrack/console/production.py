"""Production keys: request one for an app, reveal an approved one, hand a key off once."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Form, Request, Response
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
from keyrack.domain.handoffs import HandoffPurpose, HandoffStatus
from keyrack.domain.tenancy import Scope
from keyrack.errors import AccessDenied, InvalidInput
from keyrack.routing import Router, client_ip
from keyrack.services import apps, handoffs, requests, sessions

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
HANDOFF_COOKIE = "keyrack_handoff_csrf"


@router.get("/settings/api/production")
def production(
    ctx: CtxDep, request: Request, current: AdminDep, notice: str | None = None
) -> HTMLResponse:
    """Requests for production keys, approved keys waiting to be revealed, and the catalog."""
    org_id = current.user.org_id
    assert org_id is not None
    return render(
        request,
        "production.html",
        requests=requests.list_requests(ctx, Scope(org_id)).data,
        claims=handoffs.list_handoffs(
            ctx, Scope(org_id), purpose=HandoffPurpose.CLAIM, status=HandoffStatus.PENDING
        ).data,
        catalog=apps.list_apps(ctx, limit=200).data,
        notice="Request sent: platform staff will review it." if notice == "requested" else None,
    )


@router.post("/settings/api/production", dependencies=[CsrfDep])
def request_key(
    ctx: CtxDep,
    current: AdminDep,
    actor: ActorDep,
    app: Annotated[str, Form(max_length=40)] = "",
    message: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    assert current.user.org_id is not None
    requests.create_request(
        ctx, actor, org_id=current.user.org_id, app_ref=app or None, message=message or None
    )
    return see_other(f"{PREFIX}/settings/api/production?notice=requested")


@router.post("/settings/api/claims/{ref}", dependencies=[CsrfDep])
def open_claim(ctx: CtxDep, ref: str, current: AdminDep, actor: ActorDep) -> Response:
    """Open an approved key's one-time claim into this session's reveal window."""
    assert current.user.org_id is not None
    revealed = handoffs.open_claim(ctx, actor, Scope(current.user.org_id), ref)
    sessions.keep_for_reveal(ctx, current, revealed.key.ref, revealed.secret)
    return see_other(f"{PREFIX}/settings/api/keys/{revealed.key.ref}?notice=claimed")


@router.post("/settings/api/keys/{ref}/handoff", dependencies=[CsrfDep])
def create_link(
    ctx: CtxDep, request: Request, ref: str, current: AdminDep, actor: ActorDep
) -> HTMLResponse:
    """Seal the secret this session still holds behind a one-time link; show the link once."""
    assert current.user.org_id is not None
    secret = sessions.held_secret(ctx, current, ref)
    if secret is None:
        raise InvalidInput(
            "the reveal window for this key has ended; regenerate it to hand off a new secret"
        )
    link = handoffs.create_link(ctx, actor, Scope(current.user.org_id), ref, secret)
    url = str(request.base_url).rstrip("/") + f"{PREFIX}/handoff/{link.token}"
    return render(request, "handoff_created.html", status_code=201, link=link, url=url)


@router.get("/handoff/{token}")
def handoff_page(request: Request, token: str) -> HTMLResponse:
    """A confirmation page: opening happens on POST, so link previewers cannot burn it."""
    guard = request.cookies.get(HANDOFF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "handoff.html", guard=guard, token=token, revealed=None)
    response.set_cookie(
        HANDOFF_COOKIE,
        guard,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=f"{PREFIX}/handoff",
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/handoff/{token}")
def open_handoff(
    ctx: CtxDep,
    request: Request,
    token: str,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> HTMLResponse:
    expected = request.cookies.get(HANDOFF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise AccessDenied("this form has expired or did not come from this site; reload the page")
    revealed = handoffs.open_link(ctx, token, ip=client_ip(request))
    response = render(request, "handoff.html", guard=expected, token=token, revealed=revealed)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
