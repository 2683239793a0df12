"""``isolate`` narrows a refused batch down to its bad records; ``unchanged`` compares
what a record would write with what the provider holds; watermarks compose."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrack.integrations.batching import Refused, chunks, isolate, same, unchanged
from keyrack.integrations.connector import ProviderFailure, WriteOutcome, WriteResult
from keyrack.integrations.watermarks import Mark, across, epoch_ms, iso_seconds, join, split

ANSWER = httpx.Response(400, request=httpx.Request("POST", "https://provider.example/batch"))


class Provider:
    """Refuses any request holding a bad record; ``field`` names the bad field."""

    def __init__(self, bad: set[int], field: str | None = None, everyone: bool = False):
        self.bad, self.field, self.everyone, self.calls = bad, field, everyone, 0

    def send(self, items: Sequence[int]) -> list[WriteOutcome]:
        self.calls += 1
        if self.everyone or self.bad & set(items):
            failure = ProviderFailure("refused", "BAD", 400)
            raise Refused(failure, ANSWER, field=self.field, everyone=self.everyone)
        return [WriteOutcome(str(i), WriteResult.CREATED, f"r{i}") for i in items]


def refuse(item: int, refused: Refused) -> WriteOutcome:
    return WriteOutcome(str(item), WriteResult.FAILED, None, refused.failure)


def run(provider: Provider, count: int) -> list[WriteOutcome]:
    return isolate(list(range(count)), provider.send, refuse, lambda i, f: i in provider.bad)


def test_one_bad_record_among_100_is_found_by_halving() -> None:
    provider = Provider({37})
    outcomes = run(provider, 100)
    assert [o.keyrack_id for o in outcomes] == [str(i) for i in range(100)]
    assert [o.keyrack_id for o in outcomes if o.result is WriteResult.FAILED] == ["37"]
    assert provider.calls <= 2 * 7 + 1


def test_a_refusal_naming_a_field_fails_its_holders_and_sends_the_rest_once() -> None:
    provider = Provider({3, 50, 98}, field="colour")
    outcomes = run(provider, 100)
    assert [o.keyrack_id for o in outcomes if o.failure] == ["3", "50", "98"]
    assert provider.calls == 2


def test_a_refusal_of_the_request_itself_fails_everyone_in_one_call() -> None:
    provider = Provider(set(), everyone=True)
    assert {o.result for o in run(provider, 100)} == {WriteResult.FAILED}
    assert provider.calls == 1


@given(st.sets(st.integers(0, 59)))
def test_every_bad_record_fails_and_every_good_one_is_written(bad: set[int]) -> None:
    outcomes = run(Provider(bad), 60)
    assert {int(o.keyrack_id) for o in outcomes if o.failure} == bad
    assert [o.keyrack_id for o in outcomes] == [str(i) for i in range(60)]


def test_chunks_keep_order_and_size() -> None:
    assert [list(c) for c in chunks(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize(
    ("desired", "current", "expected"),
    [
        ("Acme", "Acme", True),
        ("Acme", "acme", False),
        (None, "", True),
        ("", None, True),
        (None, "x", False),
        (1000, "1000", True),
        (1000.0, "1000", True),
        (12.5, 12.50, True),
        (1000, "1000.5", False),
        ("0123", "123", False),  # text that looks like a number is text (a phone)
        (True, "true", True),
        (False, "true", False),
        ("2026-01-05T09:00:00Z", "2026-01-05T09:00:00.000+0000", True),
        ("2026-01-05T09:00:00Z", "2026-01-05T10:00:00+01:00", True),
        ("2026-01-05T09:00:00Z", "2026-01-05T09:00:01Z", False),
        ("2026-01-05", "2026-01-05", True),
    ],
)
def test_same_compares_as_providers_give_values_back(desired, current, expected) -> None:
    assert same(desired, current) is expected


def test_unchanged_looks_only_at_what_would_be_written() -> None:
    assert unchanged({"name": "Acme"}, {"name": "Acme", "other": "x"})
    assert not unchanged({"name": "Acme", "phone": "1"}, {"name": "Acme"})


def test_watermarks_compose_per_object_and_refuse_strangers() -> None:
    assert split(join({"notes": "1:2", "calls": "3:4"}), ["notes", "calls"]) == {
        "notes": "1:2",
        "calls": "3:4",
    }
    assert split(None, ["notes"]) == {}
    for bad in ("widgets=1:2", "notes", "notes="):
        with pytest.raises(ValueError, match="not a watermark"):
            split(bad, ["notes"])
    for bad in ("x:1", "12", "12:"):
        with pytest.raises(ValueError):
            Mark.decode(bad)
    assert Mark.decode(Mark(17, "001A").encode()) == Mark(17, "001A")


def test_across_reads_objects_in_turn_with_every_position_so_far() -> None:
    def read(name: str, position: str | None):
        start = int(position or 0)
        for n in range(start + 1, 3):
            yield f"{name}{n}", str(n)

    first = list(across(["a", "b"], None, read))
    assert first == [("a1", "a=1"), ("a2", "a=2"), ("b1", "a=2;b=1"), ("b2", "a=2;b=2")]
    assert list(across(["a", "b"], "a=2;b=1", read)) == [("b2", "a=2;b=2")]


def test_times_are_read_to_the_millisecond_and_written_to_the_second() -> None:
    ms = epoch_ms("2026-01-05T09:00:50.123+0000")
    assert ms == epoch_ms("2026-01-05T09:00:50.123Z") == 1767603650123
    assert iso_seconds(ms) == "2026-01-05T09:00:50Z"
