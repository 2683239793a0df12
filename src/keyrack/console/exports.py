"""Settings → Exports: the organization's exports, start one, cancel, download its file.

Over the same services as ``/api/v2/exports``; a refused start (bad input, or the 409
while another export of that resource runs, with its id) shows the form again as typed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Form, Path, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

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
from keyrack.domain.exports import UNDER_WAY, Format, Resource, Status
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput
from keyrack.routing import Router
from keyrack.services import exports
from keyrack.services.context import Context

PAGE = f"{PREFIX}/settings/exports"
router = Router(prefix=PAGE, route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
ExportRef = Annotated[str, Path(min_length=4, max_length=64, pattern=r"^exp_[0-9A-Za-z_-]+$")]
NOTICES = {
    "started": "Export queued: it runs in a moment; reload this page to follow it.",
    "canceled": "Export canceled: its job stops and what it wrote is dropped.",
}
FRESH: dict[str, object] = {"resource": "clients", "format": "csv", "gzip": False}


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
) -> HTMLResponse:
    """``typed``: what the form held when it was refused."""
    return render(
        request,
        "exports.html",
        status_code=status,
        page=exports.list_exports(ctx, Scope(org_id), limit=PAGE_SIZE, cursor=cursor),
        resources=list(Resource),
        formats=list(Format),
        under_way=UNDER_WAY,
        succeeded=Status.SUCCEEDED,
        notice=notice,
        error=error,
        typed=typed or FRESH,
    )


def _since(typed: str) -> datetime | None:
    if not typed.strip():
        return None
    try:
        return datetime.fromisoformat(typed.strip())
    except ValueError:
        raise InvalidInput(
            f"updated_since {typed!r} is not an ISO-8601 time (e.g. 2026-03-01T00:00:00Z)"
        ) from None


@router.get("")
def listing(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    cursor: str | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    """Newest first, 50 a page."""
    assert current.user.org_id is not None
    return _list_page(
        ctx, request, current.user.org_id, cursor=cursor, notice=NOTICES.get(notice or "")
    )


@router.post("", dependencies=[CsrfDep])
def start(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    resource: Annotated[str, Form(max_length=40)] = "",
    format: Annotated[str, Form(max_length=20)] = "csv",
    gzip: Annotated[bool, Form()] = False,
    updated_since: Annotated[str, Form(max_length=60)] = "",
) -> Response:
    org_id = current.user.org_id
    assert org_id is not None
    typed: dict[str, object] = {
        "resource": resource,
        "format": format,
        "gzip": gzip,
        "updated_since": updated_since,
    }
    try:
        if resource not in set(Resource):
            raise InvalidInput(f"no resource {resource!r} to export")
        if format not in set(Format):
            raise InvalidInput(f"no export format {format!r}: csv or ndjson")
        exports.create_export(
            ctx,
            actor,
            Scope(org_id),
            resource=Resource(resource),
            format=Format(format),
            gzip=gzip,
            updated_since=_since(updated_since),
        )
    except InvalidInput as exc:
        return _list_page(ctx, request, org_id, status=400, error=exc.detail, typed=typed)
    except Conflict as exc:
        return _list_page(ctx, request, org_id, status=409, error=exc.detail, typed=typed)
    return see_other(f"{PAGE}?notice=started")


@router.post("/{export_ref}/cancel", dependencies=[CsrfDep])
def cancel(ctx: CtxDep, export_ref: ExportRef, current: AdminDep, actor: ActorDep) -> Response:
    assert current.user.org_id is not None
    exports.cancel_export(ctx, actor, Scope(current.user.org_id), export_ref)
    return see_other(f"{PAGE}?notice=canceled")


@router.get("/{export_ref}/download", response_class=StreamingResponse)
def download(ctx: CtxDep, export_ref: ExportRef, current: AdminDep) -> StreamingResponse:
    """The stored file, streamed as an attachment."""
    assert current.user.org_id is not None
    file = exports.open_download(ctx, Scope(current.user.org_id), export_ref, None)
    headers = {
        "Content-Length": str(file.length),
        "Content-Disposition": f'attachment; filename="{file.file_name}"',
    }
    return StreamingResponse(file.chunks, media_type=file.media_type, headers=headers)
