"""MemoryLimiter: the limits hold for any arrival pattern, and idle buckets are forgotten."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyrack.domain.limits import Decision, RateLimitPolicy
from keyrack.ratelimit.memory import MemoryLimiter

pytestmark = pytest.mark.anyio

MICRO = 1_000_000

# (microseconds since the previous step, acquire or release the n-th held lease)
steps = st.lists(
    st.tuples(st.integers(0, 400_000), st.none() | st.integers(0, 10)),
    max_size=120,
)


@given(
    rate=st.integers(1, 10),
    concurrency=st.integers(1, 3),
    lease_us=st.integers(1, 2 * MICRO),
    steps=steps,
)
async def test_any_arrivals_admit_at_most_rate_times_window_plus_burst_and_respect_concurrency(
    rate: int, concurrency: int, lease_us: int, steps: list[tuple[int, int | None]]
) -> None:
    policy = RateLimitPolicy(rate_per_second=rate, concurrency=concurrency)
    now = 5 * MICRO
    limiter = MemoryLimiter(lease_seconds=lease_us / MICRO, clock=lambda: now / MICRO)
    admitted: list[int] = []
    held: dict[str, int] = {}  # lease -> expiry microsecond

    for wait, release in steps:
        now += wait
        if release is not None:
            if held:
                lease = sorted(held)[release % len(held)]
                del held[lease]
                limiter.release("k", lease)
            continue
        live = sum(expiry > now for expiry in held.values())
        admission = await limiter.acquire("k", policy)
        # concurrency is exact: refused if and only if every slot is live
        assert (admission.decision is Decision.CONCURRENCY_LIMITED) == (live >= concurrency)
        if admission.allowed:
            assert admission.lease is not None
            held[admission.lease] = now + lease_us
            admitted.append(now)

    # any window [t_i, t_j] holds at most rate * (t_j - t_i) + rate admissions
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert (j - i + 1) * MICRO <= rate * (admitted[j] - start) + rate * MICRO


async def test_idle_buckets_are_forgotten_once_full_and_without_live_leases(clock) -> None:
    limiter = MemoryLimiter(lease_seconds=3, clock=clock)
    policy = RateLimitPolicy()
    for n in range(100):
        await limiter.acquire(f"idle-{n}", policy)  # leases never released
    assert len(limiter) == 100

    clock.advance(2.9)
    await limiter.acquire("busy", policy)
    assert len(limiter) == 101  # leases still live

    clock.advance(0.1)
    await limiter.acquire("busy", policy)
    assert len(limiter) == 1
