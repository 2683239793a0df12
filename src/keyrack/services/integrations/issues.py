"""Issues (SPEC §7): a connection's persisting problems, one open issue per cause.

``evaluate`` runs at the end of each run and on each status change: it gathers the facts
(``keyrack.domain.diagnosis.causes`` decides), opens an issue for each new cause — with
the support bundle of that moment, and an ``integration.issue_opened`` event that fans
out like the status events — and resolves the open ones whose cause is gone (a clean
run, a credential that works again, a direction turned back on).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack.domain import diagnosis as rules
from keyrack.domain.diagnosis import Cause, SyncFacts, SyncRunFacts
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope
from keyrack.errors import NotFound
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.integrations import connections, syncs
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.integration_issues import IntegrationIssue
from keyrack.storage.tables.integrations import (
    Integration,
    IntegrationChange,
    IntegrationSync,
    SyncRun,
    SyncRunRecord,
)

RUNS_LOOKED_AT = 20
SKIPS_READ = 10_000
"""Skipped records of a run read to tell whether one filter skipped them all."""
EVENT = "integration.issue_opened"


@dataclass(frozen=True, slots=True)
class IssueView:
    id: str
    integration_id: str
    cause: str
    kind: str
    record_type: str | None
    direction: str | None
    summary: str
    status: str
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    bundle: dict[str, Any] | None

    @classmethod
    def of(cls, row: IntegrationIssue, integration_ref: str) -> IssueView:
        return cls(
            id=row.ref,
            integration_id=integration_ref,
            cause=row.cause,
            kind=row.kind,
            record_type=row.record_type,
            direction=row.direction,
            summary=row.summary,
            status="open" if row.resolved_at is None else "resolved",
            opened_at=row.opened_at,
            last_seen_at=row.last_seen_at,
            resolved_at=row.resolved_at,
            bundle=row.bundle,
        )


def _facts(session: Session, row: Integration) -> list[SyncFacts]:
    runs = list(
        session.scalars(
            select(SyncRun)
            .where(
                SyncRun.integration_id == row.id,
                SyncRun.status.in_(("succeeded", "partial", "failed")),
                SyncRun.trigger != "retry",
            )
            .order_by(SyncRun.id.desc())
            .limit(RUNS_LOOKED_AT)
        )
    )
    found = []
    for sync in session.scalars(
        select(IntegrationSync).where(IntegrationSync.integration_id == row.id)
    ):
        touched = [
            (run, run.counts[sync.record_type][sync.direction])
            for run in runs
            if sync.direction in run.counts.get(sync.record_type, {})
        ]
        facts = []
        for index, (run, tally) in enumerate(touched):
            synced, skipped, failed = (
                int(tally.get(k, 0)) for k in ("synced", "skipped", "failed")
            )
            by_filter: Counter[str] = Counter()
            if index < rules.PERSIST_RUNS and skipped and not synced and not failed:
                read = 0
                for (skip,) in session.execute(
                    select(SyncRunRecord.skip)
                    .where(
                        SyncRunRecord.run_id == run.id,
                        SyncRunRecord.record_type == sync.record_type,
                        SyncRunRecord.direction == sync.direction,
                        SyncRunRecord.outcome == "skipped",
                    )
                    .limit(SKIPS_READ)
                ):
                    read += 1
                    if skip and "filter" in skip:
                        by_filter[f"{skip.get('index')}:{skip.get('field')}"] += 1
                # one filter skipped them all when it skipped every one read
                by_filter = Counter({k: skipped for k, v in by_filter.items() if v == read})
            facts.append(SyncRunFacts(synced, skipped, failed, dict(by_filter)))
        last_success = next(
            (run.finished_at for run, tally in touched if int(tally.get("synced", 0)) > 0), None
        )
        disabled = None
        if not sync.enabled:
            disabled = session.scalars(
                select(IntegrationChange)
                .where(
                    IntegrationChange.integration_id == row.id,
                    IntegrationChange.what == f"sync:{syncs.key(sync.record_type, sync.direction)}",
                )
                .order_by(IntegrationChange.id.desc())
            ).first()
            if disabled is not None and (disabled.after or {}).get("enabled") is not False:
                disabled = None
        found.append(
            SyncFacts(
                sync.record_type,
                sync.direction,
                sync.enabled,
                facts,
                last_success,
                disabled.occurred_at if disabled else None,
                disabled.actor_label if disabled else None,
            )
        )
    return found


def evaluate(ctx: Context, integration_id: int) -> list[str]:
    """Open the issues of new causes, resolve those whose cause is gone; the refs opened."""
    now = ctx.clock()
    with ctx.db.session() as session:
        row = session.get(Integration, integration_id)
        if row is None:
            return []
        current = rules.causes(row.status, row.status_reason, _facts(session, row))
        held = {
            i.cause
            for i in session.scalars(
                select(IntegrationIssue).where(
                    IntegrationIssue.integration_id == row.id,
                    IntegrationIssue.resolved_at.is_(None),
                )
            )
        }
        ref, scope = row.ref, Scope(row.org_id, row.location_id)
    new = [c for c in current if c.key not in held]
    bundles = {c.key: _bundle(ctx, scope, ref, c) for c in new}
    opened = []
    with ctx.db.transaction() as session:
        row = session.get(Integration, integration_id)
        if row is None:
            return []
        keys = {c.key for c in current}
        for issue in session.scalars(
            select(IntegrationIssue).where(
                IntegrationIssue.integration_id == row.id, IntegrationIssue.resolved_at.is_(None)
            )
        ):
            if issue.cause in keys:
                issue.last_seen_at = now
            else:
                issue.resolved_at = now
        for cause in new:
            issue = IntegrationIssue(
                ref=new_ref("iss"),
                integration_id=row.id,
                cause=cause.key,
                kind=cause.kind,
                record_type=cause.record_type,
                direction=cause.direction,
                summary=cause.summary,
                bundle=bundles[cause.key],
                opened_at=now,
                last_seen_at=now,
            )
            session.add(issue)
            audit.record(
                session,
                Actor.system("issues"),
                EVENT,
                now=now,
                org_id=row.org_id,
                target_type="integration",
                target_ref=row.ref,
                after={"name": row.name, "kind": cause.kind, "reason": cause.summary},
            )
            opened.append(issue.ref)
    return opened


def _bundle(ctx: Context, scope: Scope, ref: str, cause: Cause) -> dict[str, Any]:
    from keyrack.services.integrations import diagnosis

    return diagnosis.bundle_of(
        ctx, scope, ref, record_type=cause.record_type, direction=cause.direction
    )


def list_issues(
    ctx: Context,
    scope: Scope,
    ref: str,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[IssueView]:
    """The connection's issues, newest first (``status``: ``open`` or ``resolved``)."""
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        stmt = select(IntegrationIssue).where(IntegrationIssue.integration_id == row.id)
        if status == "open":
            stmt = stmt.where(IntegrationIssue.resolved_at.is_(None))
        elif status == "resolved":
            stmt = stmt.where(IntegrationIssue.resolved_at.is_not(None))
        page = paginate(session, stmt, IntegrationIssue.id, limit=limit, cursor=cursor)
        return page.map(lambda issue: IssueView.of(issue, row.ref))


def get_issue(ctx: Context, scope: Scope, ref: str, issue_ref: str) -> IssueView:
    """One issue of the connection, open or resolved (``NotFound`` otherwise)."""
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        issue = session.scalars(
            select(IntegrationIssue).where(
                IntegrationIssue.integration_id == row.id, IntegrationIssue.ref == issue_ref
            )
        ).one_or_none()
        if issue is None:
            raise NotFound(f"no issue {issue_ref} on this connection")
        return IssueView.of(issue, row.ref)
