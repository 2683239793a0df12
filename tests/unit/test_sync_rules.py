"""Sync filters and field mappings (domain.sync_rules): property tests and the refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyrack.domain import sync_rules as rules
from keyrack.domain.sync_rules import INBOUND, OUTBOUND, FieldRule, Filter
from keyrack.errors import InvalidInput

FIELDS = st.sampled_from(["name", "status", "arr_cents", "email", "tags"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10_000, 10_000),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
"""The machine is shared: generation may be slow, never wrong."""
RECORDS = st.dictionaries(FIELDS, st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=5)


@st.composite
def filters(draw: st.DrawFn) -> Filter:
    op = draw(st.sampled_from(rules.OPS))
    if op in ("in", "not_in"):
        value: Any = draw(st.lists(SCALARS, max_size=3))
    elif op == "exists":
        value = draw(st.booleans())
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(st.one_of(st.integers(-100, 100), st.text(max_size=4)))
    else:
        value = draw(SCALARS)
    return rules.parse_filters([{"field": draw(FIELDS), "op": op, "value": value}])[0]


@RELAXED
@given(st.lists(filters(), max_size=6), RECORDS)
def test_a_skipped_record_names_the_filter_it_failed(
    chain: list[Filter], record: dict[str, Any]
) -> None:
    skip = rules.first_skip(chain, record)
    passes = [rules.matches(f, record) for f in chain]
    if skip is None:
        assert all(passes)
        return
    assert chain[skip.index] == skip.filter
    assert not passes[skip.index] and all(passes[: skip.index])
    assert skip.present == (skip.filter.field in record)
    assert skip.tested == record.get(skip.filter.field)
    detail = skip.as_dict()
    assert detail["filter"] == skip.filter.as_dict() and detail["index"] == skip.index


KEPT_TRANSFORMS = st.sampled_from([None, "cents_to_units", "units_to_cents"])
LOCAL_FIELDS = st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, min_size=1, max_size=4)


@RELAXED
@given(LOCAL_FIELDS, st.data())
def test_a_round_trip_keeps_every_field_a_mapping_claims_to_keep(
    fields: list[str], data: st.DataObject
) -> None:
    outbound = []
    record: dict[str, Any] = {}
    for index, name in enumerate(fields):
        transform = data.draw(KEPT_TRANSFORMS)
        outbound.append(FieldRule(name, f"remote_{index}", transform))
        if transform == "units_to_cents":  # units, to the cent
            cents = data.draw(st.integers(-(10**12), 10**12))
            record[name] = rules.transform("cents_to_units", cents)
        elif transform == "cents_to_units":
            record[name] = data.draw(st.integers(-(10**15), 10**15))
        else:
            record[name] = data.draw(SCALARS)
    assert all(m.keeps for m in outbound)
    remote = rules.apply(outbound, record, OUTBOUND)
    back = rules.apply([m.inverse() for m in outbound], remote, INBOUND)
    assert back == record


@RELAXED
@given(st.lists(st.sampled_from(["a", "b"]), max_size=2), RECORDS)
def test_a_mapping_writes_only_what_the_source_holds(
    names: list[str], record: dict[str, Any]
) -> None:
    mappings = [FieldRule(n, f"r_{n}") for n in dict.fromkeys(names)]
    assert set(rules.apply(mappings, record, OUTBOUND)) == {
        f"r_{m.local}" for m in mappings if m.local in record
    }


def test_filters_compare_as_the_provider_sends_values() -> None:
    record = {"annualrevenue": "1200", "name": "Acme Ltd", "tags": ["a", "b"], "email": None}
    check = [
        ({"field": "annualrevenue", "op": "gt", "value": 999}, True),
        ({"field": "annualrevenue", "op": "eq", "value": 1200}, True),
        ({"field": "annualrevenue", "op": "lt", "value": "1000"}, False),
        ({"field": "name", "op": "contains", "value": "Acme"}, True),
        ({"field": "tags", "op": "contains", "value": "b"}, True),
        ({"field": "email", "op": "exists", "value": True}, False),
        ({"field": "missing", "op": "exists", "value": False}, True),
        ({"field": "missing", "op": "ne", "value": 1}, True),
        ({"field": "name", "op": "not_in", "value": ["Acme Ltd"]}, False),
        ({"field": "missing", "op": "gt", "value": 1}, False),
    ]
    for raw, expected in check:
        assert rules.matches(rules.parse_filters([raw])[0], record) is expected, raw
    skip = rules.first_skip(rules.parse_filters([check[0][0], check[2][0]]), record)
    assert skip is not None and skip.index == 1 and skip.tested == "1200" and skip.present


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("nope", "filters must be a list"),
        ([{"field": "", "op": "eq"}], "filters[0].field"),
        ([{"field": "a", "op": "like"}], "filters[0].op must be one of"),
        ([{"field": "a", "op": "in", "value": 3}], "must be a list of values"),
        ([{"field": "a", "op": "gt", "value": None}], "must be a number or a string"),
        ([{"field": "a", "op": "exists", "value": "yes"}], "true or false"),
        ([{"field": "a", "op": "eq", "value": {"x": 1}}], "string, number, boolean or null"),
        ([{"field": "a", "op": "eq", "extra": 1}], "unknown member(s): extra"),
    ],
)
def test_bad_filters_are_refused_by_index(raw: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=None) as refused:
        rules.parse_filters(raw)
    assert says in refused.value.detail


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"a": 1}, "field_mappings must be a list"),
        ([{"local": "a", "remote": "b", "transform": "rot13"}], "transform must be one of"),
        ([{"local": "a", "remote": "b"}, {"local": "a", "remote": "c"}], "already mapped"),
        ([{"local": "a"}], "field_mappings[0].remote"),
    ],
)
def test_bad_mappings_are_refused(raw: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        rules.parse_mappings(raw)
    assert says in refused.value.detail


def test_transforms() -> None:
    assert rules.transform("cents_to_units", 123456) == 1234.56
    assert rules.transform("cents_to_units", 120000) == 1200
    assert rules.transform("units_to_cents", "1234.56") == 123456
    assert rules.transform("date", "2026-01-05T09:00:00Z") == "2026-01-05"
    assert rules.transform("date", "1767603600000") == "2026-01-05"
    assert rules.transform("bool", "false") is False
    assert rules.transform("trim", "  x ") == "x"
    with pytest.raises(rules.MappingFailed, match="field arr"):
        rules.apply([FieldRule("arr", "amount", "cents_to_units")], {"arr": "lots"}, OUTBOUND)
