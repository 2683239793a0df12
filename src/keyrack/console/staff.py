"""Staff pages: organizations and their API-access switch; production-key requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import HTMLResponse

from keyrack.console.web import (
    PREFIX,
    ActorDep,
    ConsoleRoute,
    CsrfDep,
    CtxDep,
    StaffDep,
    render,
    see_other,
)
from keyrack.domain.permissions import PERMISSIONS
from keyrack.domain.requests import RequestStatus
from keyrack.errors import InvalidInput
from keyrack.routing import Router
from keyrack.services import requests, tenancy
from keyrack.services.context import Context

router = Router(prefix=f"{PREFIX}/staff", route_class=ConsoleRoute, include_in_schema=False)


@router.get("/orgs")
def orgs(ctx: CtxDep, request: Request, current: StaffDep) -> HTMLResponse:
    return render(request, "staff_orgs.html", orgs=tenancy.list_orgs(ctx))


@router.post("/orgs/{slug}/api-access", dependencies=[CsrfDep])
def api_access(
    ctx: CtxDep,
    slug: str,
    current: StaffDep,
    actor: ActorDep,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    tenancy.update_org(ctx, actor, slug, api_enabled=enabled)
    return see_other(f"{PREFIX}/staff/orgs")


@router.get("/requests")
def key_requests(
    ctx: CtxDep, request: Request, current: StaffDep, cursor: str | None = None
) -> HTMLResponse:
    """Pending production-key requests of every organization, oldest decisions last."""
    return _requests_page(ctx, request, cursor=cursor)


@dataclass(frozen=True, slots=True)
class RefusedRejection:
    """A rejection the service refused: shown on that request's form, as it was typed."""

    ref: str
    reason: str
    error: str


def _requests_page(
    ctx: Context,
    request: Request,
    *,
    cursor: str | None = None,
    refused: RefusedRejection | None = None,
) -> HTMLResponse:
    page = requests.list_requests(ctx, None, status=RequestStatus.PENDING, cursor=cursor)
    return render(
        request,
        "staff_requests.html",
        status_code=200 if refused is None else 400,
        page=page,
        decided=requests.list_requests(ctx, None, limit=20).data,
        permissions=PERMISSIONS,
        refused=refused,
    )


@router.post("/requests/{ref}/approve", dependencies=[CsrfDep])
def approve(
    ctx: CtxDep,
    ref: str,
    current: StaffDep,
    actor: ActorDep,
    permissions: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """An app request gets the app's sandbox permissions; free text gets those ticked here."""
    view = requests.get_request(ctx, ref)
    granted = None if view.app_ref else (permissions or [])
    requests.approve_request(ctx, actor, ref, permissions=granted)
    return see_other(f"{PREFIX}/staff/requests")


@router.post("/requests/{ref}/reject", dependencies=[CsrfDep])
def reject(
    ctx: CtxDep,
    request: Request,
    ref: str,
    current: StaffDep,
    actor: ActorDep,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        requests.reject_request(ctx, actor, ref, reason=reason)
    except InvalidInput as exc:
        return _requests_page(ctx, request, refused=RefusedRejection(ref, reason, exc.detail))
    return see_other(f"{PREFIX}/staff/requests")
