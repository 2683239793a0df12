"""Per-key limits at the gateway: 429s with Retry-After, RateLimit headers, slots released."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError

from keyrack.domain.limits import Admission, RateLimitPolicy
from keyrack.ratelimit.failover import FailoverLimiter
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.services import tenancy
from tests.conftest import OPERATOR, Seeded
from tests.gateway.conftest import FakeMonotonic, Serve, problem_code


def test_the_sixth_request_in_a_second_is_429_with_retry_after(
    api: httpx.Client, seeded: Seeded, limiter_clock: FakeMonotonic
) -> None:
    remaining = [
        api.get("/api/v2/health", headers=seeded.headers()).headers["ratelimit"] for _ in range(5)
    ]
    assert [r.split(";")[1] for r in remaining] == ["r=4", "r=3", "r=2", "r=1", "r=0"]
    refused = api.get("/api/v2/health", headers=seeded.headers())
    assert refused.status_code == 429 and problem_code(refused) == "rate-limited"
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-policy"] == '"key";q=5;w=1, "inflight";q=1'
    assert refused.headers["ratelimit"] == '"key";r=0;t=1'
    limiter_clock.advance(0.2)
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200


def test_limits_come_from_the_key_then_the_plan(
    api: httpx.Client, seeded: Seeded, limiter_clock: FakeMonotonic
) -> None:
    _, fast = seeded.new_key(rate_per_second=50, concurrency=3)
    response = api.get("/api/v2/health", headers=seeded.headers(fast))
    assert response.headers["ratelimit-policy"] == '"key";q=50;w=1, "inflight";q=3'
    tenancy.update_org(seeded.ctx, OPERATOR, "acme", plan_rate_per_second=20)
    planned = api.get("/api/v2/health", headers=seeded.headers())
    assert planned.headers["ratelimit-policy"] == '"key";q=20;w=1, "inflight";q=1'


def test_one_keys_limit_does_not_touch_another_key(
    api: httpx.Client, seeded: Seeded, limiter_clock: FakeMonotonic
) -> None:
    _, other = seeded.new_key()
    for _ in range(5):
        api.get("/api/v2/health", headers=seeded.headers())
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 429
    assert api.get("/api/v2/health", headers=seeded.headers(other)).status_code == 200


class WatchedLimiter(MemoryLimiter):
    """Tells the test when a slot is taken and when one is given back."""

    def __init__(self, clock: FakeMonotonic) -> None:
        super().__init__(clock=clock)
        self.acquired = threading.Event()
        self.released = threading.Event()

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        admission = await super().acquire(bucket, policy)
        if admission.allowed:
            self.acquired.set()
        return admission

    def release(self, bucket: str, lease: str) -> None:
        super().release(bucket, lease)
        self.released.set()


def _hold_a_request_open(url: str, secret: str) -> socket.socket:
    """Send headers of a POST whose body never comes: the request stays in flight."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(
        b"POST /api/v2/keys HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {secret}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"name": '
    )
    return sock


def test_a_second_request_in_flight_is_429_and_a_disconnect_frees_the_slot(
    app: FastAPI, serve: Serve, seeded: Seeded, limiter_clock: FakeMonotonic
) -> None:
    limiter = app.state.limiter = WatchedLimiter(limiter_clock)
    with serve(app) as api:
        held = _hold_a_request_open(str(api.base_url), seeded.secret)
        try:
            assert limiter.acquired.wait(10)
            refused = api.get("/api/v2/health", headers=seeded.headers())
            assert refused.status_code == 429 and problem_code(refused) == "concurrency-limited"
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["ratelimit"] == '"inflight";r=0;t=1'
        finally:
            held.close()
        assert limiter.released.wait(10)
        assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200


def test_throttled_and_refused_requests_are_counted_in_metrics(
    api: httpx.Client, seeded: Seeded
) -> None:
    for _ in range(6):
        api.get("/api/v2/health", headers=seeded.headers())
    api.get("/api/v2/health")
    text = api.get("/metrics").text
    assert 'keyrack_throttled_requests_total{code="rate-limited"} 1.0' in text
    assert 'keyrack_auth_failures_total{code="missing-key"} 1.0' in text
    assert 'keyrack_http_requests_total{method="GET",status="200"} 5.0' in text
    assert 'keyrack_http_requests_total{method="GET",status="429"} 1.0' in text
    assert "keyrack_http_request_duration_seconds_bucket" in text
    assert seeded.secret not in text


class BrokenLimiter(MemoryLimiter):
    """A shared limiter whose backend is down."""

    async def acquire(self, bucket: str, policy: RateLimitPolicy) -> Admission:
        raise RedisConnectionError("connection refused")


def test_when_the_shared_limiter_fails_requests_are_limited_per_process(
    app: FastAPI, serve: Serve, seeded: Seeded
) -> None:
    app.state.limiter = FailoverLimiter(BrokenLimiter(), MemoryLimiter())
    _, slow = seeded.new_key(rate_per_second=1)
    with serve(app) as api:
        statuses = [
            api.get("/api/v2/health", headers=seeded.headers(slow)).status_code for _ in range(3)
        ]
        other = api.get("/api/v2/health", headers=seeded.headers())
    assert statuses[0] == 200 and 429 in statuses  # still limited, never a 500
    assert other.status_code == 200 and other.headers["ratelimit-policy"].startswith('"key";q=5')


def test_when_the_shared_limiter_fails_verify_and_leak_reports_still_answer(
    app: FastAPI, serve: Serve, seeded: Seeded
) -> None:
    app.state.limiter = FailoverLimiter(BrokenLimiter(), MemoryLimiter())
    _, checker = seeded.new_key(permissions=["keys:verify"], rate_per_second=100)
    with serve(app) as api:
        verified = api.post(
            "/api/v2/keys/verify", headers=seeded.headers(checker), json={"key": seeded.secret}
        )
        reported = api.post("/api/v2/leaks", json=[{"token": "not-a-key"}])
    assert verified.status_code == 200 and verified.json()["code"] == "VALID"
    assert reported.status_code == 202


def test_metrics_want_the_token_when_one_is_set(app: FastAPI, serve: Serve, seeded: Seeded) -> None:
    seeded.ctx.settings.metrics_token = "scrape-token-0123456789"
    with serve(app) as api:
        missing = api.get("/metrics")
        wrong = api.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = api.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert right.status_code == 200 and "keyrack_http_requests_total" in right.text
