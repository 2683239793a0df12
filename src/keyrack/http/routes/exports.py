"""Bulk exports (``exports:create``): start, follow, cancel and download export jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.exports import ExportCreate, ExportOut
from keyrack.routing import Router
from keyrack.services import exports

router = Router(
    prefix="/api/v2/exports",
    tags=["exports"],
    dependencies=[Depends(require("exports:create"))],
)
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Another export of this resource and scope is under way"}
}
DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}, "application/x-ndjson": {}, "application/gzip": {}}},
    206: {"description": "The range asked for (Content-Range)"},
    409: {"description": "The export has no file: not finished, failed, canceled or expired"},
    416: {"description": "The range starts past the end of the file"},
}


@router.post("", status_code=202, responses=CONFLICT, operation_id="createExport")
def create_export(
    ctx: ContextDep, scope: ScopeDep, actor: ActorDep, body: ExportCreate
) -> ExportOut:
    """Queue an export; follow it with GET, then download its file."""
    view = exports.create_export(ctx, actor, scope, **body.model_dump())
    return ExportOut.model_validate(view)


@router.get("", operation_id="listExports")
def list_exports(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[ExportOut]:
    page = exports.list_exports(ctx, scope, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(
        data=[ExportOut.model_validate(v) for v in page.data], next_cursor=page.next_cursor
    )


@router.get("/{export_id}", operation_id="getExport")
def get_export(ctx: ContextDep, scope: ScopeDep, export_id: str) -> ExportOut:
    return ExportOut.model_validate(exports.get_export(ctx, scope, export_id))


@router.post("/{export_id}/cancel", responses=CONFLICT, operation_id="cancelExport")
def cancel_export(ctx: ContextDep, scope: ScopeDep, actor: ActorDep, export_id: str) -> ExportOut:
    return ExportOut.model_validate(exports.cancel_export(ctx, actor, scope, export_id))


@router.get(
    "/{export_id}/download",
    response_class=StreamingResponse,
    responses=DOWNLOAD,
    operation_id="downloadExport",
)
def download_export(
    ctx: ContextDep,
    scope: ScopeDep,
    export_id: str,
    range: Annotated[str | None, Header(max_length=200)] = None,
) -> StreamingResponse:
    """The file, streamed; resumable with ``Range: bytes=start-`` (206)."""
    file = exports.open_download(ctx, scope, export_id, range)
    headers = {
        "Content-Length": str(file.length),
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{file.file_name}"',
    }
    status = 200
    if file.range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {file.range.start}-{file.range.end}/{file.size}"
    return StreamingResponse(
        file.chunks, status_code=status, media_type=file.media_type, headers=headers
    )
