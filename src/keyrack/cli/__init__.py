"""The ``keyrack`` command: a thin Typer adapter over the services.

Exit codes: 0 success, 1 refused operation, 2 bad usage (``KeyrackError.exit_code``).
"""

from __future__ import annotations

import typer

from keyrack.cli import exports, imports, integrations, jobs, keys, queue, requests, server, tenancy
from keyrack.cli.common import errors
from keyrack.errors import KeyrackError

app = typer.Typer(
    name="keyrack",
    help="Keyrack: API keys for your CRM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(server.migrate)
app.command()(server.serve)
app.add_typer(tenancy.orgs, name="orgs")
app.add_typer(tenancy.locations, name="locations")
app.add_typer(tenancy.users, name="users")
app.add_typer(keys.app, name="keys")
app.command()(jobs.sweep)
app.command()(jobs.worker)
app.add_typer(jobs.outbox, name="outbox")
app.add_typer(requests.app, name="requests")
app.add_typer(requests.apps_app, name="apps")
app.add_typer(queue.app, name="jobs")
app.add_typer(integrations.app, name="integrations")
app.command("diagnose")(integrations.diagnose)
app.command()(exports.export)
app.command(name="import")(imports.import_file)


def main() -> None:
    try:
        app()
    except KeyrackError as exc:
        errors.print(f"error ({exc.code}): {exc.for_operator}", markup=False)
        raise SystemExit(exc.exit_code) from None
