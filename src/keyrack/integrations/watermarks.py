"""Watermarks: opaque strings to the engine, positions in a provider's change order here.

A record type's watermark holds one position per provider object it reads
(``companies=1767603600000:1042``; HubSpot engagements span ``notes``, ``calls``,
``meetings`` and ``emails``, Salesforce's ``Task`` and ``Event``): the objects are read
one after the other, and each record's watermark carries every object's position so
far, so a run resumed from it takes up each object where it was.

A ``Mark`` is a position in (modification time in ms, id) order, the order in which
HubSpot and Salesforce changes are read: everything at or before it has been delivered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def malformed(watermark: str) -> ValueError:
    return ValueError(f"not a watermark this connector wrote: {watermark[:80]!r}")


@dataclass(frozen=True, slots=True)
class Mark:
    ms: int
    id: str

    def encode(self) -> str:
        return f"{self.ms}:{self.id}"

    @classmethod
    def decode(cls, text: str) -> Mark:
        ms, sep, record_id = text.partition(":")
        if not sep or not ms.isdigit() or not record_id:
            raise malformed(text)
        return cls(int(ms), record_id)


def split(watermark: str | None, objects: Iterable[str]) -> dict[str, str]:
    """The positions per object in ``watermark`` (none for an object not read yet)."""
    if not watermark:
        return {}
    known = set(objects)
    positions: dict[str, str] = {}
    for part in watermark.split(";"):
        name, sep, position = part.partition("=")
        if not sep or name not in known or not position:
            raise malformed(watermark)
        positions[name] = position
    return positions


def join(positions: Mapping[str, str]) -> str:
    return ";".join(f"{name}={position}" for name, position in positions.items())


def across(
    objects: Iterable[str],
    watermark: str | None,
    read: Callable[[str, str | None], Iterator[tuple[T, str]]],
) -> Iterator[tuple[T, str]]:
    """Read each object from its position in ``watermark``; ``read(object, position)``
    yields items with the position after each; this yields them with the whole watermark."""
    objects = list(objects)
    positions = split(watermark, objects)
    for name in objects:
        for item, position in read(name, positions.get(name)):
            positions[name] = position
            yield item, join(positions)


def epoch_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time (``Z``, ``+00:00`` or ``+0000``)."""
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def iso_seconds(ms: int) -> str:
    """``ms`` floored to the second, as ``2026-01-05T09:00:00Z``."""
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
