"""Cursor pagination: one ``Page`` per request, and a generator over every item."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items and the cursor of the next page (``None`` at the end)."""

    data: list[T]
    next_cursor: str | None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Page[Any]:
        return Page(data=list(body["data"]), next_cursor=body.get("next_cursor") or None)


def iterate(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Yield every item, fetching the next page only when the previous one is used up."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.data
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
