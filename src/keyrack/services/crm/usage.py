"""Product usage: idempotent event batches in, per client and period aggregates out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from keyrack.domain import crm
from keyrack.domain.crm import MAX_USAGE_BATCH, MAX_USAGE_COUNT, Period
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput, NotFound
from keyrack.services.context import Actor, Context
from keyrack.services.crm.scoping import (
    clients_of,
    encode_offset,
    in_scope,
    of_client,
    window,
    within,
)
from keyrack.storage.database import insert_for
from keyrack.storage.paging import Page
from keyrack.storage.tables.crm import USAGE_EVENT_ID_SCOPE, Client, UsageEvent

MAX_FUTURE_SKEW = timedelta(days=1)
USAGE_PERIODS = (Period.DAY, Period.MONTH)


@dataclass(frozen=True, slots=True)
class UsageEventIn:
    id: str
    client_ref: str
    event: str
    count: int
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    inserted: int
    duplicates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UsageBucket:
    client_ref: str
    period: Period
    label: str
    start: date
    event: str
    count: int
    events: int


def _check(events: Sequence[UsageEventIn], now: datetime) -> None:
    if not 1 <= len(events) <= MAX_USAGE_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_USAGE_BATCH} events")
    for i, item in enumerate(events):
        where = f"events[{i}]"
        if not 1 <= len(item.id) <= 128 or not item.id.isprintable():
            raise InvalidInput(f"{where}.id: 1-128 printable characters")
        if not 1 <= len(item.event) <= 64 or not item.event.isprintable():
            raise InvalidInput(f"{where}.event: 1-64 printable characters")
        if not 1 <= item.count <= MAX_USAGE_COUNT:
            raise InvalidInput(f"{where}.count: 1 to {MAX_USAGE_COUNT}")
        if item.timestamp.tzinfo is None or item.timestamp > now + MAX_FUTURE_SKEW:
            raise InvalidInput(f"{where}.timestamp: a UTC time, at most one day ahead")


def bucket_day(key: object) -> date:
    """The first day of a stored bucket: a ``day`` date or a ``YYYY-MM`` month."""
    return key if isinstance(key, date) else date.fromisoformat(f"{key}-01")


def record_usage(
    ctx: Context, actor: Actor, scope: Scope, events: Sequence[UsageEventIn]
) -> IngestResult:
    """Store a batch; an event id already sent for the client's location is reported, not stored.

    Event ids are unique per location (the agency's own clients share one namespace), so
    a location never learns another's ids or loses an event to them. Idempotency holds
    under concurrency: the unique index over ``USAGE_EVENT_ID_SCOPE`` decides, through
    ``INSERT … ON CONFLICT DO NOTHING``. An unknown or out-of-scope client refuses the
    whole batch (``NotFound``).
    """
    now = ctx.clock()
    _check(events, now)
    refs = {item.client_ref for item in events}
    with ctx.db.transaction() as session:
        found: dict[str, tuple[int, int | None]] = {
            ref: (client_id, location_id)
            for ref, client_id, location_id in session.execute(
                clients_of(scope)
                .with_only_columns(Client.ref, Client.id, Client.location_id)
                .where(Client.ref.in_(refs))
            )
        }
        for i, item in enumerate(events):
            if item.client_ref not in found:
                raise NotFound(f"events[{i}].client_id: no client {item.client_ref!r}")
        rows: dict[tuple[int | None, str], dict[str, Any]] = {}
        for item in events:
            client_id, location_id = found[item.client_ref]
            rows.setdefault(
                (location_id, item.id),
                {
                    "org_id": scope.org_id,
                    "location_id": location_id,
                    "client_id": client_id,
                    "event_id": item.id,
                    "event": item.event,
                    "count": item.count,
                    "occurred_at": item.timestamp,
                    "day": crm.day_of(item.timestamp),
                    "month": crm.month_of(item.timestamp),
                    "received_at": now,
                },
            )
        stmt = (
            insert_for(session)(UsageEvent)
            .values(list(rows.values()))
            .on_conflict_do_nothing(index_elements=USAGE_EVENT_ID_SCOPE)
            .returning(UsageEvent.location_id, UsageEvent.event_id)
        )
        inserted = {(location_id, event_id) for location_id, event_id in session.execute(stmt)}
    duplicates: list[str] = []
    for item in events:  # an id repeated inside the batch is stored once: the rest are duplicates
        stored = (found[item.client_ref][1], item.id)
        if stored in inserted:
            inserted.discard(stored)
        else:
            duplicates.append(item.id)
    return IngestResult(len(events), len(events) - len(duplicates), tuple(duplicates))


def usage_aggregates(
    ctx: Context,
    scope: Scope,
    *,
    period: Period = Period.DAY,
    client_ref: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[UsageBucket]:
    """Totals per client, UTC day or month, and event name, oldest period first."""
    if period not in USAGE_PERIODS:
        raise InvalidInput("usage is aggregated per day or month")
    crm.check_range(since, until)
    offset, limit = window(limit, cursor)
    bucket = UsageEvent.day if period is Period.DAY else UsageEvent.month
    stmt = select(
        Client.ref, bucket, UsageEvent.event, func.sum(UsageEvent.count), func.count()
    ).join(Client, UsageEvent.client_id == Client.id)
    stmt = in_scope(stmt, UsageEvent, scope)
    if event is not None:
        stmt = stmt.where(UsageEvent.event == event)
    stmt = within(stmt, UsageEvent.occurred_at, since, until)
    with ctx.db.session() as session:
        stmt = of_client(session, stmt, UsageEvent, scope, client_ref)
        rows = session.execute(
            stmt.group_by(Client.ref, bucket, UsageEvent.event)
            .order_by(bucket, Client.ref, UsageEvent.event)
            .offset(offset)
            .limit(limit + 1)
        ).all()
    more = len(rows) > limit
    data = [
        UsageBucket(
            client_ref=ref,
            period=period,
            label=crm.bucket_label(bucket_day(key), period),
            start=bucket_day(key),
            event=name,
            count=int(total),
            events=int(n),
        )
        for ref, key, name, total, n in rows[:limit]
    ]
    return Page(data, encode_offset(offset + limit) if more else None)
