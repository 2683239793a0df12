"""The SDK's pacer and error mapping, without a server: time is an injected clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from keyrack.client import (
    APIError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from keyrack.client._client import masked
from keyrack.client._errors import error_for
from keyrack.client._pacing import HEADROOM, Pacer, policy_rate, retry_after_seconds


class FakeTime:
    """A clock that moves only when the pacer sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def paced(rate: float | None = 5, concurrency: int | None = None) -> tuple[Pacer, FakeTime]:
    time = FakeTime()
    return Pacer(rate, concurrency, clock=time.clock, sleep=time.sleep), time


STEP = 1 / (5 * HEADROOM)
"""Spacing of starts at 5 requests/s: a little over 0.2 s."""


def starts(pacer: Pacer, time: FakeTime, count: int) -> list[float]:
    out = []
    for _ in range(count):
        with pacer.slot():
            out.append(time.now)
    return out


def test_request_starts_are_spaced_evenly_just_under_the_rate() -> None:
    pacer, time = paced(rate=5)
    assert starts(pacer, time, 6) == pytest.approx([i * STEP for i in range(6)])
    assert 0.2 < STEP < 0.22


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    pacer, time = paced(rate=5)
    starts(pacer, time, 1)
    time.now = 10.0
    assert starts(pacer, time, 3) == pytest.approx([10.0, 10 + STEP, 10 + 2 * STEP])


def test_slow_requests_are_not_delayed_further() -> None:
    pacer, time = paced(rate=5)
    for _ in range(3):
        with pacer.slot():
            time.now += 0.5  # the request itself takes longer than the interval
    assert time.sleeps == []


def test_below_two_per_second_a_request_starts_an_interval_after_the_last_one_ended() -> None:
    """A one-token server bucket counts from arrival, which may come late for one request
    (a new connection, a cache miss) and on time for the next: spacing starts is not
    enough, the end of the previous request is the safe mark."""
    pacer, time = paced(rate=1, concurrency=1)
    one = 1 / HEADROOM
    began = []
    for took in (0.3, 0.05):
        with pacer.slot():
            began.append(time.now)
            time.now += took
    with pacer.slot():
        began.append(time.now)
    assert began == pytest.approx([0.0, 0.3 + one, 0.3 + one + 0.05 + one])


def test_from_two_per_second_only_starts_are_spaced() -> None:
    pacer, time = paced(rate=2, concurrency=1)
    began = []
    for _ in range(3):
        with pacer.slot():
            began.append(time.now)
            time.now += 0.1
    assert began == pytest.approx([0.0, 1 / (2 * HEADROOM), 2 / (2 * HEADROOM)])


def test_without_a_rate_nothing_waits() -> None:
    pacer, time = paced(rate=None)
    assert starts(pacer, time, 20) == [0.0] * 20
    assert time.sleeps == []


def test_hold_delays_every_start_until_retry_after_has_passed() -> None:
    pacer, time = paced(rate=5)
    starts(pacer, time, 1)
    pacer.hold(1.5)
    assert starts(pacer, time, 2) == pytest.approx([1.5, 1.5 + STEP])


def test_a_hold_reported_while_waiting_is_honoured_before_starting() -> None:
    time = FakeTime()
    holds = iter([3.0])

    def sleep(seconds: float) -> None:
        # Another thread's request is answered 429 while this one waits for its turn.
        if (hold := next(holds, None)) is not None:
            pacer.hold(hold)
        time.sleep(seconds)

    pacer = Pacer(5, None, clock=time.clock, sleep=sleep)
    assert starts(pacer, time, 2) == pytest.approx([0.0, 3.0])


def test_concurrency_gate_lets_at_most_that_many_requests_in_flight() -> None:
    pacer = Pacer(None, 2)
    pair = threading.Barrier(2, timeout=10)  # two inside at once must meet here
    lock = threading.Lock()
    inflight, most = 0, 0

    def call() -> None:
        nonlocal inflight, most
        with pacer.slot():
            with lock:
                inflight += 1
                most = max(most, inflight)
            pair.wait()
            with lock:
                inflight -= 1

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (most, inflight) == (2, 0)


def test_a_stricter_server_policy_slows_the_pacer_down_but_never_speeds_it_up() -> None:
    pacer, time = paced(rate=5)
    pacer.tighten(10)
    assert starts(pacer, time, 2) == pytest.approx([0.0, STEP])
    pacer.tighten(2)  # applies from the latest start on
    slow = 1 / (2 * HEADROOM)
    assert starts(pacer, time, 2) == pytest.approx([STEP + slow, STEP + 2 * slow])


def test_tighten_leaves_an_unpaced_client_unpaced() -> None:
    pacer, time = paced(rate=None)
    pacer.tighten(1)
    assert starts(pacer, time, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("header", "rate"),
    [
        ('"key";q=5;w=1, "inflight";q=1', 5.0),
        ('"default";q=100;w=60', 100 / 60),
        ('"burst";q=10;w=1, "daily";q=1000;w=86400', 1000 / 86400),
        ('"inflight";q=1', None),
        ('"key";q=0;w=1', None),
        ("garbage", None),
        ("", None),
    ],
)
def test_the_rate_is_read_from_the_ratelimit_policy_header(header: str, rate: float | None) -> None:
    assert policy_rate(header) == (pytest.approx(rate) if rate else None)


@pytest.mark.parametrize(("rate", "concurrency"), [(0, 1), (-1, 1), (5, 0)])
def test_pacer_refuses_limits_that_admit_nothing(rate: float, concurrency: int) -> None:
    with pytest.raises(ValueError):
        Pacer(rate, concurrency)


NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 2 ", 2.0),
        ("0.5", 0.5),
        (None, 1.0),
        ("", 1.0),
        ("soon", 1.0),
        ("nan", 1.0),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=10), usegmt=True), 10.0),
        (format_datetime(NOW - timedelta(seconds=10), usegmt=True), 0.0),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, seconds: float) -> None:
    assert retry_after_seconds(header, now=NOW) == pytest.approx(seconds)


def problem_response(
    status: int, code: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {
        "type": f"https://keyrack.dev/problems/{code}",
        "title": "T",
        "status": status,
        "detail": "what went wrong",
        "request_id": "req_1",
    }
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "validation-error", ValidationError),
        (422, "validation-error", ValidationError),
        (401, "revoked-key", AuthenticationError),
        (403, "insufficient-permission", PermissionDeniedError),
        (404, "not-found", NotFoundError),
        (409, "conflict", ConflictError),
        (413, "payload-too-large", PayloadTooLargeError),
        (429, "rate-limited", RateLimitedError),
        (500, "internal-error", ServerError),
        (503, "unavailable", ServerError),
        (405, "method-not-allowed", APIError),
    ],
)
def test_each_error_status_maps_to_its_typed_error(
    status: int, code: str, cls: type[APIError]
) -> None:
    error = error_for(problem_response(status, code))
    assert type(error) is cls
    assert (error.status, error.code, error.request_id) == (status, code, "req_1")
    assert error.problem["detail"] == "what went wrong"
    assert str(error) == f"{status} {code}: what went wrong (request req_1)"


def test_an_error_without_a_problem_document_still_gets_one() -> None:
    error = error_for(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(error, ServerError)
    assert error.code == "502"
    assert error.problem["status"] == 502
    assert error.problem["detail"] == "<html>bad gateway</html>"


def test_rate_limited_error_carries_retry_after() -> None:
    error = error_for(problem_response(429, "concurrency-limited"), retry_after=2.0)
    assert isinstance(error, RateLimitedError)
    assert (error.code, error.retry_after) == ("concurrency-limited", 2.0)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("kr_live_" + "x" * 34 + "abcd", "kr_live_••••••••abcd"),
        ("kr_test_" + "x" * 34 + "wxyz", "kr_test_••••••••wxyz"),
        ("some-other-long-token-1234", "••••••••1234"),
        ("short", "••••••••"),
    ],
)
def test_a_key_is_shown_masked(key: str, shown: str) -> None:
    assert masked(key) == shown
