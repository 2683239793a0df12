"""A key that once worked says when and why it no longer does: deleted for inactivity,
past its ``expires_at``, or replaced by a newer secret (through the real gateway)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from keyrack.domain.keys import Environment, generate
from keyrack.services import jobs, keys
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.gateway.conftest import problem_code
from tests.gateway.test_cache import statements

DAY = timedelta(days=1)


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    return response.status_code, problem_code(response), response.json()["detail"]


def test_a_key_deleted_for_inactivity_is_expired_key_saying_when_and_after_how_long(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    assert api.get("/api/v2/health", headers=seeded.headers()).status_code == 200
    created = seeded.key.created_at
    assert jobs.sweep(seeded.ctx, created + 90 * DAY).expired == 1
    clock.now = created + 91 * DAY
    expected = (
        401,
        "expired-key",
        "the API key was deleted on 2026-04-05 after 90 days unused;"
        " create a new key in Settings → API",
    )
    assert refusal(api.get("/api/v2/health", headers=seeded.headers())) == expected
    with statements(seeded.ctx) as seen:  # the answer is cached like any other miss
        for _ in range(5):
            response = api.get("/api/v2/health", headers=seeded.headers())
            assert refusal(response) == expected
    assert seen == []


def test_a_key_past_its_expires_at_says_so_before_and_after_the_sweep(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    expires = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
    _, secret = seeded.new_key(expires_at=expires)
    assert api.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
    expected = (
        401,
        "expired-key",
        "the API key expired on 2026-01-20, the expiry date set on it;"
        " create a new key in Settings → API",
    )
    clock.now = expires
    assert refusal(api.get("/api/v2/health", headers=seeded.headers(secret))) == expected
    assert jobs.sweep(seeded.ctx, expires).expired == 1
    clock.advance(30 * DAY)
    assert refusal(api.get("/api/v2/health", headers=seeded.headers(secret))) == expected


def test_a_rolled_away_secret_is_revoked_key_replaced_by_a_newer_one(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    plain_view, plain = seeded.new_key(name="rolled at once")
    graced_view, graced = seeded.new_key(name="rolled with grace")
    keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, plain_view.ref)
    keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, graced_view.ref, grace=timedelta(hours=2))
    assert refusal(api.get("/api/v2/health", headers=seeded.headers(plain))) == (
        401,
        "revoked-key",
        "this secret was replaced by a newer secret on 2026-01-05; use the new secret",
    )
    assert api.get("/api/v2/health", headers=seeded.headers(graced)).status_code == 200
    clock.advance(timedelta(hours=2))
    assert refusal(api.get("/api/v2/health", headers=seeded.headers(graced))) == (
        401,
        "revoked-key",
        "this secret was replaced by a newer secret; its grace period ended on"
        " 2026-01-05 11:00 UTC; use the new secret",
    )


def test_a_secret_replaced_before_its_key_expired_still_says_it_was_replaced(
    api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref, grace=timedelta(hours=1))
    clock.advance(3 * DAY)
    _, current = keys.roll_key(seeded.ctx, OPERATOR, seeded.scope, seeded.key.ref)
    assert jobs.sweep(seeded.ctx, seeded.key.created_at + 93 * DAY).expired == 1
    clock.advance(100 * DAY)
    old = refusal(api.get("/api/v2/health", headers=seeded.headers()))
    assert old == (
        401,
        "revoked-key",
        "this secret was replaced by a newer secret on 2026-01-05; use the new secret",
    )
    latest = refusal(api.get("/api/v2/health", headers=seeded.headers(current)))
    assert latest[:2] == (401, "expired-key") and "after 90 days unused" in latest[2]


def test_an_unknown_well_formed_key_is_still_just_invalid(
    api: httpx.Client, seeded: Seeded
) -> None:
    unknown = generate(Environment.SANDBOX).secret
    assert refusal(api.get("/api/v2/health", headers=seeded.headers(unknown))) == (
        401,
        "invalid-key",
        "the API key is not valid",
    )
