"""Cursor pagination: over an integer primary key, newest first (``paginate``); or over
``(updated_at, id)``, oldest change first, from a watermark (``paginate_changes``).

A cursor encodes the position in its own order (``v1:<id>``, ``w1:<updated_at>:<id>``), so
a cursor of one order is refused by the other.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from keyrack.errors import InvalidInput
from keyrack.storage.tables.base import from_epoch_us, to_epoch_us

T = TypeVar("T")
U = TypeVar("U")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: list[T]
    next_cursor: str | None

    def map(self, fn: Callable[[T], U]) -> Page[U]:
        return Page([fn(item) for item in self.data], self.next_cursor)


def _encode(version: str, *values: int) -> str:
    raw = ":".join([version, *map(str, values)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, version: str, count: int) -> list[int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, *values = raw.split(":")
        if found != version or len(values) != count:
            raise ValueError(found)
        return [int(value) for value in values]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned (for this order)") from None


def encode_cursor(last_id: int) -> str:
    return _encode("v1", last_id)


def decode_cursor(cursor: str) -> int:
    (last_id,) = _decode(cursor, "v1", 1)
    return last_id


def encode_watermark(updated_at: datetime, last_id: int) -> str:
    return _encode("w1", to_epoch_us(updated_at), last_id)


def decode_watermark(cursor: str) -> tuple[datetime, int]:
    micros, last_id = _decode(cursor, "w1", 2)
    try:
        return from_epoch_us(micros), last_id
    except OverflowError:
        raise InvalidInput("cursor is not one this API returned (for this order)") from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def paginate(
    session: Session,
    stmt: Select[Any],
    id_column: InstrumentedAttribute[int],
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Any]:
    """Run ``stmt`` (selecting one entity) newest first, one page at a time."""
    check_limit(limit)
    if cursor:
        stmt = stmt.where(id_column < decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(getattr(rows[-1], id_column.key)) if more else None)


def paginate_changes(
    session: Session,
    stmt: Select[Any],
    updated_column: InstrumentedAttribute[datetime],
    id_column: InstrumentedAttribute[int],
    *,
    since: datetime,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Any]:
    """Run ``stmt`` (selecting one entity) over rows with ``updated_column >= since``, in
    ``(updated_column, id)`` order, one page at a time.

    The cursor is the last row's ``(updated_at, id)``: the next page starts strictly after
    it, whatever changed in between. A row changed since it was read moves behind the
    cursor, to be read again with its new ``updated_at``, if its stamp sorts after every
    stamp already read (``keyrack.services.crm.records`` stamps so).
    """
    check_limit(limit)
    stmt = stmt.where(updated_column >= since)
    if cursor:
        at, last_id = decode_watermark(cursor)
        stmt = stmt.where(or_(updated_column > at, and_(updated_column == at, id_column > last_id)))
    rows = list(session.scalars(stmt.order_by(updated_column, id_column).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    if not more:
        return Page(rows, None)
    last = rows[-1]
    return Page(
        rows, encode_watermark(getattr(last, updated_column.key), getattr(last, id_column.key))
    )
