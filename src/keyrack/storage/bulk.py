"""Many rows in one statement, without building an expression per row.

A write-behind flush sends a few hundred rows a statement; compiling those as
SQLAlchemy expressions (or binding each value as a parameter) costs tens of µs a
row of Python, and holds the GIL the event loop needs. Here the rows travel as
placeholders of plain values (``rows_sql``) or as one JSON parameter unpacked by
the database (``upsert_json_rows``), with datetimes in the form their
``UTCDateTime`` column stores (SQLite keeps naive UTC text). The statements go
through ``exec_driver_sql``: still seen by the engine's events, still under
``database_errors``. Table and column names come from the caller's constants,
never from input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection


def rows_sql(connection: Connection, rows: int, casts: Sequence[str]) -> str:
    """``(?, ?), (?, ?)…`` for ``rows`` rows of ``len(casts)`` columns, each placeholder
    cast to its column's type on PostgreSQL (``VALUES`` alone cannot tell)."""
    if connection.dialect.name == "postgresql":
        one = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    else:
        one = "(" + ", ".join("?" for _ in casts) + ")"
    return ", ".join([one] * rows)


def bind_time(connection: Connection, moment: datetime) -> datetime | str:
    """``moment`` as a ``UTCDateTime`` column stores it on this backend."""
    if connection.dialect.name == "postgresql":
        return moment
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def json_time(connection: Connection, moment: datetime) -> str:
    """``moment`` as text for a JSON row: ISO 8601 for PostgreSQL, stored form for SQLite."""
    if connection.dialect.name == "postgresql":
        return moment.astimezone(UTC).isoformat()
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


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
    if connection.dialect.name == "postgresql":
        picked = ", ".join(f"(e->>{i})::{kind}" for i, kind in enumerate(types))
        source, placeholder = "json_array_elements(%s::json) AS rows (e)", "%s"
    else:
        picked = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(types)))
        source, placeholder = "json_each(?)", "?"
    assert placeholder in source
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {picked} FROM {source} "  # noqa: S608
        f"WHERE true ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {update}",
        (json.dumps(rows, separators=(",", ":")),),
    )
