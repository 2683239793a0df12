"""What every command shares: the service context, output as tables or JSON, errors."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from keyrack.cache.relay import RedisPublisher
from keyrack.config import Settings
from keyrack.jobs import wakeup
from keyrack.services.context import Actor, Context

console = Console(soft_wrap=True)
"""Lines are never wrapped: a password, secret or ref stays whole, to be copied."""
errors = Console(stderr=True, soft_wrap=True)
_UNBOUNDED = 100_000

OPERATOR = Actor(label="cli", is_staff=True)
"""Whoever runs the CLI on the server operates the deployment."""

JsonOption = typer.Option(False, "--json", help="Print JSON for programs instead of a table.")


@cache
def context() -> Context:
    """The CLI's context; with Redis configured, its key changes reach every server at once,
    and the jobs it enqueues (a revoked key's webhooks) wake every worker at once."""
    ctx = Context.from_settings(Settings())
    if ctx.settings.redis_url:
        ctx.bus.subscribe(RedisPublisher(ctx.settings.redis_url))
        wakeup.add_publisher(ctx.db.engine.url, wakeup.RedisPublisher(ctx.settings.redis_url))
    return ctx


def _json_value(value: Any) -> str:
    """Times in ISO 8601, as the API writes them; anything else as its string."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=_json_value, indent=2) + "\n")


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table whose first column (the ref or id the next command takes) is never cut short;
    written to a file or a pipe, as wide as its content (a terminal's width is not there)."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    table = Table(title=title)
    for index, column in enumerate(columns):
        if index == 0:
            widest = max((len(row[0]) for row in cells), default=0)
            table.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:
            table.add_column(column)
    for row in cells:
        table.add_row(*row)
    if console.is_terminal:
        console.print(table)
        return
    options = console.options.update(max_width=_UNBOUNDED)
    width, console.width = console.width, Measurement.get(console, options, table).maximum
    try:
        console.print(table)
    finally:
        console.width = width


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise typer.BadParameter("use a number and a unit: 90s, 15m, 12h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
