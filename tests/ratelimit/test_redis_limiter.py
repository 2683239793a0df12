"""RedisLimiter across instances, in real (Redis server) time unless a test moves a clock."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from keyrack.domain.limits import Decision, RateLimitPolicy
from keyrack.ratelimit.failover import FailoverLimiter
from keyrack.ratelimit.memory import MemoryLimiter
from keyrack.ratelimit.redis import RedisLimiter
from tests.redis_proxy import RedisProxy

pytestmark = pytest.mark.anyio


async def test_crashed_instances_slot_is_freed_for_another_instance_after_lease_seconds(
    connect, redis_prefix
) -> None:
    policy = RateLimitPolicy(rate_per_second=5, concurrency=1)
    crashed_client = connect()
    crashed = RedisLimiter(crashed_client, lease_seconds=0.2, prefix=redis_prefix)
    assert (await crashed.acquire("k", policy)).allowed
    await crashed.aclose()  # dies holding the lease
    await crashed_client.aclose()

    survivor = RedisLimiter(connect(), lease_seconds=0.2, prefix=redis_prefix)
    assert (await survivor.acquire("k", policy)).decision is Decision.CONCURRENCY_LIMITED
    await asyncio.sleep(0.25)
    assert (await survivor.acquire("k", policy)).allowed
    await survivor.aclose()


async def test_release_is_never_overtaken_by_the_same_instances_next_acquire(
    make_redis_limiter,
) -> None:
    limiter = make_redis_limiter()
    policy = RateLimitPolicy(rate_per_second=1_000, concurrency=1)
    for _ in range(200):
        admission = await limiter.acquire("k", policy)
        assert admission.allowed, admission
        limiter.release("k", admission.lease)


async def test_bucket_keys_expire_when_idle(connect, redis_prefix) -> None:
    client = connect()
    limiter = RedisLimiter(client, lease_seconds=0.2, prefix=redis_prefix)
    admission = await limiter.acquire("k", RateLimitPolicy())
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    assert sorted(keys) == [
        f"{redis_prefix}{{k}}:leases".encode(),
        f"{redis_prefix}{{k}}:tokens".encode(),
    ]
    for key in keys:
        assert 0 < await client.pttl(key) <= 2_000

    limiter.release("k", admission.lease)
    await limiter.aclose()
    assert await client.exists(f"{redis_prefix}{{k}}:leases") == 0


async def test_two_instances_hammering_one_bucket_admit_at_most_rate_times_window_plus_burst(
    make_redis_limiter,
) -> None:
    policy = RateLimitPolicy(rate_per_second=20, concurrency=3)
    instances = [make_redis_limiter(lease_seconds=5), make_redis_limiter(lease_seconds=5)]
    admitted = in_flight = most_in_flight = 0
    refused = {Decision.RATE_LIMITED: 0, Decision.CONCURRENCY_LIMITED: 0}
    start = time.monotonic()
    deadline = start + 1.2

    async def worker(limiter) -> None:
        nonlocal admitted, in_flight, most_in_flight
        while time.monotonic() < deadline:
            admission = await limiter.acquire("shared", policy)
            if not admission.allowed:
                refused[admission.decision] += 1
                continue
            admitted += 1
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            await asyncio.sleep(0.002)
            in_flight -= 1
            limiter.release("shared", admission.lease)

    await asyncio.gather(*(worker(limiter) for limiter in instances for _ in range(8)))
    window = time.monotonic() - start

    assert admitted <= policy.rate_per_second * window + policy.rate_per_second
    assert admitted >= policy.rate_per_second  # the burst at least: the test is not vacuous
    assert most_in_flight <= policy.concurrency
    assert refused[Decision.RATE_LIMITED] > 0
    assert refused[Decision.CONCURRENCY_LIMITED] > 0


async def _zrem_calls(client) -> int:
    """ZREM commands run by the server so far (every client, scripts included)."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_zrem", {}).get("calls", 0))


async def test_a_burst_of_releases_goes_out_in_one_zrem_per_bucket_and_aclose_sends_it(
    connect, redis_prefix
) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix)
    policy = RateLimitPolicy(rate_per_second=100, concurrency=100)
    buckets = ("a", "b", "c")
    leases = [
        (bucket, (await limiter.acquire(bucket, policy)).lease)
        for bucket in buckets
        for _ in range(40)
    ]
    before = await _zrem_calls(client)

    for bucket, lease in leases:
        limiter.release(bucket, lease)
    await limiter.aclose()

    sent = await _zrem_calls(client) - before
    assert 0 < sent < len(leases)  # other clients of this Redis can only add to it
    for bucket in buckets:
        assert await client.zcard(f"{redis_prefix}{{{bucket}}}:leases") == 0


async def test_a_release_reaches_redis_without_waiting_for_aclose(connect, redis_prefix) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix)
    admission = await limiter.acquire("k", RateLimitPolicy())
    leases_key = f"{redis_prefix}{{k}}:leases"

    limiter.release("k", admission.lease)
    async with asyncio.timeout(5):  # a guard against hanging, not a latency assertion
        while await client.exists(leases_key):
            await asyncio.sleep(0.001)
    await limiter.aclose()


async def test_a_grant_within_its_share_rides_on_the_next_call_or_goes_alone_later(
    connect, redis_prefix
) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix, grant_seconds=0.3)
    generous = RateLimitPolicy(rate_per_second=1_000, concurrency=100)  # 16 x a grant of 1

    admission = await limiter.acquire("a", generous)
    limiter.release("a", admission.lease)
    await asyncio.sleep(0.05)
    assert await client.zcard(f"{redis_prefix}{{a}}:leases") == 1  # still lent, for a moment
    held = await limiter.acquire("b", generous)  # written with the give-back
    assert await client.zcard(f"{redis_prefix}{{a}}:leases") == 0

    admission = await limiter.acquire("c", generous)
    limiter.release("c", admission.lease)
    await asyncio.sleep(0.05)
    assert await client.zcard(f"{redis_prefix}{{c}}:leases") == 1
    async with asyncio.timeout(5):  # no call to ride on: it goes alone after grant_seconds
        while await client.zcard(f"{redis_prefix}{{c}}:leases"):
            await asyncio.sleep(0.01)
    limiter.release("b", held.lease)
    await limiter.aclose()
    assert await client.zcard(f"{redis_prefix}{{b}}:leases") == 0  # aclose sent the last


async def test_a_release_that_could_not_reach_redis_goes_with_a_later_call(
    redis_url, redis_prefix, connect
) -> None:
    async with RedisProxy(redis_url) as proxy:
        client = Redis(host="127.0.0.1", port=proxy.port)
        try:
            limiter = RedisLimiter(client, prefix=redis_prefix)
            policy = RateLimitPolicy(rate_per_second=5, concurrency=1)
            admission = await limiter.acquire("k", policy)
            await proxy.cut()  # neither the release nor the acquire below can reach Redis

            limiter.release("k", admission.lease)
            with pytest.raises((RedisConnectionError, TimeoutError)):  # it carries the release
                await limiter.acquire("k", policy)
            await asyncio.sleep(0.1)  # nothing retries on its own while Redis is away
            proxy.mend()
            await limiter.aclose()

            assert await connect().zcard(f"{redis_prefix}{{k}}:leases") == 0
        finally:
            await client.aclose()


async def test_a_cut_connection_fails_what_is_in_flight_and_the_next_call_connects_again(
    redis_url, redis_prefix
) -> None:
    async with RedisProxy(redis_url) as proxy:
        client = Redis(host="127.0.0.1", port=proxy.port)
        try:
            limiter = RedisLimiter(client, prefix=redis_prefix)
            policy = RateLimitPolicy(rate_per_second=100, concurrency=100)
            assert (await limiter.acquire("a", policy)).allowed
            proxy.partition()  # bytes vanish: the next calls wait on Redis...
            waiting = [asyncio.create_task(limiter.acquire(b, policy)) for b in "bcd"]
            await asyncio.sleep(0.05)
            proxy.partitioned.clear()
            await proxy.cut()  # ...until the connection drops

            results = await asyncio.gather(*waiting, return_exceptions=True)
            assert all(isinstance(r, RedisConnectionError) for r in results)
            proxy.mend()
            assert (await limiter.acquire("e", policy)).allowed  # a new connection
            await limiter.aclose()
        finally:
            await client.aclose()


async def test_a_busy_bucket_is_served_from_growing_grants_and_gets_unused_tokens_back(
    connect, redis_prefix, clock
) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix, clock=clock)  # Redis time frozen
    policy = RateLimitPolicy(rate_per_second=100_000, concurrency=100_000)
    leases_key = f"{redis_prefix}{{k}}:leases"
    held = []
    for _ in range(4_000):
        admission = await limiter.acquire("k", policy)
        assert admission.allowed and admission.lease is not None
        held.append(admission.lease)

    slots = await client.zrange(leases_key, 0, -1)
    grants = {member.rpartition(b":")[0] for member in slots}
    assert len(slots) >= len(held)  # every admission holds a slot in Redis...
    assert len(grants) <= 13  # ...taken in grants of 1, 2, 4, ... (4,095 in 12)
    assert len(slots) > 1_000  # the last grants are bigger than Lua unpacks at once

    for lease in held:
        limiter.release("k", lease)
    await limiter.aclose()

    assert await client.zcard(leases_key) == 0
    tokens = int(await client.hget(f"{redis_prefix}{{k}}:tokens", "tokens"))
    assert tokens == (policy.rate_per_second - len(held)) * 1_000_000  # the unused came back
    await client.aclose()


async def test_concurrent_acquires_still_work_after_redis_lost_the_script(
    connect, redis_prefix
) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix)
    policy = RateLimitPolicy(rate_per_second=10, concurrency=10)
    assert (await limiter.acquire("k", policy)).allowed
    await client.script_flush()

    admissions = await asyncio.gather(*(limiter.acquire("k", policy) for _ in range(5)))

    assert all(admission.allowed for admission in admissions)
    await limiter.aclose()


async def test_a_stalled_redis_fails_the_acquire_and_the_failover_limits_per_process() -> None:
    with socket.create_server(("127.0.0.1", 0)) as stalled:  # accepts, never answers
        host, port = stalled.getsockname()[:2]
        client = Redis(host=host, port=port, socket_timeout=None)
        shared = RedisLimiter(client, timeout=0.2)
        try:
            with pytest.raises(TimeoutError):
                await shared.acquire("k", RateLimitPolicy())
            failover = FailoverLimiter(shared, MemoryLimiter())
            admission = await failover.acquire("k", RateLimitPolicy())
            assert admission.allowed and failover.down
        finally:
            await client.aclose()


async def test_grants_never_let_instances_together_exceed_the_limits(
    make_redis_limiter, clock
) -> None:
    policy = RateLimitPolicy(rate_per_second=64, concurrency=48)  # grants of up to 3
    one, two = make_redis_limiter(clock=clock), make_redis_limiter(clock=clock)
    held: list[tuple[object, str]] = []
    refused = set()
    while len(refused) < 2:  # interleaved until both are refused (Redis time frozen)
        for limiter in (one, two):
            admission = await limiter.acquire("k", policy)
            if admission.allowed:
                held.append((limiter, admission.lease))
            else:
                refused.add(limiter)
                assert admission.decision is Decision.CONCURRENCY_LIMITED
    assert len(held) == policy.concurrency

    for limiter, lease in held:
        limiter.release("k", lease)
    await one.aclose()
    await two.aclose()  # what the grants did not use went back
    third = make_redis_limiter(clock=clock)
    more = 0
    while (admission := await third.acquire("k", policy)).allowed:
        more += 1
        third.release("k", admission.lease)
    assert admission.decision is Decision.RATE_LIMITED
    assert len(held) + more == policy.rate_per_second


async def test_a_grant_that_expires_with_tokens_left_makes_the_next_one_smaller(
    connect, redis_prefix, clock
) -> None:
    client = connect()
    # grants live a minute on ``clock``, moved by hand: no timer fires during the burst
    limiter = RedisLimiter(client, prefix=redis_prefix, grant_seconds=60, grant_clock=clock)
    policy = RateLimitPolicy(rate_per_second=100_000, concurrency=100_000)
    leases_key = f"{redis_prefix}{{k}}:leases"

    for _ in range(100):  # a burst, all held: grants of 1, 2, 4, ... 64
        assert (await limiter.acquire("k", policy)).allowed
    burst = await _grant_sizes(client, leases_key)
    biggest = max(burst.values())
    assert biggest == 64 and len(burst) == 7  # 1 + 2 + ... + 64 = 127 slots, 100 used

    clock.advance(61)  # the last grant expires with 27 tokens unused
    assert (await limiter.acquire("k", policy)).allowed
    sizes = await _grant_sizes(client, leases_key)
    [(_, after)] = [(g, n) for g, n in sizes.items() if g not in burst]
    assert after == biggest // 2
    await limiter.aclose()
    await client.aclose()


async def test_a_bucket_asked_again_after_a_grants_lifetime_starts_again_at_one(
    connect, redis_prefix, clock
) -> None:
    client = connect()
    limiter = RedisLimiter(client, prefix=redis_prefix, grant_seconds=60, grant_clock=clock)
    policy = RateLimitPolicy(rate_per_second=100_000, concurrency=100_000)
    leases_key = f"{redis_prefix}{{k}}:leases"

    for _ in range(3):  # grants of 1 and 2, used up: the next would be 4
        assert (await limiter.acquire("k", policy)).allowed
    before = await _grant_sizes(client, leases_key)
    assert sorted(before.values()) == [1, 2]

    clock.advance(61)  # quiet for longer than a grant lives
    assert (await limiter.acquire("k", policy)).allowed
    after_quiet = await _grant_sizes(client, leases_key)
    assert [n for g, n in after_quiet.items() if g not in before] == [1]  # a grant of one

    assert (await limiter.acquire("k", policy)).allowed  # asked again at once: it grows
    sizes = await _grant_sizes(client, leases_key)
    assert [n for g, n in sizes.items() if g not in after_quiet] == [2]
    await limiter.aclose()
    await client.aclose()


async def _grant_sizes(client: Redis, leases_key: str) -> dict[bytes, int]:
    """The slots each grant holds in the bucket's leases."""
    sizes: dict[bytes, int] = {}
    for member in await client.zrange(leases_key, 0, -1):
        grant = member.rpartition(b":")[0]
        sizes[grant] = sizes.get(grant, 0) + 1
    return sizes
