"""``keyrack import``: upload a file of records and apply it here, with a progress bar."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from keyrack.cli.common import OPERATOR, JsonOption, context, emit_json, errors
from keyrack.domain.exports import Format, Resource
from keyrack.domain.imports import UNDER_WAY, Outcome, Status
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput
from keyrack.services import imports, tenancy

PART_BYTES = 1024 * 1024


def import_file(
    resource: Resource = typer.Argument(
        ..., help="What the file holds (clients, contacts, contracts or engagements)."
    ),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or NDJSON file."),
    org: str = typer.Option(..., help="Organization slug."),
    location: str | None = typer.Option(None, help="Location slug: records land there."),
    format: Format | None = typer.Option(
        None, "--format", help="csv or ndjson (default: from the file name)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Upload a file of records: each row updates the record with its id or external id,
    else creates one. Prints the counts and every failed row with its line and error."""
    fmt = format or (Format.NDJSON if file.suffix.lower() in (".ndjson", ".jsonl") else None)
    fmt = fmt or (Format.CSV if file.suffix.lower() == ".csv" else None)
    if fmt is None:
        raise InvalidInput("say --format csv or ndjson (the file name does not)")
    ctx = context()
    organization = tenancy.get_org(ctx, org)
    location_id = None
    if location is not None:
        with ctx.db.session() as session:
            location_id = tenancy.location_by_slug(session, organization.id, location).id
    scope = Scope(organization.id, location_id)
    import_id = imports.begin_upload(ctx, OPERATOR, scope, resource=resource, format=fmt)
    try:
        with file.open("rb") as source:
            for seq, part in enumerate(iter(lambda: source.read(PART_BYTES), b"")):
                imports.add_part(ctx, import_id, seq, part)
        view = imports.finish_upload(ctx, OPERATOR, import_id)
    except BaseException:
        imports.abandon_upload(ctx, import_id)
        raise
    runner = threading.Thread(target=imports.run_waiting, args=(ctx,), daemon=True)
    runner.start()
    columns = (TextColumn(f"{resource.value} {view.ref}"), BarColumn(), TimeElapsedColumn())
    with Progress(
        *columns, TextColumn("{task.completed} rows"), console=errors, transient=as_json
    ) as bar:
        task = bar.add_task("import", total=None)
        while True:
            view = imports.get_import(ctx, scope, view.ref)
            bar.update(task, completed=view.rows_done)
            if view.status not in UNDER_WAY:
                break
            time.sleep(0.2)
    runner.join()
    if view.status is not Status.SUCCEEDED:
        raise Conflict(f"import {view.ref} {view.status.value}: {view.error or 'stopped'}")
    failed = []
    cursor: str | None = None
    while True:
        page = imports.list_rows(
            ctx, scope, view.ref, outcome=Outcome.FAILED, limit=500, cursor=cursor
        )
        failed.extend(page.data)
        cursor = page.next_cursor
        if cursor is None:
            break
    counts = {
        "id": view.ref,
        "rows": view.rows_done,
        "created": view.created,
        "updated": view.updated,
        "unchanged": view.unchanged,
        "failed": view.failed,
    }
    if as_json:
        emit_json({**counts, "failed_rows": [{"line": r.line, "error": r.error} for r in failed]})
        return
    sys.stdout.write(
        f"{view.rows_done} rows: {view.created} created, {view.updated} updated, "
        f"{view.unchanged} unchanged, {view.failed} failed\n"
    )
    for row in failed:
        sys.stdout.write(f"line {row.line}: {row.error}\n")
