"""Pulse: NPS answers (0-10, with a comment) and the NPS per client and period."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case, func, select

from keyrack.domain import crm
from keyrack.domain.crm import NpsCategory, NpsTally, Period
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput
from keyrack.services.context import Actor, Context
from keyrack.services.crm.scoping import (
    client_in_scope,
    contact_of,
    encode_offset,
    in_scope,
    of_client,
    one_in_scope,
    window,
    within,
)
from keyrack.services.crm.usage import MAX_FUTURE_SKEW, bucket_day
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.crm import Client, PulseResponse

MAX_COMMENT = 5000


@dataclass(frozen=True, slots=True)
class PulseView:
    ref: str
    client_ref: str
    contact_ref: str | None
    score: int
    comment: str | None
    responded_at: datetime
    created_at: datetime

    @property
    def category(self) -> NpsCategory:
        return crm.nps_category(self.score)

    @classmethod
    def of(cls, row: PulseResponse) -> PulseView:
        return cls(
            ref=row.ref,
            client_ref=row.client.ref,
            contact_ref=row.contact.ref if row.contact else None,
            score=row.score,
            comment=row.comment,
            responded_at=row.responded_at,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class NpsSummary:
    client_ref: str
    period: Period
    label: str
    start: date
    tally: NpsTally


def record_response(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    client_ref: str,
    score: int,
    comment: str | None = None,
    contact_ref: str | None = None,
    responded_at: datetime | None = None,
) -> PulseView:
    """Store one answer; ``contact_ref`` must be a contact of the same client."""
    crm.validate_score(score)
    comment = crm.validate_text(comment, "comment", MAX_COMMENT, paragraph=True)
    now = ctx.clock()
    when = responded_at or now
    if when > now + MAX_FUTURE_SKEW:
        raise InvalidInput("responded_at is at most one day ahead")
    with ctx.db.transaction() as session:
        client = client_in_scope(session, scope, client_ref)
        contact = contact_of(session, scope, client, contact_ref)
        row = PulseResponse(
            ref=new_ref("pul"),
            org_id=scope.org_id,
            client=client,
            contact=contact,
            score=score,
            comment=comment,
            responded_at=when,
            day=crm.day_of(when),
            month=crm.month_of(when),
            created_at=now,
        )
        session.add(row)
        session.flush()
        return PulseView.of(row)


def list_responses(
    ctx: Context,
    scope: Scope,
    *,
    client_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[PulseView]:
    """Newest first."""
    crm.check_range(since, until)
    stmt = in_scope(select(PulseResponse), PulseResponse, scope)
    stmt = within(stmt, PulseResponse.responded_at, since, until)
    with ctx.db.session() as session:
        stmt = of_client(session, stmt, PulseResponse, scope, client_ref)
        return paginate(session, stmt, PulseResponse.id, limit=limit, cursor=cursor).map(
            PulseView.of
        )


def get_response(ctx: Context, scope: Scope, ref: str) -> PulseView:
    with ctx.db.session() as session:
        row: PulseResponse = one_in_scope(
            session, PulseResponse, "pul", "pulse response", scope, ref
        )
        return PulseView.of(row)


def nps_summary(
    ctx: Context,
    scope: Scope,
    *,
    period: Period = Period.MONTH,
    client_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[NpsSummary]:
    """NPS per client and UTC period (day, month, quarter, year), oldest period first.

    The database counts categories per client and day or month; quarters and
    years are summed from months here.
    """
    crm.check_range(since, until)
    offset, limit = window(limit, cursor)
    stored = PulseResponse.day if period is Period.DAY else PulseResponse.month
    promoters = func.sum(case((PulseResponse.score >= 9, 1), else_=0))
    passives = func.sum(case(((PulseResponse.score >= 7) & (PulseResponse.score <= 8), 1), else_=0))
    detractors = func.sum(case((PulseResponse.score <= 6, 1), else_=0))
    stmt = select(Client.ref, stored, promoters, passives, detractors).join(
        Client, PulseResponse.client_id == Client.id
    )
    stmt = within(in_scope(stmt, PulseResponse, scope), PulseResponse.responded_at, since, until)
    with ctx.db.session() as session:
        stmt = of_client(session, stmt, PulseResponse, scope, client_ref)
        rows = session.execute(stmt.group_by(Client.ref, stored)).all()
    totals: dict[tuple[date, str], NpsTally] = defaultdict(NpsTally)
    for ref, key, pro, pas, det in rows:
        start = crm.bucket_start(bucket_day(key), period)
        totals[(start, ref)] += NpsTally(int(pro), int(pas), int(det))
    ordered = sorted(totals.items())
    data = [
        NpsSummary(ref, period, crm.bucket_label(start, period), start, counts)
        for (start, ref), counts in ordered[offset : offset + limit]
    ]
    more = len(ordered) > offset + limit
    return Page(data, encode_offset(offset + limit) if more else None)
