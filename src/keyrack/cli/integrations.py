"""``keyrack integrations list|show|run|test-record`` and ``keyrack diagnose``.

Exit codes as elsewhere (0 success, 1 refused, 2 bad usage), and for programs: a run
that ends ``partial`` or ``failed``, a test whose record fails, a diagnosis with a check
whose verdict is ``problem`` exit 1.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from keyrack.cli.common import OPERATOR, JsonOption, console, context, emit_json, emit_table
from keyrack.domain.tenancy import Scope
from keyrack.errors import NotFound
from keyrack.services import jobs, tenancy
from keyrack.services.integrations import connections, diagnosis, runs, syncs
from keyrack.services.integrations.runs import ENDED, RunView
from keyrack.storage.tables.integrations import Integration, IntegrationSync

app = typer.Typer(help="Integrations: connections, their syncs and runs.", no_args_is_help=True)

RecordTypeOption = typer.Option(
    None, "--record-type", help="clients, contacts, contracts or engagements."
)
DirectionOption = typer.Option(None, "--direction", help="inbound or outbound.")


def _scope_of(ref: str) -> Scope:
    """The operator acts on any connection: the organization that owns ``ref``."""
    with context().db.session() as session:
        org_id = session.query(Integration.org_id).filter(Integration.ref == ref).scalar()
    if org_id is None:
        raise NotFound(f"no integration {ref!r}")
    return Scope(org_id)


def _connection(view: connections.ConnectionView) -> dict[str, Any]:
    return {
        "id": view.id,
        "provider": view.provider,
        "name": view.name,
        "base_url": view.base_url,
        "status": view.status,
        "status_reason": view.status_reason,
        "last_success_at": view.last_success_at,
        "last_error": (
            {"at": view.last_error_at, "message": view.last_error_message}
            if view.last_error_at
            else None
        ),
        "connected_by": view.connected_by,
        "created_at": view.created_at,
    }


def _run(view: RunView) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "trigger": view.trigger,
        "counts": view.counts,
        "api_calls": view.api_calls,
        "rate_limit_wait_seconds": view.rate_limit_wait_seconds,
        "error": view.error,
        "created_at": view.created_at,
        "finished_at": view.finished_at,
    }


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "never"


@app.command("list")
def list_integrations(
    org: str = typer.Option(..., help="Organization slug."),
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """An organization's connections with their status and last success."""
    ctx = context()
    organization = tenancy.get_org(ctx, org)
    page = connections.list_connections(ctx, Scope(organization.id), limit=limit, cursor=cursor)
    if as_json:
        emit_json({"data": [_connection(v) for v in page.data], "next_cursor": page.next_cursor})
        return
    emit_table(
        f"Integrations of {org}",
        ["id", "name", "provider", "status", "last success", "last error"],
        [
            (
                v.id,
                v.name,
                v.provider,
                v.status if v.status == "active" else f"{v.status} ({v.status_reason})",
                _when(v.last_success_at),
                (v.last_error_message or "")[:80],
            )
            for v in page.data
        ],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("show")
def show(integration: str, as_json: bool = JsonOption) -> None:
    """One connection: its status, its syncs and its last runs."""
    ctx = context()
    scope = _scope_of(integration)
    view = connections.get(ctx, scope, integration)
    with ctx.db.session() as session:
        rows = [
            (s.record_type, s.direction)
            for s in session.query(IntegrationSync)
            .join(Integration, Integration.id == IntegrationSync.integration_id)
            .filter(Integration.ref == integration)
            .order_by(IntegrationSync.record_type, IntegrationSync.direction)
        ]
    found = [syncs.get_sync(ctx, scope, integration, rt, way) for rt, way in rows]
    recent = runs.list_runs(ctx, scope, integration, limit=10).data
    if as_json:
        emit_json(
            {
                **_connection(view),
                "syncs": [
                    {**s.settings(), "record_type": s.record_type, "direction": s.direction}
                    for s in found
                ],
                "runs": [_run(r) for r in recent],
            }
        )
        return
    console.print(f"[bold]{view.name}[/bold] ({view.provider}) {view.id}", highlight=False)
    console.print(f"status: {view.status} ({view.status_reason})", markup=False)
    console.print(f"last success: {_when(view.last_success_at)}", markup=False)
    if view.last_error_message:
        console.print(f"last error: {view.last_error_message}", markup=False, highlight=False)
    emit_table(
        "Syncs",
        ["record type", "direction", "enabled", "filters", "schedule"],
        [
            (
                s.record_type,
                s.direction,
                "yes" if s.enabled else "no",
                len(s.filters),
                f"{s.schedule_seconds}s" if s.schedule_seconds else "manual",
            )
            for s in found
        ],
    )
    emit_table(
        "Runs",
        ["id", "status", "synced", "skipped", "failed", "finished"],
        [(r.id, r.status, *_totals(r), _when(r.finished_at)) for r in recent],
    )


def _totals(view: RunView) -> tuple[int, int, int]:
    tally = [0, 0, 0]
    for ways in view.counts.values():
        for counts in ways.values():
            for index, name in enumerate(("synced", "skipped", "failed")):
                tally[index] += int(counts.get(name, 0))
    return tally[0], tally[1], tally[2]


@app.command("run")
def run(
    integration: str,
    work: bool = typer.Option(
        False, "--work", help="Do the run in this process (when no worker is running)."
    ),
    timeout: float = typer.Option(3600.0, min=1, help="Stop waiting after this many seconds."),
    as_json: bool = JsonOption,
) -> None:
    """Start a run and follow it with a progress bar to its end."""
    ctx = context()
    scope = _scope_of(integration)
    queued = runs.request_run(ctx, OPERATOR, scope, integration)
    worker = threading.Thread(target=jobs.worker(ctx).drain, daemon=True) if work else None
    if worker is not None:
        worker.start()
    deadline = time.monotonic() + timeout
    view = queued
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
        disable=as_json,
    ) as progress:
        task = progress.add_task(f"run {queued.id}", total=None, counts="queued")
        while True:
            view = runs.get_run(ctx, scope, integration, queued.id)
            synced, skipped, failed = _totals(view)
            progress.update(
                task,
                counts=f"{view.status}: {synced} synced, {skipped} skipped, {failed} failed",
            )
            if view.status in ENDED or time.monotonic() > deadline:
                if view.status in ENDED:
                    progress.update(task, total=1, completed=1)
                break
            time.sleep(0.2)
    if worker is not None:
        worker.join(timeout=5)
    if as_json:
        emit_json(_run(view))
    else:
        console.print(f"run {view.id}: {view.status}", markup=False)
        if view.error:
            console.print(f"error: {view.error}", markup=False, highlight=False)
    if view.status != "succeeded":
        raise typer.Exit(1)


@app.command("test-record")
def test_record(
    integration: str,
    record_id: str = typer.Argument(..., help="Outbound: the Keyrack id; inbound: the provider's."),
    record_type: str = typer.Option(..., "--record-type", help="clients or contacts."),
    direction: str = typer.Option(..., "--direction", help="inbound or outbound."),
    write: bool = typer.Option(False, "--write", help="Really write it (default: a dry run)."),
    as_json: bool = JsonOption,
) -> None:
    """Run the pipeline for one record and print every step; a dry run unless --write."""
    view = diagnosis.test_record(
        context(),
        OPERATOR,
        _scope_of(integration),
        integration,
        record_type=record_type,
        direction=direction,
        record_id=record_id,
        dry_run=not write,
    )
    if as_json:
        emit_json(view.as_dict())
    else:
        emit_table(
            f"{view.record_type} {view.direction} {view.record_id}: {view.outcome}"
            + (" (dry run)" if view.dry_run else ""),
            ["step", "outcome", "detail"],
            [(s.name, s.outcome, s.detail) for s in view.steps],
        )
    if view.outcome == "failed":
        raise typer.Exit(1)


def diagnose(
    integration: str,
    record_type: str | None = RecordTypeOption,
    direction: str | None = DirectionOption,
    out: Path | None = typer.Option(
        None, "--out", help="Write the support bundle there (.md: Markdown, else JSON)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Walk the four checks (credentials, direction and filters, recent changes, one
    record) and write the support bundle; exit 1 when a check finds a problem."""
    view = diagnosis.diagnose(
        context(),
        OPERATOR,
        _scope_of(integration),
        integration,
        record_type=record_type,
        direction=direction,
    )
    if out is not None:
        text = (
            view.markdown
            if out.suffix.lower() in (".md", ".markdown")
            else json.dumps(view.bundle, indent=2) + "\n"
        )
        out.write_text(text)
    if as_json:
        emit_json(view.as_dict())
    else:
        emit_table(
            f"Diagnosis of {integration}",
            ["#", "check", "verdict", "summary"],
            [(index, c.name, c.verdict, c.summary) for index, c in enumerate(view.checks, start=1)],
        )
        if out is not None:
            console.print(f"support bundle written to {out}", markup=False)
    if any(c.verdict == "problem" for c in view.checks):
        raise typer.Exit(1)
