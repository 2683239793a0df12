"""Usage analytics per key (SPEC §6.3): exact across instances, written behind, rolled up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event, func, select

from keyrack.config import Settings
from keyrack.domain import usage
from keyrack.domain.usage import Granularity
from keyrack.server import create_app
from keyrack.services import key_usage
from keyrack.services.context import Context
from keyrack.storage.database import Database
from keyrack.storage.tables.key_usage import KeyUsage, KeyUsageProblem
from tests.conftest import MutableClock, Seeded, seed_org
from tests.gateway.conftest import Serve


def test_two_instances_count_every_request_once_429s_included(
    ctx: Context, settings: Settings, seeded: Seeded, serve: Serve, clock: MutableClock
) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("two server instances share a PostgreSQL database")
    view, secret = seeded.new_key(rate_per_second=20, concurrency=2, permissions=["keys:manage"])
    one = Context(settings=settings, db=Database(settings.database_url), clock=ctx.clock)
    two = Context(settings=settings, db=Database(settings.database_url), clock=ctx.clock)
    paths = ["/api/v2/health", "/api/v2/keys/self", "/api/v2/clients"]  # the last: 403
    sent = 0
    try:
        with serve(create_app(ctx=one)) as api_one, serve(create_app(ctx=two)) as api_two:
            writes: list[str] = []

            def listener(*args: object) -> None:
                if "key_usage" in str(args[2]):
                    writes.append(str(args[2]))

            event.listen(one.db.engine, "before_cursor_execute", listener)

            def call(i: int) -> int:
                client = (api_one, api_two)[i % 2]
                path = paths[i % len(paths)]
                return client.get(path, headers=seeded.headers(secret)).status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(call, range(300)))
            sent = len(statuses)
            # written behind: nothing per request, at most a periodic flush or two while a
            # loaded machine takes over its interval to serve the 300
            assert len(writes) < 10
            event.remove(one.db.engine, "before_cursor_execute", listener)
        # both servers are shut down: each flushed what it counted
        found = key_usage.series(
            ctx,
            seeded.scope,
            view.ref,
            start=clock.now - timedelta(minutes=1),
            end=clock.now + timedelta(minutes=1),
        )
    finally:
        one.db.dispose()
        two.db.dispose()
    total = found.total.counts
    assert total[usage.REQUESTS] == sent == sum(p.counts[usage.REQUESTS] for p in found.points)
    assert total[usage.RATE_LIMITED] == statuses.count(429) > 0
    assert total[usage.SUCCESSES] == statuses.count(200) > 0
    assert found.total.problems.get("insufficient-permission", 0) == statuses.count(403) > 0
    assert sum(found.total.problems.values()) == sum(1 for s in statuses if 400 <= s < 500)
    assert sum(found.total.histogram) == sent


def test_the_usage_route_shows_the_series_within_the_key_scope(
    app: object, api: httpx.Client, seeded: Seeded, clock: MutableClock
) -> None:
    minute = Granularity.MINUTE.floor(clock.now)
    counts = usage.new_tally()
    for status, seconds in ((200, 0.003), (200, 0.004), (429, 0.0005), (404, 0.02)):
        usage.tally(counts, status, seconds)
    key_usage.record(
        seeded.ctx,
        {(seeded.key.id, minute - timedelta(minutes=2)): counts},
        {(seeded.key.id, minute - timedelta(minutes=2), "not-found"): 1},
    )
    response = api.get(
        f"/api/v2/keys/{seeded.key.ref}/usage",
        params={
            "from": (minute - timedelta(minutes=5)).isoformat(),
            "to": minute.isoformat(),
            "granularity": "minute",
        },
        headers=seeded.headers(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key"] == seeded.key.ref and body["granularity"] == "minute"
    assert len(body["series"]) == 5 and "from" in body and "to" in body
    point = body["series"][3]
    assert point["requests"] == 4 and point["successes"] == 2 and point["rate_limited"] == 1
    assert point["problems"] == {"not-found": 1}
    assert point["latency"] == {"p50_ms": 5, "p99_ms": 20}
    assert body["total"]["requests"] == 4
    hourly = api.get(
        f"/api/v2/keys/{seeded.key.ref}/usage",
        params={"granularity": "hour"},
        headers=seeded.headers(),
    ).json()
    assert hourly["total"]["requests"] == 4

    other = seed_org(seeded.ctx, "other")
    hidden = api.get(f"/api/v2/keys/{other.key.ref}/usage", headers=seeded.headers())
    assert hidden.status_code == 404
    for params in ({"granularity": "week"}, {"from": minute.isoformat(), "to": minute.isoformat()}):
        bad = api.get(
            f"/api/v2/keys/{seeded.key.ref}/usage", params=params, headers=seeded.headers()
        )
        assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith(
            "application/problem+json"
        )


def test_minutes_roll_up_to_hours_after_7_days_and_go_after_90(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx = seeded.ctx
    old = Granularity.HOUR.floor(clock.now - timedelta(days=8))
    ancient = clock.now - timedelta(days=91)
    tallies = {}
    problems = {}
    for minute in range(3):
        counts = usage.new_tally()
        usage.tally(counts, 200, 0.001 * (minute + 1))
        usage.tally(counts, 429, 0.001)
        tallies[(seeded.key.id, old + timedelta(minutes=minute))] = counts
        problems[(seeded.key.id, old + timedelta(minutes=minute), "rate-limited")] = 1
    recent = usage.new_tally()
    usage.tally(recent, 200, 0.001)
    tallies[(seeded.key.id, Granularity.MINUTE.floor(clock.now))] = recent
    key_usage.record(ctx, tallies, problems)
    key_usage.record(ctx, {(seeded.key.id, ancient): recent}, {}, period="hour")
    before = key_usage.series(
        ctx,
        seeded.scope,
        seeded.key.ref,
        start=old,
        end=old + timedelta(hours=1),
        granularity=Granularity.HOUR,
    )

    report = key_usage.roll_up(ctx, limit=2)
    assert report.rolled_up == 3 and report.deleted == 1
    with ctx.db.session() as session:
        rows = session.execute(
            select(KeyUsage.period, func.count())
            .group_by(KeyUsage.period)
            .order_by(KeyUsage.period)
        ).all()
        problem_rows = session.execute(select(KeyUsageProblem.period, KeyUsageProblem.count)).all()
    assert [tuple(row) for row in rows] == [("hour", 1), ("minute", 1)]
    assert [tuple(row) for row in problem_rows] == [("hour", 3)]
    after = key_usage.series(
        ctx,
        seeded.scope,
        seeded.key.ref,
        start=old,
        end=old + timedelta(hours=1),
        granularity=Granularity.HOUR,
    )
    assert after.total.counts == before.total.counts and after.total.counts[usage.REQUESTS] == 6
    assert after.total.problems == {"rate-limited": 3}
    assert key_usage.roll_up(ctx) == key_usage.RollUp(0, 0)
