"""A sync's filters and field mappings (SPEC §7): pure rules, no I/O.

Filters are ``{field, op, value}``; a record passes when every filter matches. They
test the record as its source holds it: Keyrack's fields going out, the provider's
coming in. A record that fails one is skipped with a ``Skip`` naming that filter, its
index and the value tested (``present`` tells a missing field from a null one).

Comparisons: ``gt``/``gte``/``lt``/``lte`` compare numbers as numbers (a provider's
``"1200"`` is 1200) and anything else as text; ``contains`` is a substring of text or
a member of a list; ``exists`` with ``value`` true wants the field present and neither
null nor empty text (false: the opposite).

Mappings are ``{local, remote, transform}`` with a transform from
``TRANSFORMS`` applied in the sync's direction: going out a local value
becomes the remote field, coming in a remote value becomes the local field. A field
absent from the source is left out (never written as null). ``cents_to_units`` and
``units_to_cents`` are exact inverses (decimal arithmetic), so a mapping that uses one
going out and the other coming in keeps the value; ``lower``, ``upper`` and ``trim``
do not claim to keep it (``keeps``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from keyrack.errors import InvalidInput

TRANSFORMS = frozenset(
    {"lower", "upper", "trim", "cents_to_units", "units_to_cents", "date", "bool"}
)
"""SPEC §7's transform vocabulary, the only names a mapping may use."""
INBOUND, OUTBOUND = "inbound", "outbound"
OPS = ("eq", "ne", "in", "not_in", "exists", "contains", "gt", "gte", "lt", "lte")
MAX_FILTERS = 50
MAX_MAPPINGS = 100
MAX_FIELD = 100
_LISTS = frozenset({"in", "not_in"})
_ORDERED = frozenset({"gt", "gte", "lt", "lte"})
_INVERSE = {"cents_to_units": "units_to_cents", "units_to_cents": "cents_to_units"}
KEPT = frozenset({None, "cents_to_units", "units_to_cents"})
"""Transforms a round trip (out, then back with the inverse) loses nothing through."""


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "value": self.value}


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a record was skipped: the first filter it failed and what it held."""

    index: int
    filter: Filter
    tested: Any
    present: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "filter": self.filter.as_dict(),
            "field": self.filter.field,
            "tested": _jsonable(self.tested),
            "present": self.present,
        }


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One field mapping (``local`` ↔ ``remote``, ``transform`` in the sync's direction)."""

    local: str
    remote: str
    transform: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"local": self.local, "remote": self.remote, "transform": self.transform}

    @property
    def keeps(self) -> bool:
        return self.transform in KEPT

    def inverse(self) -> FieldRule:
        """The mapping for the other direction that undoes this one's transform."""
        return FieldRule(
            self.local, self.remote, _INVERSE.get(self.transform or "", self.transform)
        )


def _field_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty field name")
    name = value.strip()
    if len(name) > MAX_FIELD or any(ch in name for ch in "\x00\r\n"):
        raise InvalidInput(f"{what} must be a field name of at most {MAX_FIELD} characters")
    return name


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def parse_filters(raw: Any) -> tuple[Filter, ...]:
    """Validated filters from JSON; ``InvalidInput`` names the first bad one by index."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput("filters must be a list of {field, op, value}")
    if len(raw) > MAX_FILTERS:
        raise InvalidInput(f"at most {MAX_FILTERS} filters")
    parsed = []
    for index, item in enumerate(raw):
        where = f"filters[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where} must be an object {{field, op, value}}")
        unknown = sorted(set(item) - {"field", "op", "value"})
        if unknown:
            raise InvalidInput(f"{where} has unknown member(s): {', '.join(unknown)}")
        name = _field_name(item.get("field"), f"{where}.field")
        op = item.get("op")
        if op not in OPS:
            raise InvalidInput(f"{where}.op must be one of {', '.join(OPS)}")
        value = item.get("value")
        if op in _LISTS:
            if not isinstance(value, list) or not all(_scalar(v) for v in value):
                raise InvalidInput(f"{where}.value must be a list of values for {op}")
        elif op == "exists":
            if value is None:
                value = True
            if not isinstance(value, bool):
                raise InvalidInput(f"{where}.value must be true or false for exists")
        elif not _scalar(value):
            raise InvalidInput(f"{where}.value must be a string, number, boolean or null")
        elif op in _ORDERED and (value is None or isinstance(value, bool)):
            raise InvalidInput(f"{where}.value must be a number or a string for {op}")
        parsed.append(Filter(name, op, value))
    return tuple(parsed)


def parse_mappings(raw: Any) -> tuple[FieldRule, ...]:
    """Validated mappings from JSON: each local and each remote field mapped once."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput("field_mappings must be a list of {local, remote, transform}")
    if len(raw) > MAX_MAPPINGS:
        raise InvalidInput(f"at most {MAX_MAPPINGS} field mappings")
    parsed: list[FieldRule] = []
    for index, item in enumerate(raw):
        where = f"field_mappings[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where} must be an object {{local, remote, transform}}")
        unknown = sorted(set(item) - {"local", "remote", "transform"})
        if unknown:
            raise InvalidInput(f"{where} has unknown member(s): {', '.join(unknown)}")
        transform = item.get("transform")
        if transform is not None and transform not in TRANSFORMS:
            raise InvalidInput(f"{where}.transform must be one of {', '.join(sorted(TRANSFORMS))}")
        mapping = FieldRule(
            _field_name(item.get("local"), f"{where}.local"),
            _field_name(item.get("remote"), f"{where}.remote"),
            transform,
        )
        for other in parsed:
            if other.local == mapping.local or other.remote == mapping.remote:
                raise InvalidInput(
                    f"{where} maps a field already mapped ({mapping.local} → {mapping.remote})"
                )
        parsed.append(mapping)
    return tuple(parsed)


# filters


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        try:
            found = Decimal(str(value))
        except InvalidOperation:
            return None
        return found if found.is_finite() else None
    if isinstance(value, str):
        try:
            found = Decimal(value.strip())
        except InvalidOperation:
            return None
        return found if found.is_finite() else None
    return None


def _same(held: Any, wanted: Any) -> bool:
    if held == wanted and type(held) is type(wanted):
        return True
    a, b = _number(held), _number(wanted)
    if a is not None and b is not None:
        return a == b
    if isinstance(held, bool) or isinstance(wanted, bool):
        return _text(held).lower() == _text(wanted).lower()
    return held is not None and wanted is not None and _text(held) == _text(wanted)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _order(held: Any, wanted: Any) -> int | None:
    """-1, 0, 1 comparing held to wanted; None when they cannot be compared."""
    if held is None or isinstance(held, bool | list | dict):
        return None
    a, b = _number(held), _number(wanted)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    x, y = _text(held), _text(wanted)
    return (x > y) - (x < y)


def matches(f: Filter, record: Mapping[str, Any]) -> bool:
    present = f.field in record
    held = record.get(f.field)
    if f.op == "exists":
        there = present and held is not None and held != ""
        return there is bool(f.value)
    if f.op == "eq":
        return present and _same(held, f.value)
    if f.op == "ne":
        return not (present and _same(held, f.value))
    if f.op == "in":
        return present and any(_same(held, v) for v in f.value)
    if f.op == "not_in":
        return not (present and any(_same(held, v) for v in f.value))
    if f.op == "contains":
        if isinstance(held, list):
            return any(_same(item, f.value) for item in held)
        return present and held is not None and _text(f.value) in _text(held)
    order = _order(held, f.value) if present else None
    if order is None:
        return False
    return {"gt": order > 0, "gte": order >= 0, "lt": order < 0, "lte": order <= 0}[f.op]


def first_skip(filters: Sequence[Filter], record: Mapping[str, Any]) -> Skip | None:
    """The first filter ``record`` fails, or None when it passes them all."""
    for index, f in enumerate(filters):
        if not matches(f, record):
            return Skip(index, f, record.get(f.field), f.field in record)
    return None


# mappings


def _units(cents: Any) -> int | float:
    amount = _number(cents)
    if amount is None:
        raise ValueError(f"not an amount of cents: {cents!r}")
    units = amount / 100
    return int(units) if units == units.to_integral_value() else float(units)


def _cents(units: Any) -> int:
    amount = _number(units)
    if amount is None:
        raise ValueError(f"not an amount: {units!r}")
    return int((amount * 100).to_integral_value(ROUND_HALF_EVEN))


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return (
            value.astimezone(dt.UTC).date().isoformat()
            if value.tzinfo
            else value.date().isoformat()
        )
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).date().isoformat()
    text = str(value).strip()
    if text.isdigit():  # epoch milliseconds, as HubSpot gives dates
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC).date().isoformat()
    try:
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise ValueError(f"not a date: {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    if text in {"true", "yes", "1", "on", "y", "t"}:
        return True
    if text in {"false", "no", "0", "off", "n", "f", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def transform(name: str | None, value: Any) -> Any:
    """``value`` through the named transform (None passes through); ``ValueError`` when the
    value does not fit it."""
    if value is None or name is None:
        return value
    if name == "lower":
        return str(value).lower()
    if name == "upper":
        return str(value).upper()
    if name == "trim":
        return str(value).strip()
    if name == "cents_to_units":
        return _units(value)
    if name == "units_to_cents":
        return _cents(value)
    if name == "date":
        return _date(value)
    if name == "bool":
        return _bool(value)
    raise ValueError(f"unknown transform {name!r}")


class MappingFailed(InvalidInput):
    """A value the mapping's transform cannot take: the record fails, naming the field."""

    def __init__(self, detail: str, *, mapping: FieldRule, value: Any) -> None:
        super().__init__(detail)
        self.mapping = mapping
        self.value = value


def apply(
    mappings: Sequence[FieldRule], record: Mapping[str, Any], direction: str
) -> dict[str, Any]:
    """The mapped fields of ``record`` (the source's): remote fields going out, local ones
    coming in. Fields the source lacks are left out."""
    mapped: dict[str, Any] = {}
    for m in mappings:
        source, target = (m.local, m.remote) if direction == OUTBOUND else (m.remote, m.local)
        if source not in record:
            continue
        try:
            mapped[target] = transform(m.transform, record[source])
        except (ValueError, ArithmeticError) as exc:
            raise MappingFailed(
                f"field {source}: {exc} (transform {m.transform})", mapping=m, value=record[source]
            ) from None
    return mapped


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


jsonable = _jsonable
