"""Staff pages: organizations and their API-access switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
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
from keyrack.services import tenancy

router = APIRouter(prefix=f"{PREFIX}/staff", route_class=ConsoleRoute, include_in_schema=False)


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
