"""The gateway's rules as plain functions, and the one builder of a 429's headers."""

from __future__ import annotations

import pytest

from keyrack.domain import admission
from keyrack.domain.keys import Environment
from keyrack.domain.limits import Admission, Decision, RateLimitPolicy, throttled_headers
from keyrack.domain.verification import KeyIdentity, KeyStatus, Verdict, VerdictStatus

POLICY = RateLimitPolicy(rate_per_second=5, concurrency=1)


def identity(**changes: object) -> KeyIdentity:
    fields: dict[str, object] = {
        "key_id": 1,
        "ref": "key_1",
        "name": "k",
        "org_id": 1,
        "org_slug": "acme",
        "org_api_enabled": True,
        "location_id": None,
        "owner_id": None,
        "environment": Environment.SANDBOX,
        "permissions": frozenset(),
        "rate_per_second": 5,
        "concurrency": 1,
        "status": KeyStatus.ACTIVE,
        "expires_at": None,
        "secret_valid_until": None,
    }
    return KeyIdentity(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert throttled_headers(seconds) == {"Retry-After": header}


def test_a_limiters_refusal_says_its_bucket_policy_and_state_too() -> None:
    refused = Admission(Decision.RATE_LIMITED, 0, 0.3, POLICY)
    refusal = admission.check_admission(refused)
    assert refusal is not None and refusal.code == "rate-limited"
    assert refusal.headers == {
        "Retry-After": "1",
        "RateLimit-Policy": '"key";q=5;w=1, "inflight";q=1',
        "RateLimit": '"key";r=0;t=1',
    }
    busy = admission.check_admission(Admission(Decision.CONCURRENCY_LIMITED, 3, 1.0, POLICY))
    assert busy is not None and busy.code == "concurrency-limited"
    # what refused it: no in-flight slot left, not the 3 tokens of the rate bucket
    assert busy.headers is not None and busy.headers["RateLimit"] == '"inflight";r=0;t=1'
    assert admission.check_admission(Admission(Decision.ALLOWED, 4, 0.2, POLICY, "1")) is None


@pytest.mark.parametrize(
    ("scheme", "forwarded", "refused"),
    [
        ("https", None, False),
        ("http", "https", False),
        ("http", "http, https", False),  # the proxy's own word is the last
        ("http", "https, http", True),
        ("http", None, True),
    ],
)
def test_a_key_must_have_come_over_https(scheme: str, forwarded: str | None, refused: bool) -> None:
    expected = admission.TLS_REQUIRED if refused else None
    assert admission.check_transport(scheme, forwarded) == expected


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (VerdictStatus.MALFORMED, "malformed-key"),
        (VerdictStatus.NOT_FOUND, "invalid-key"),
        (VerdictStatus.REVOKED, "revoked-key"),
        (VerdictStatus.EXPIRED, "expired-key"),
        (VerdictStatus.DISABLED, "api-disabled"),
    ],
)
def test_each_failed_verdict_has_its_refusal(status: VerdictStatus, code: str) -> None:
    found = admission.check_verdict(Verdict(status, identity()))
    assert isinstance(found, admission.Refusal) and found.code == code


def test_a_valid_verdict_gives_its_key() -> None:
    key = identity()
    assert admission.check_verdict(Verdict(VerdictStatus.VALID, key)) is key


@pytest.mark.parametrize(
    ("key", "host", "origin", "ip", "refusal"),
    [
        (identity(), "acme.localhost:8000", None, "10.0.0.1", None),
        (identity(), "globex.localhost", None, "10.0.0.1", admission.WRONG_TENANT),
        (identity(), "api.example.com", None, "10.0.0.1", None),  # not an instance host
        (identity(), None, "https://app.test", None, admission.BROWSER_ORIGIN),
        (identity(allowed_origins=("https://app.test",)), None, "https://APP.test/", None, None),
        (identity(allowed_cidrs=("10.0.0.0/8",)), None, None, "10.1.2.3", None),
        (
            identity(allowed_cidrs=("10.0.0.0/8",)),
            None,
            None,
            "192.0.2.1",
            admission.IP_NOT_ALLOWED,
        ),
        (identity(allowed_cidrs=("10.0.0.0/8",)), None, None, None, admission.IP_NOT_ALLOWED),
    ],
)
def test_a_key_is_held_to_its_host_origin_and_addresses(
    key: KeyIdentity,
    host: str | None,
    origin: str | None,
    ip: str | None,
    refusal: admission.Refusal | None,
) -> None:
    assert admission.check_identity(key, host, ".localhost", origin, ip) == refusal
