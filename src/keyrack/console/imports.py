"""Settings → Imports: upload a CSV or NDJSON file, the organization's imports with their
counts, and one import's failed rows (line and exact error).

Over the same services as ``/api/v2/imports``; a refused upload shows the form again with
the resource kept and says why.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, Path, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

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
from keyrack.domain import imports as rules
from keyrack.domain.exports import Format, Resource
from keyrack.domain.imports import Outcome
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput, PayloadTooLarge
from keyrack.routing import Router
from keyrack.services import imports
from keyrack.services.context import Context

PAGE = f"{PREFIX}/settings/imports"
router = Router(prefix=PAGE, route_class=ConsoleRoute, include_in_schema=False)
PAGE_SIZE = 50
PART_BYTES = 1024 * 1024
ImportRef = Annotated[str, Path(min_length=4, max_length=64, pattern=r"^imp_[0-9A-Za-z_-]+$")]
NOTICES = {"uploaded": "File uploaded: its import runs in a moment; reload to follow it."}
SUFFIXES = {".csv": Format.CSV, ".ndjson": Format.NDJSON, ".jsonl": Format.NDJSON}


def _list_page(
    ctx: Context,
    request: Request,
    org_id: int,
    *,
    cursor: str | None = None,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
    resource: str = Resource.CLIENTS.value,
) -> HTMLResponse:
    """``resource``: what the form held (kept when refused)."""
    return render(
        request,
        "imports.html",
        status_code=status,
        page=imports.list_imports(ctx, Scope(org_id), limit=PAGE_SIZE, cursor=cursor),
        resources=rules.RESOURCES,
        notice=notice,
        error=error,
        chosen=resource,
    )


def _format(file: UploadFile) -> Format:
    """From the file's name (``.csv``, ``.ndjson``, ``.jsonl``), else its Content-Type."""
    name = (file.filename or "").lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    named = rules.format_of(file.content_type)
    if named is None:
        raise InvalidInput("the file's name should end in .csv or .ndjson (or .jsonl)")
    return named


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
async def upload(
    ctx: CtxDep,
    request: Request,
    current: AdminDep,
    actor: ActorDep,
    resource: Annotated[str, Form(max_length=40)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """The file is copied into the database in parts, as the API does."""
    org_id = current.user.org_id
    assert org_id is not None
    try:
        if resource not in {r.value for r in rules.RESOURCES}:
            raise InvalidInput(f"no resource {resource!r} to upload")
        if file is None or not file.filename:
            raise InvalidInput("choose a file to upload")
        fmt = _format(file)
        import_id = await run_in_threadpool(
            imports.begin_upload,
            ctx,
            actor,
            Scope(org_id),
            resource=Resource(resource),
            format=fmt,
        )
        try:
            seq = 0
            while chunk := await file.read(PART_BYTES):
                await run_in_threadpool(imports.add_part, ctx, import_id, seq, chunk)
                seq += 1
            await run_in_threadpool(imports.finish_upload, ctx, actor, import_id)
        except BaseException:
            await run_in_threadpool(imports.abandon_upload, ctx, import_id)
            raise
    except (InvalidInput, PayloadTooLarge) as exc:
        code, detail = (413 if isinstance(exc, PayloadTooLarge) else 400), exc.detail
        return await run_in_threadpool(
            lambda: _list_page(ctx, request, org_id, status=code, error=detail, resource=resource)
        )
    return see_other(f"{PAGE}?notice=uploaded")


@router.get("/{import_ref}")
def failed_rows(
    ctx: CtxDep,
    request: Request,
    import_ref: ImportRef,
    current: AdminDep,
    cursor: str | None = None,
) -> HTMLResponse:
    """One import's counts and its failed rows, in line order, 50 a page."""
    assert current.user.org_id is not None
    scope = Scope(current.user.org_id)
    return render(
        request,
        "import.html",
        job=imports.get_import(ctx, scope, import_ref),
        rows=imports.list_rows(
            ctx, scope, import_ref, outcome=Outcome.FAILED, limit=PAGE_SIZE, cursor=cursor
        ),
    )
