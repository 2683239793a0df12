"""The limiter contract, run against every backend (see keyrack.ratelimit.base)."""

from __future__ import annotations

import pytest

from keyrack.domain.limits import Decision, RateLimitPolicy

pytestmark = pytest.mark.anyio

POLICY = RateLimitPolicy(rate_per_second=5, concurrency=1)


async def admit(limiter, bucket: str, policy: RateLimitPolicy = POLICY) -> str:
    admission = await limiter.acquire(bucket, policy)
    assert admission.decision is Decision.ALLOWED, admission
    assert admission.lease is not None
    return admission.lease


async def drain(limiter, bucket: str, policy: RateLimitPolicy = POLICY) -> None:
    for _ in range(policy.rate_per_second):
        limiter.release(bucket, await admit(limiter, bucket, policy))


async def test_fresh_bucket_admits_rate_requests_then_refuses_with_retry_after(limiter):
    remaining = []
    for _ in range(POLICY.rate_per_second):
        admission = await limiter.acquire("k", POLICY)
        assert admission.allowed
        assert 0 < admission.reset_seconds <= 1
        remaining.append(admission.remaining)
        limiter.release("k", admission.lease)
    assert remaining == [4, 3, 2, 1, 0]

    refused = await limiter.acquire("k", POLICY)
    assert refused.decision is Decision.RATE_LIMITED
    assert refused.lease is None
    assert refused.remaining == 0
    assert refused.reset_seconds == pytest.approx(1 / POLICY.rate_per_second)
    assert refused.retry_after >= 1


async def test_tokens_refill_at_rate_per_second(limiter, clock):
    await drain(limiter, "k")
    clock.advance(0.1)
    assert (await limiter.acquire("k", POLICY)).decision is Decision.RATE_LIMITED

    clock.advance(0.1)  # 0.2 s = one token at 5/s
    limiter.release("k", await admit(limiter, "k"))
    assert (await limiter.acquire("k", POLICY)).decision is Decision.RATE_LIMITED

    clock.advance(0.5)  # 2.5 tokens
    limiter.release("k", await admit(limiter, "k"))
    clock.advance(10)  # 1.5 + 50 tokens, capped at capacity
    await drain(limiter, "k")
    assert (await limiter.acquire("k", POLICY)).decision is Decision.RATE_LIMITED


async def test_rate_limited_request_succeeds_exactly_after_reset_seconds(limiter, clock):
    await drain(limiter, "k")
    refused = await limiter.acquire("k", POLICY)
    assert refused.decision is Decision.RATE_LIMITED

    clock.advance(refused.reset_seconds - 1e-6)
    assert (await limiter.acquire("k", POLICY)).decision is Decision.RATE_LIMITED
    clock.advance(1e-6)
    await admit(limiter, "k")


async def test_second_request_while_first_in_flight_is_concurrency_limited_until_released(
    limiter,
):
    first = await admit(limiter, "k")
    refused = await limiter.acquire("k", POLICY)
    assert refused.decision is Decision.CONCURRENCY_LIMITED
    assert refused.lease is None
    assert refused.reset_seconds > 0
    assert refused.retry_after >= 1

    limiter.release("k", first)
    await admit(limiter, "k")


async def test_refused_concurrency_attempt_does_not_consume_a_rate_token(limiter):
    policy = RateLimitPolicy(rate_per_second=2, concurrency=1)
    first = await admit(limiter, "k", policy)
    for _ in range(5):
        assert (await limiter.acquire("k", policy)).decision is Decision.CONCURRENCY_LIMITED
    limiter.release("k", first)

    second = await limiter.acquire("k", policy)
    assert second.allowed
    assert second.remaining == 0


async def test_rate_limited_attempt_does_not_take_an_in_flight_slot(limiter, clock):
    policy = RateLimitPolicy(rate_per_second=1, concurrency=2)
    await admit(limiter, "k", policy)  # held for the whole test
    assert (await limiter.acquire("k", policy)).decision is Decision.RATE_LIMITED

    clock.advance(1)
    await admit(limiter, "k", policy)  # the second slot is still free
    assert (await limiter.acquire("k", policy)).decision is Decision.CONCURRENCY_LIMITED


async def test_crashed_holders_slot_is_freed_after_lease_seconds(make_limiter, clock):
    limiter = make_limiter(lease_seconds=0.2, clock=clock)
    await admit(limiter, "k")  # never released

    clock.advance(0.19)
    assert (await limiter.acquire("k", POLICY)).decision is Decision.CONCURRENCY_LIMITED
    clock.advance(0.01)
    await admit(limiter, "k")


async def test_releasing_a_lease_twice_frees_only_that_lease(limiter):
    policy = RateLimitPolicy(rate_per_second=5, concurrency=2)
    first = await admit(limiter, "k", policy)
    await admit(limiter, "k", policy)
    limiter.release("k", first)
    limiter.release("k", first)
    limiter.release("k", "no-such-lease")

    await admit(limiter, "k", policy)
    assert (await limiter.acquire("k", policy)).decision is Decision.CONCURRENCY_LIMITED


async def test_buckets_are_independent(limiter):
    await drain(limiter, "a")
    held = await admit(limiter, "b")
    assert (await limiter.acquire("a", POLICY)).decision is Decision.RATE_LIMITED
    assert (await limiter.acquire("b", POLICY)).decision is Decision.CONCURRENCY_LIMITED

    limiter.release("b", held)
    assert (await limiter.acquire("c", POLICY)).remaining == POLICY.rate_per_second - 1


async def test_admission_reports_the_policy_it_was_judged_by(limiter):
    policy = RateLimitPolicy(rate_per_second=3, concurrency=2)
    admission = await limiter.acquire("k", policy)
    assert admission.policy == policy
    assert admission.header == '"key";r=2;t=1'
