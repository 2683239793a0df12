"""Usage analytics per key (SPEC §6.3): the write-behind flush, the series, the roll-up.

``record`` adds a flush's tallies to the stored minutes with one upsert per few
hundred rows (``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``), so any
number of instances flushing the same minute add up exactly. ``series`` reads a key's
usage at minute, hour or day granularity (the same scope rules as reading the key).
``roll_up`` (a periodic job) folds minutes older than 7 days into hours and deletes
what is older than 90 days.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from keyrack.domain import usage
from keyrack.domain.tenancy import Scope
from keyrack.domain.usage import (
    FIRST_BUCKET,
    KEPT,
    MAX_POINTS,
    MINUTES_KEPT,
    Granularity,
)
from keyrack.errors import InvalidInput
from keyrack.services.context import Context
from keyrack.services.keys import key_in_scope
from keyrack.storage import bulk
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.key_usage import LATENCY_COLUMNS, KeyUsage, KeyUsageProblem
from keyrack.storage.tables.keys import ApiKey

BATCH = 500
"""Rows per upsert statement."""
MINUTE, HOUR = "minute", "hour"

Tallies = Mapping[tuple[int, datetime], list[int]]
"""(key id, minute start) → a ``keyrack.domain.usage`` tally."""
Problems = Mapping[tuple[int, datetime, str], int]
"""(key id, minute start, problem code) → 4xx answers."""


def record(ctx: Context, tallies: Tallies, problems: Problems, *, period: str = MINUTE) -> None:
    """Add the tallies and problem counts to what is stored, in one transaction."""
    if not tallies and not problems:
        return
    with ctx.db.transaction() as session:
        _add(session, tallies, problems, period)


_COUNTED = ("requests", "successes", "rate_limited", *LATENCY_COLUMNS)
_USAGE_COLUMNS = ("key_id", "period", "start", *_COUNTED)
_USAGE_TYPES = ("integer", "text", "timestamptz", *["integer"] * len(_COUNTED))
_USAGE_SET = ", ".join(f"{name} = key_usage.{name} + excluded.{name}" for name in _COUNTED)
_PROBLEM_COLUMNS = ("key_id", "period", "start", "code", "count")
_PROBLEM_TYPES = ("integer", "text", "timestamptz", "text", "integer")
_PROBLEM_SET = "count = key_usage_problems.count + excluded.count"


def _add(session: Session, tallies: Tallies, problems: Problems, period: str) -> None:
    """Upsert adding counts: one statement per ``BATCH`` rows, the rows sent as one JSON
    parameter (``bulk.json_rows``: a few µs a row, where bound expressions cost ~75)."""
    connection = session.connection()
    time_text = bulk.json_times(connection)
    items = list(tallies.items())
    for chunk_start in range(0, len(items), BATCH):
        rows = [
            (key_id, period, time_text(start), *counts)
            for (key_id, start), counts in items[chunk_start : chunk_start + BATCH]
        ]
        bulk.upsert_json_rows(
            connection,
            "key_usage",
            _USAGE_COLUMNS,
            _USAGE_TYPES,
            ("key_id", "period", "start"),
            _USAGE_SET,
            rows,
        )
    problem_items = list(problems.items())
    for chunk_start in range(0, len(problem_items), BATCH):
        rows = [
            (key_id, period, time_text(start), code, count)
            for (key_id, start, code), count in problem_items[chunk_start : chunk_start + BATCH]
        ]
        bulk.upsert_json_rows(
            connection,
            "key_usage_problems",
            _PROBLEM_COLUMNS,
            _PROBLEM_TYPES,
            ("key_id", "period", "start", "code"),
            _PROBLEM_SET,
            rows,
        )


@dataclass(slots=True)
class Point:
    """One bucket of a series."""

    start: datetime
    counts: list[int] = field(default_factory=usage.new_tally)
    problems: dict[str, int] = field(default_factory=dict)

    @property
    def histogram(self) -> list[int]:
        return self.counts[FIRST_BUCKET:]


@dataclass(frozen=True, slots=True)
class Series:
    ref: str
    granularity: Granularity
    start: datetime
    end: datetime
    points: list[Point]
    total: Point


def series(
    ctx: Context,
    scope: Scope,
    ref: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    granularity: Granularity = Granularity.MINUTE,
) -> Series:
    """The key's usage from ``start`` to ``end`` (bucket starts in [start, end)), dense:
    a point per bucket, zeros included. Minutes are there for the last 7 days only."""
    step = granularity.step
    if end is None:
        end = granularity.floor(ctx.clock()) + step
    start = start or end - 60 * step
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("from and to need a time zone (e.g. 2026-01-05T09:00:00Z)")
    first = granularity.floor(start)
    if first >= end:
        raise InvalidInput("from must be before to")
    if (end - first) / step > MAX_POINTS:
        raise InvalidInput(f"at most {MAX_POINTS} points: widen the granularity")
    points: dict[datetime, Point] = {}
    moment = first
    while moment < end:
        points[moment] = Point(moment)
        moment += step
    total = Point(first)
    with ctx.db.session() as session:
        key = key_in_scope(session, scope, ref)
        periods = [MINUTE] if granularity is Granularity.MINUTE else [MINUTE, HOUR]
        rows = session.execute(
            select(KeyUsage).where(
                KeyUsage.key_id == key.id,
                KeyUsage.period.in_(periods),
                KeyUsage.start >= first,
                KeyUsage.start < end,
            )
        ).scalars()
        for row in rows:
            counts = [row.requests, row.successes, row.rate_limited]
            counts += [getattr(row, name) for name in LATENCY_COLUMNS]
            point = points[granularity.floor(row.start)]
            usage.add(point.counts, counts)
            usage.add(total.counts, counts)
        for problem in session.execute(
            select(KeyUsageProblem).where(
                KeyUsageProblem.key_id == key.id,
                KeyUsageProblem.period.in_(periods),
                KeyUsageProblem.start >= first,
                KeyUsageProblem.start < end,
            )
        ).scalars():
            point = points[granularity.floor(problem.start)]
            point.problems[problem.code] = point.problems.get(problem.code, 0) + problem.count
            total.problems[problem.code] = total.problems.get(problem.code, 0) + problem.count
    return Series(key.ref, granularity, first, end, list(points.values()), total)


@dataclass(frozen=True, slots=True)
class KeyTotal:
    ref: str
    name: str
    requests: int
    successes: int
    rate_limited: int


def busiest_keys(
    ctx: Context, scope: Scope, *, start: datetime, end: datetime, limit: int = 10
) -> list[KeyTotal]:
    """The keys in ``scope`` with the most requests from ``start`` to ``end``, with totals
    (Settings → API's summary): one grouped read."""
    requests = func.sum(KeyUsage.requests)
    stmt = (
        select(
            ApiKey.ref,
            ApiKey.name,
            requests,
            func.sum(KeyUsage.successes),
            func.sum(KeyUsage.rate_limited),
        )
        .join(ApiKey, KeyUsage.key_id == ApiKey.id)
        .where(
            within_scope(scope, ApiKey.org_id, ApiKey.location_id),
            KeyUsage.start >= start,
            KeyUsage.start < end,
        )
        .group_by(ApiKey.ref, ApiKey.name)
        .order_by(requests.desc(), ApiKey.ref)
        .limit(limit)
    )
    with ctx.db.session() as session:
        rows = session.execute(stmt).all()
    return [
        KeyTotal(ref, name, int(n), int(ok), int(limited)) for ref, name, n, ok, limited in rows
    ]


@dataclass(frozen=True, slots=True)
class RollUp:
    rolled_up: int
    deleted: int


def roll_up(ctx: Context, *, limit: int = 5000) -> RollUp:
    """Fold minutes older than 7 days into hours (up to ``limit`` rows a transaction,
    until none is left) and delete rows older than 90 days."""
    now = ctx.clock()
    cutoff = now - MINUTES_KEPT
    rolled = 0
    while True:
        with ctx.db.transaction() as session:
            rows = list(
                session.execute(
                    select(KeyUsage)
                    .where(KeyUsage.period == MINUTE, KeyUsage.start < cutoff)
                    .order_by(KeyUsage.start)
                    .limit(limit)
                ).scalars()
            )
            if not rows:
                break
            last = rows[-1].start
            tallies: dict[tuple[int, datetime], list[int]] = defaultdict(usage.new_tally)
            for row in rows:
                counts = [row.requests, row.successes, row.rate_limited]
                counts += [getattr(row, name) for name in LATENCY_COLUMNS]
                usage.add(tallies[(row.key_id, Granularity.HOUR.floor(row.start))], counts)
            # whole minutes only: a minute's rows for other keys may be past the limit
            keys_and_starts = {(row.key_id, row.start) for row in rows}
            problems: dict[tuple[int, datetime, str], int] = defaultdict(int)
            for problem in session.execute(
                select(KeyUsageProblem).where(
                    KeyUsageProblem.period == MINUTE, KeyUsageProblem.start <= last
                )
            ).scalars():
                if (problem.key_id, problem.start) in keys_and_starts:
                    hour = Granularity.HOUR.floor(problem.start)
                    problems[(problem.key_id, hour, problem.code)] += problem.count
                    session.delete(problem)
            _add(session, tallies, problems, HOUR)
            for row in rows:
                session.delete(row)
            rolled += len(rows)
    with ctx.db.transaction() as session:
        deleted = 0
        for table in (KeyUsage, KeyUsageProblem):
            result: Any = session.execute(delete(table).where(table.start < now - KEPT))
            deleted += result.rowcount or 0
    return RollUp(rolled, deleted)
