"""CRM rules without a database: NPS arithmetic, period buckets, custom-field bounds."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrack.domain import crm
from keyrack.domain.crm import NpsCategory, NpsTally, Period
from keyrack.errors import InvalidInput


def test_nps_is_percent_promoters_minus_percent_detractors() -> None:
    result = crm.tally([10, 9, 9, 8, 7, 6, 0, 10, 3, 9])
    assert (result.promoters, result.passives, result.detractors) == (5, 2, 3)
    assert result.nps == 20.0


def test_nps_boundaries_nine_promotes_seven_is_passive_six_detracts() -> None:
    assert [crm.nps_category(s) for s in (10, 9, 8, 7, 6, 0)] == [
        NpsCategory.PROMOTER,
        NpsCategory.PROMOTER,
        NpsCategory.PASSIVE,
        NpsCategory.PASSIVE,
        NpsCategory.DETRACTOR,
        NpsCategory.DETRACTOR,
    ]


def test_nps_extremes_and_no_responses() -> None:
    assert crm.tally([10, 9]).nps == 100.0
    assert crm.tally([0, 6]).nps == -100.0
    assert crm.tally([7, 8]).nps == 0.0
    assert NpsTally().nps is None


def test_nps_rounds_to_one_decimal() -> None:
    assert crm.tally([10, 8, 0]).nps == 0.0
    assert crm.tally([10, 10, 8]).nps == 66.7


@given(st.lists(st.integers(0, 10), min_size=1, max_size=200))
def test_nps_stays_within_minus_100_and_100_and_tallies_add_up(scores: list[int]) -> None:
    result = crm.tally(scores)
    assert result.responses == len(scores)
    assert result.nps is not None and -100 <= result.nps <= 100
    half = len(scores) // 2
    assert crm.tally(scores[:half]) + crm.tally(scores[half:]) == result


@pytest.mark.parametrize("score", [-1, 11])
def test_scores_outside_zero_to_ten_are_refused(score: int) -> None:
    with pytest.raises(InvalidInput):
        crm.nps_category(score)


def test_periods_are_utc_days_months_quarters_and_years() -> None:
    late_evening_in_new_york = datetime(2026, 3, 31, 21, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert crm.day_of(late_evening_in_new_york) == date(2026, 4, 1)
    assert crm.month_of(late_evening_in_new_york) == "2026-04"
    day = date(2026, 8, 17)
    assert crm.bucket_label(day, Period.DAY) == "2026-08-17"
    assert crm.bucket_label(day, Period.MONTH) == "2026-08"
    assert crm.bucket_label(day, Period.QUARTER) == "2026-Q3"
    assert crm.bucket_label(day, Period.YEAR) == "2026"
    assert crm.bucket_start(day, Period.QUARTER) == date(2026, 7, 1)
    assert crm.bucket_start(day, Period.YEAR) == date(2026, 1, 1)


def test_health_bands() -> None:
    assert [crm.health_band(s) for s in (100, 70, 69, 40, 39, 0)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]
    assert crm.health_band(None) is None


def test_custom_fields_are_flat_bounded_and_finite() -> None:
    assert crm.validate_custom_fields({"tier": "gold", "seats": 12, "vip": True, "x": None}) == {
        "tier": "gold",
        "seats": 12,
        "vip": True,
        "x": None,
    }
    for bad in (
        {"nested": {"a": 1}},
        {"list": [1]},
        {"nan": float("nan")},
        {f"k{i}": i for i in range(51)},
        {"": 1},
        {"big": 2**60},
        {"nul": "a\x00b"},
        {f"k{i}": "x" * 1000 for i in range(20)},
    ):
        with pytest.raises(InvalidInput):
            crm.validate_custom_fields(bad)


def test_public_ids_are_checked_by_shape() -> None:
    assert crm.is_ref("cli", "cli_01HX3Z8Q9R6T0V2W4Y6A8C0E2G")
    assert not crm.is_ref("cli", "con_01HX3Z8Q9R6T0V2W4Y6A8C0E2G")
    assert not crm.is_ref("cli", "cli_01HX3Z8Q9R6T0V2W4Y6A8C0E2")
    assert not crm.is_ref("cli", "cli_01hx3z8q9r6t0v2w4y6a8c0e2g")


def test_text_with_nul_or_lone_surrogates_is_not_storable() -> None:
    assert crm.is_storable("Ünïcode ✓")
    assert not crm.is_storable("a\x00")
    assert not crm.is_storable("\ud800")


# -- external ids ------------------------------------------------------------------------

systems = st.from_regex(r"\A[a-z][a-z0-9_-]{0,31}\Z")
external_ids = st.text(  # plain text: no control, separator, surrogate or bidi character
    st.characters(
        exclude_categories=["Cc", "Cs", "Zl", "Zp"],
        exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=crm.MAX_EXTERNAL_ID,
)
changes = st.dictionaries(systems, st.none() | external_ids, max_size=4)
stored = st.dictionaries(systems, external_ids, max_size=4)


@given(stored, changes, changes)
def test_merging_two_changes_is_merging_their_union_later_winning(
    current: dict[str, str], first: dict[str, str | None], second: dict[str, str | None]
) -> None:
    one_by_one = crm.merge_external_ids(crm.merge_external_ids(current, first), second)
    assert one_by_one == crm.merge_external_ids(current, {**first, **second})
    for system, value in second.items():
        assert one_by_one.get(system) == value  # the later write wins, None removes
    for system in current.keys() - first.keys() - second.keys():
        assert one_by_one[system] == current[system]  # a system not named stays


@given(systems, external_ids)
def test_an_external_id_filter_round_trips(system: str, value: str) -> None:
    ref = crm.ExternalRef(system, value)
    assert crm.parse_external_ref(str(ref)) == ref


def test_an_external_id_filter_splits_at_its_first_colon() -> None:
    assert crm.parse_external_ref("hubspot:calls:1042") == ("hubspot", "calls:1042")


@pytest.mark.parametrize(
    "text", ["hubspot", "hubspot:", ":123", "HubSpot:1", "1hubspot:1", "a" * 33 + ":1", "x:a\nb"]
)
def test_malformed_external_id_filters_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        crm.parse_external_ref(text)


def test_external_id_changes_are_bounded_and_plain_text() -> None:
    assert crm.validate_external_id_changes({"salesforce": "001A", "hubspot": None}) == {
        "salesforce": "001A",
        "hubspot": None,
    }
    for bad in (
        {"Salesforce": "1"},
        {"hub spot": "1"},
        {"hubspot": ""},
        {"hubspot": "x" * 256},
        {"hubspot": "1\r\n2"},
        {"hubspot": "\u202e1"},
        {f"s{i}": "1" for i in range(21)},
    ):
        with pytest.raises(InvalidInput):
            crm.validate_external_id_changes(bad)
    with pytest.raises(InvalidInput):  # 20 held plus one more
        crm.merge_external_ids({f"s{i}": "1" for i in range(20)}, {"extra": "1"})
