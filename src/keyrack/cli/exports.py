"""``keyrack export``: a bulk export of one resource, run here with a progress bar."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keyrack.cli.common import OPERATOR, JsonOption, context, emit_json, errors
from keyrack.domain import exports as rules
from keyrack.domain.exports import UNDER_WAY, Format, Resource, Status
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict
from keyrack.services import exports, tenancy


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            "use an ISO-8601 time, e.g. the last export's next_updated_since", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export(
    resource: Resource = typer.Argument(..., help="What to export."),
    org: str = typer.Option(..., help="Organization slug."),
    location: str | None = typer.Option(None, help="Location slug: export only its records."),
    format: Format = typer.Option(Format.CSV, "--format", help="csv or ndjson."),
    gzip: bool = typer.Option(False, "--gzip", help="Compress the file with gzip."),
    since: str | None = typer.Option(
        None, "--since", help="Only rows changed at or after this (a next_updated_since)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="File to write (default: the export's file name)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Export clients, contacts, contracts, engagements, pulse or usage into a file.

    Runs the export here, with a progress bar, unless a worker takes it first; prints the
    next_updated_since to pass as --since for the next incremental export.
    """
    ctx = context()
    organization = tenancy.get_org(ctx, org)
    location_id = None
    if location is not None:
        with ctx.db.session() as session:
            location_id = tenancy.location_by_slug(session, organization.id, location).id
    scope = Scope(organization.id, location_id)
    view = exports.create_export(
        ctx,
        OPERATOR,
        scope,
        resource=resource,
        format=format,
        gzip=gzip,
        updated_since=_since(since),
    )
    runner = threading.Thread(target=exports.run_waiting, args=(ctx,), daemon=True)
    runner.start()
    columns = (
        TextColumn(f"{resource.value} {view.ref}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, transient=as_json) as bar:
        task = bar.add_task("export", total=None)
        while True:
            view = exports.get_export(ctx, scope, view.ref)
            bar.update(task, total=view.rows_total, completed=view.rows_done)
            if view.status not in UNDER_WAY:
                break
            time.sleep(0.2)
    runner.join()
    if view.status is not Status.SUCCEEDED:
        raise Conflict(f"export {view.ref} {view.status.value}: {view.error or 'no file'}")
    target = output or Path(rules.file_name(view.ref, resource, format, gzip))
    with target.open("wb") as sink:
        for chunk in exports.open_download(ctx, scope, view.ref, None).chunks:
            sink.write(chunk)
    summary = {
        "id": view.ref,
        "rows": view.rows_done,
        "bytes": view.bytes,
        "file": str(target),
        "next_updated_since": view.next_updated_since,
    }
    if as_json:
        emit_json(summary)
    else:
        watermark = view.next_updated_since.isoformat() if view.next_updated_since else "-"
        sys.stdout.write(
            f"{view.rows_done} rows, {view.bytes} bytes -> {target}\nnext: --since {watermark}\n"
        )
