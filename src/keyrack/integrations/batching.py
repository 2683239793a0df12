"""Batched writes that answer per record: chunks, refusals isolated, unchanged values.

``isolate`` sends a batch as one request. A provider that refuses the request as a
whole (HubSpot's 400 for one bad input, Salesforce's 400 for a value it cannot read)
says nothing of the other records, so the refusal is narrowed down: when it names a
field (``PROPERTY_DOESNT_EXIST``, ``No such column 'X'``), the records holding that field
fail with it and the others are sent again; when it is about the request itself (an
upsert key field that does not exist), every record fails with it; otherwise the batch
is halved until each refusal is a single record's. One bad record among 100 costs
about 2·log2(100) ≈ 14 extra calls; a field every record holds costs none.

``unchanged`` decides that the provider already holds what a record would write, so
nothing is sent: values are compared as the provider gives them back (strings for
HubSpot, JSON types for Salesforce): empty and missing are the same, a number equals
its text, an instant equals its other spellings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx

from keyrack.integrations.connector import ProviderFailure, WriteOutcome

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Refused(Exception):
    """The provider refused a batch request as a whole (raised by a ``send``)."""

    def __init__(
        self,
        failure: ProviderFailure,
        response: httpx.Response,
        *,
        field: str | None = None,
        everyone: bool = False,
    ) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.response = response
        self.field = field  # the field it names, when it names one
        self.everyone = everyone  # about the request itself: every record gets it


def isolate(
    items: Sequence[T],
    send: Callable[[Sequence[T]], list[WriteOutcome]],
    refuse: Callable[[T, Refused], WriteOutcome],
    holds: Callable[[T, str], bool],
) -> list[WriteOutcome]:
    """One outcome per item, in order: ``send``'s, or ``refuse``'s for the items a
    refusal of the whole request is narrowed down to (see the module docstring)."""
    outcomes: list[WriteOutcome | None] = [None] * len(items)
    pending = [list(range(len(items)))] if items else []
    while pending:  # a work list, not recursion: no closure cycle keeps a batch alive
        positions = pending.pop()
        try:
            answered = send([items[p] for p in positions])
        except Refused as refused:
            culprits = positions
            if not refused.everyone and len(positions) > 1:
                named = refused.field
                culprits = [p for p in positions if named and holds(items[p], named)]
                if not culprits:
                    middle = len(positions) // 2
                    pending += [positions[middle:], positions[:middle]]
                    continue
            for p in culprits:
                outcomes[p] = refuse(items[p], refused)
            failed = set(culprits)
            rest = [p for p in positions if p not in failed]
            if rest:
                pending.append(rest)
            continue
        for p, outcome in zip(positions, answered, strict=True):
            outcomes[p] = outcome
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def unchanged(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Every value of ``desired`` is already the one in ``current``."""
    return all(same(value, current.get(name)) for name, value in desired.items())


def same(desired: Any, current: Any) -> bool:
    if desired in (None, "") or current in (None, ""):
        return desired in (None, "") and current in (None, "")
    if isinstance(desired, bool) or isinstance(current, bool):
        return str(desired).lower() == str(current).lower()
    if isinstance(desired, int | float | Decimal) or isinstance(current, int | float | Decimal):
        return _number(desired) is not None and _number(desired) == _number(current)
    if desired == current:
        return True
    left, right = _instant(desired), _instant(current)
    return left is not None and left == right


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _instant(value: Any) -> dt.datetime | None:
    text = str(value)
    if "T" not in text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
