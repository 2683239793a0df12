"""What every command shares: the service context, output as tables or JSON, errors."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from keyrack.cache.relay import RedisPublisher
from keyrack.config import Settings
from keyrack.services.context import Actor, Context

console = Console()
errors = Console(stderr=True)

OPERATOR = Actor(label="cli", is_staff=True)
"""Whoever runs the CLI on the server operates the deployment."""

JsonOption = typer.Option(False, "--json", help="Print JSON for programs instead of a table.")


@cache
def context() -> Context:
    """The CLI's context; with Redis configured, its key changes reach every server at once."""
    ctx = Context.from_settings(Settings())
    if ctx.settings.redis_url:
        ctx.bus.subscribe(RedisPublisher(ctx.settings.redis_url))
    return ctx


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str, indent=2) + "\n")


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise typer.BadParameter("use a number and a unit: 90s, 15m, 12h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
