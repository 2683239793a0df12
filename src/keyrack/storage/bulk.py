"""Many rows in one statement, without building an expression per row.

A write-behind flush sends a few hundred rows a statement; compiling those as
SQLAlchemy expressions (or binding each value as a parameter) costs tens of µs a
row of Python, and holds the GIL the event loop needs. Here the rows travel as one
JSON parameter unpacked by the database (``json_rows``), with datetimes in the form
their ``UTCDateTime`` column stores (SQLite keeps naive UTC text). The statements go
through ``exec_driver_sql``: still seen by the engine's events, still under
``database_errors``. Table and column names come from the caller's constants,
never from input.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection


def json_times(connection: Connection) -> Callable[[datetime], str]:
    """A function giving a moment's text for a JSON row: ISO 8601 for PostgreSQL, the
    stored form for SQLite. It remembers what it gave: a flush's rows share a handful of
    seconds and minutes, and formatting each row's afresh was a third of a flush's
    Python time at 20,000 keys."""
    form = _iso_text if connection.dialect.name == "postgresql" else _sqlite_text
    texts: dict[datetime, str] = {}

    def text(moment: datetime) -> str:
        found = texts.get(moment)
        if found is None:
            found = texts[moment] = form(moment)
        return found

    return text


def _iso_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _sqlite_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def json_rows(connection: Connection, columns: Sequence[str], types: Sequence[str]) -> str:
    """``SELECT <columns> FROM …``: the rows of one JSON parameter (a list of lists, from
    ``json_param``), typed on PostgreSQL. The SQL is the same however many rows there are,
    so the driver converts it once, not once a flush."""
    if connection.dialect.name == "postgresql":
        picked = ", ".join(
            f"(e->>{i})::{kind} AS {name}"
            for i, (name, kind) in enumerate(zip(columns, types, strict=True))
        )
        return f"SELECT {picked} FROM json_array_elements(%s::json) AS rows (e)"  # noqa: S608
    picked = ", ".join(f"json_extract(value, '$[{i}]') AS {name}" for i, name in enumerate(columns))
    return f"SELECT {picked} FROM json_each(?)"  # noqa: S608


def json_param(rows: Sequence[Sequence[object]]) -> tuple[str]:
    """The parameters of a statement over ``json_rows``."""
    return (json.dumps(rows, separators=(",", ":")),)


def upsert_json_rows(
    connection: Connection,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    conflict: Sequence[str],
    update: str,
    rows: Sequence[Sequence[object]],
) -> None:
    """``INSERT INTO table (columns) SELECT … FROM <rows as JSON> ON CONFLICT (conflict)
    DO UPDATE SET update``: one statement, one parameter."""
    if not rows:
        return
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(columns)}) {json_rows(connection, columns, types)} "
        f"WHERE true ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {update}",
        json_param(rows),
    )
