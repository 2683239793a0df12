"""Bulk upload (``imports:create``): send a CSV or NDJSON file, follow its job, list its rows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from keyrack.domain import imports as rules
from keyrack.domain.exports import Format, Resource
from keyrack.domain.imports import Outcome
from keyrack.errors import InvalidInput
from keyrack.http.deps import ActorDep, ContextDep, ScopeDep, require
from keyrack.http.paging import Cursor, Limit, link_header
from keyrack.http.schemas.common import ListPage
from keyrack.http.schemas.exports import ImportOut, ImportRowOut
from keyrack.routing import Router
from keyrack.services import imports

router = Router(
    prefix="/api/v2/imports",
    tags=["imports"],
    dependencies=[Depends(require("imports:create"))],
)
PART_BYTES = 1024 * 1024
FILE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the file: CSV (Content-Type text/csv) or NDJSON "
        "(application/x-ndjson), or say ?format=",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
UPLOAD: dict[int | str, dict[str, Any]] = {413: {"description": "The file is over 1 GiB"}}


@router.post(
    "",
    status_code=202,
    openapi_extra=FILE_BODY,
    responses=UPLOAD,
    operation_id="createImport",
)
async def create_import(
    ctx: ContextDep,
    scope: ScopeDep,
    actor: ActorDep,
    request: Request,
    resource: Annotated[Resource, Query()],
    format: Annotated[Format | None, Query(description="default: from Content-Type")] = None,
) -> ImportOut:
    """Upload a file of records (streamed into the database); its job matches each row by
    ``id`` or external id to update, else creates."""
    fmt = format or rules.format_of(request.headers.get("content-type"))
    if fmt is None:
        raise InvalidInput("say the format: ?format=csv|ndjson, or Content-Type text/csv")
    import_id = await run_in_threadpool(
        imports.begin_upload, ctx, actor, scope, resource=resource, format=fmt
    )
    try:
        pending, seq = bytearray(), 0
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= PART_BYTES:
                await run_in_threadpool(imports.add_part, ctx, import_id, seq, bytes(pending))
                pending, seq = bytearray(), seq + 1
        if pending:
            await run_in_threadpool(imports.add_part, ctx, import_id, seq, bytes(pending))
        view = await run_in_threadpool(imports.finish_upload, ctx, actor, import_id)
    except BaseException:
        await run_in_threadpool(imports.abandon_upload, ctx, import_id)
        raise
    return ImportOut.model_validate(view)


@router.get("", operation_id="listImports")
def list_imports(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[ImportOut]:
    page = imports.list_imports(ctx, scope, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(
        data=[ImportOut.model_validate(v) for v in page.data], next_cursor=page.next_cursor
    )


@router.get("/{import_id}", operation_id="getImport")
def get_import(ctx: ContextDep, scope: ScopeDep, import_id: str) -> ImportOut:
    return ImportOut.model_validate(imports.get_import(ctx, scope, import_id))


@router.get("/{import_id}/rows", operation_id="listImportRows")
def list_import_rows(
    ctx: ContextDep,
    scope: ScopeDep,
    request: Request,
    response: Response,
    import_id: str,
    outcome: Outcome | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ListPage[ImportRowOut]:
    """Each row's outcome in line order; ``?outcome=failed`` for the rows that failed, with
    their line numbers and errors."""
    page = imports.list_rows(ctx, scope, import_id, outcome=outcome, limit=limit, cursor=cursor)
    link_header(request, response, page.next_cursor)
    return ListPage(
        data=[ImportRowOut.model_validate(v) for v in page.data], next_cursor=page.next_cursor
    )
