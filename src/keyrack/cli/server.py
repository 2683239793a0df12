"""``keyrack migrate`` and ``keyrack serve``."""

from __future__ import annotations

import os

import typer
import uvicorn
from rich.markup import escape

from keyrack.cli.common import console, context
from keyrack.config import Settings
from keyrack.http.protocol import uvicorn_options
from keyrack.services import tenancy
from keyrack.services.context import Context
from keyrack.storage.migrate import upgrade


def migrate() -> None:
    """Apply database migrations."""
    upgrade(context().settings.database_url)
    console.print("database is up to date")


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="Server processes."),
    no_worker: bool = typer.Option(
        False,
        "--no-worker",
        help="Run no job worker in the server (separate `keyrack worker` processes do).",
    ),
) -> None:
    """Serve the API and console, and run the job queue in each server process unless
    --no-worker. On an empty database, create the first owner."""
    if no_worker:  # read by every server process uvicorn starts
        os.environ["KEYRACK_IN_PROCESS_WORKER"] = "false"
    # not the CLI's context(): the app below announces its own jobs and key changes
    ctx = Context.from_settings(Settings())
    if not ctx.db.is_migrated():
        upgrade(ctx.settings.database_url)
    first = tenancy.bootstrap(ctx)
    if first is not None:
        console.print(
            "[bold]First run.[/bold] Sign in at "
            f"http://{host}:{port}/console as [bold]{first.email}[/bold] "
            "with this password, which you change then (shown once): "
            f"[bold]{escape(first.password)}[/bold]"
        )
    ctx.db.dispose()
    uvicorn.run(
        "keyrack.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **uvicorn_options(ctx.settings),
    )
