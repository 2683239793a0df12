"""The SDK against the server's throttle: paced clients never see a 429; unpaced ones retry.

Statuses are counted through httpx event hooks on the real client, so every 429
the server sent is seen, including the ones the client retried.
"""

from __future__ import annotations

import threading
import time

import pytest

from keyrack.client import Client, RateLimitedError
from tests.conftest import Seeded
from tests.sdk.conftest import Wire


def test_a_paced_client_shared_by_three_threads_never_meets_a_429(
    live_url: str, seeded: Seeded, wire: Wire
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], rate_per_second=5, concurrency=1)
    answers: list[int] = []
    errors: list[BaseException] = []

    with Client(secret, base_url=live_url, event_hooks=wire.hooks()) as client:

        def burst() -> None:
            try:
                for _ in range(4):
                    answers.append(len(client.keys.list(limit=1).data))
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        started = time.monotonic()
        threads = [threading.Thread(target=burst) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started

    assert errors == []
    assert answers == [1] * 12
    assert wire.statuses == [200] * 12
    # Sanity only: 12 starts spaced 1/5 s apart cannot take less than 11/5 s.
    assert elapsed >= 2.0


def test_a_client_paced_faster_than_its_key_slows_down_to_the_servers_policy(
    live_url: str, seeded: Seeded, wire: Wire
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], rate_per_second=1, concurrency=1)
    with Client(secret, base_url=live_url, event_hooks=wire.hooks()) as client:
        for _ in range(3):
            client.keys.list(limit=1)
    assert wire.statuses == [200, 200, 200]


def test_an_unpaced_client_is_answered_429_and_retries_after_retry_after(
    live_url: str, seeded: Seeded, wire: Wire
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], rate_per_second=1, concurrency=1)
    with Client(
        secret, base_url=live_url, rate_per_second=None, event_hooks=wire.hooks()
    ) as client:
        results = [client.keys.list(limit=1) for _ in range(3)]

    assert [len(page.data) for page in results] == [1, 1, 1]
    assert 429 in wire.statuses
    assert wire.statuses.count(200) == 3
    assert wire.statuses[-1] == 200
    # Every 429 was followed by a retry of the same request, not by giving up.
    assert len(wire.requests) == len(wire.statuses)


def test_when_retries_run_out_rate_limited_error_carries_retry_after_and_the_problem(
    live_url: str, seeded: Seeded, wire: Wire
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], rate_per_second=1, concurrency=1)
    # One token a second: of back-to-back requests, one finds the bucket empty unless each
    # took a second (a loaded machine can make one request that slow, not ten).
    with (
        Client(
            secret, base_url=live_url, rate_per_second=None, max_retries=0, event_hooks=wire.hooks()
        ) as client,
        pytest.raises(RateLimitedError) as caught,
    ):
        for _ in range(10):
            client.keys.list(limit=1)

    error = caught.value
    assert (error.status, error.code) == (429, "rate-limited")
    assert error.retry_after >= 1
    assert error.problem["type"] == "https://keyrack.dev/problems/rate-limited"
    assert wire.statuses[-1] == 429 and set(wire.statuses[:-1]) == {200}
    assert len(wire.requests) == len(wire.statuses)  # the 429 was not retried


def test_a_second_unpaced_client_on_the_same_key_is_throttled_but_the_paced_one_recovers(
    live_url: str, seeded: Seeded, wire: Wire
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], rate_per_second=2, concurrency=1)
    hammer_wire = Wire()
    with (
        Client(secret, base_url=live_url, rate_per_second=2, event_hooks=wire.hooks()) as paced,
        Client(
            secret,
            base_url=live_url,
            rate_per_second=None,
            max_retries=0,
            event_hooks=hammer_wire.hooks(),
        ) as hammer,
    ):
        for _ in range(2):
            with pytest.raises(RateLimitedError):
                while True:  # drain the key's bucket until the server refuses
                    hammer.keys.list(limit=1)
            assert len(paced.keys.list(limit=1).data) == 1

    assert 429 in wire.statuses
    assert wire.statuses.count(200) == 2
