"""Test with one record, and diagnose (SPEC §7): the troubleshooting article's four
checks done by Keyrack, and the support bundle it asks the customer to write.

``test_record`` runs the sync's pipeline for one record and answers every step
(``keyrack.domain.diagnosis``); a dry run (the default) stops before the write.
``diagnose`` walks the four checks in order and builds the bundle: what it holds comes
from the change history, the runs' records and a fresh probe, and is scrubbed of the
connection's credential and of anything shaped like a secret before it is returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack.domain import diagnosis as rules
from keyrack.domain import sync_rules
from keyrack.domain.diagnosis import Check, Step
from keyrack.domain.sync_rules import INBOUND, OUTBOUND, MappingFailed
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput
from keyrack.integrations.connector import (
    KEYRACK,
    ConnectorError,
    Direction,
    OutboundRecord,
    ProbeStatus,
    RecordType,
    RemoteRecord,
    WriteResult,
)
from keyrack.services.context import Actor, Context
from keyrack.services.crm import external_ids, records
from keyrack.services.integrations import connections, local, syncs
from keyrack.services.integrations.local import LocalRecord
from keyrack.storage.tables.integrations import (
    Integration,
    IntegrationChange,
    IntegrationSync,
    SyncRun,
    SyncRunRecord,
)

RECENT_RUNS = 5
"""The runs the direction-and-filters check counts skips in."""
CHANGE_WINDOW = timedelta(days=1)
"""Changes this long before the last success (and any since) are 'around when it stopped'."""
MAX_CHANGES = 20
MAX_SKIPS_READ = 50_000
"""Skipped records read to tell which filter skipped how many (the counts are exact up to
there; past it they are those of the first ``MAX_SKIPS_READ``)."""
MAX_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class TestRecordView:
    integration_id: str
    record_type: str
    direction: str
    record_id: str
    dry_run: bool
    outcome: str
    steps: tuple[Step, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "record_type": self.record_type,
            "direction": self.direction,
            "record_id": self.record_id,
            "dry_run": self.dry_run,
            "outcome": self.outcome,
            "steps": [s.as_dict() for s in self.steps],
        }


def _exchange(found: Any) -> dict[str, Any] | None:
    return dataclasses.asdict(found) if found is not None else None


def _failure(found: Any) -> dict[str, Any] | None:
    return dataclasses.asdict(found) if found is not None else None


def test_record(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    record_type: str,
    direction: str,
    record_id: str,
    dry_run: bool = True,
) -> TestRecordView:
    """Every step of the pipeline for one record (outbound: a Keyrack id; inbound: the
    provider's id, or a Keyrack id whose provider id is known)."""
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        rt, way = syncs.parse_kind(row.provider, record_type, direction)
        sync = syncs.view_of(row, syncs.sync_row(session, row, rt, way), rt, way)
        session.expunge(row)
    steps = _pipeline(ctx, row, scope, sync, record_id, dry_run=dry_run)
    secrets = _secrets(ctx, row)
    clean = tuple(
        Step(s.name, s.outcome, rules.scrub(s.detail, secrets), rules.scrub_value(s.data, secrets))
        for s in steps
    )
    return TestRecordView(
        row.ref,
        rt.value,
        way.value,
        record_id,
        dry_run,
        rules.record_outcome(clean, dry_run=dry_run),
        clean,
    )


def _pipeline(
    ctx: Context,
    row: Integration,
    scope: Scope,
    sync: syncs.SyncView,
    record_id: str,
    *,
    dry_run: bool,
) -> list[Step]:
    rt, way = RecordType(sync.record_type), sync.direction
    steps: list[Step] = []
    steps.append(
        Step(
            "sync",
            "ok",
            f"{rt} {way} is {'enabled' if sync.enabled else 'disabled (a run would not sync it)'}",
            {"enabled": sync.enabled},
        )
    )
    if row.credential_sealed is None:
        steps.append(Step("credential", "failed", "no credential: PUT one first"))
        return steps
    try:
        with connections.connector(ctx, row, connections.keep_token(ctx, row.id)) as connector:
            verdict = connector.probe()
            connections.apply_probe(ctx, row.id, verdict)
            if verdict.status != ProbeStatus.ACTIVE:
                steps.append(
                    Step(
                        "credential",
                        "failed",
                        f"the provider refused it ({verdict.status.value}, {verdict.reason}): "
                        + connections.failure_text(verdict),
                        {
                            "status": verdict.status.value,
                            "reason": verdict.reason,
                            "failure": _failure(verdict.failure),
                            "exchange": _exchange(verdict.exchange),
                        },
                    )
                )
                return steps
            steps.append(Step("credential", "ok", "the provider accepts the credential"))
            if way == OUTBOUND:
                _outbound(ctx, row, scope, sync, record_id, connector, steps, dry_run=dry_run)
            else:
                _inbound(ctx, row, scope, sync, record_id, connector, steps, dry_run=dry_run)
    except ConnectorError as exc:
        steps.append(
            Step(
                "provider",
                "failed",
                exc.failure.message,
                {"failure": _failure(exc.failure), "exchange": _exchange(exc.exchange)},
            )
        )
    return steps


def _filters(sync: syncs.SyncView, fields: dict[str, Any], steps: list[Step]) -> bool:
    """One step per filter (every one is tested, so the answer shows them all); True when
    the record passes them all."""
    passed = True
    for index, f in enumerate(sync.filters):
        ok = sync_rules.matches(f, fields)
        passed = passed and ok
        steps.append(
            Step(
                "filter",
                "passed" if ok else "skipped",
                f"filters[{index}] {f.field} {f.op} {f.value!r}: the record holds "
                + (repr(fields.get(f.field)) if f.field in fields else "no such field"),
                {
                    "index": index,
                    "filter": f.as_dict(),
                    "tested": sync_rules.jsonable(fields.get(f.field)),
                    "present": f.field in fields,
                },
            )
        )
    if not sync.filters:
        steps.append(Step("filter", "passed", "no filters: every record goes"))
    return passed


def _mapping(
    sync: syncs.SyncView, fields: dict[str, Any], direction: str, steps: list[Step]
) -> dict[str, Any] | None:
    try:
        mapped = sync_rules.apply(sync.field_mappings, fields, direction)
    except MappingFailed as exc:
        steps.append(Step("mapping", "failed", exc.detail, {"before": sync_rules.jsonable(fields)}))
        return None
    steps.append(
        Step(
            "mapping",
            "ok",
            f"{len(mapped)} field(s) mapped",
            {
                "before": sync_rules.jsonable(fields),
                "after": sync_rules.jsonable(mapped),
                "mappings": [m.as_dict() for m in sync.field_mappings],
            },
        )
    )
    return mapped


def _outbound(
    ctx: Context,
    row: Integration,
    scope: Scope,
    sync: syncs.SyncView,
    record_id: str,
    connector: Any,
    steps: list[Step],
    *,
    dry_run: bool,
) -> None:
    rt = RecordType(sync.record_type)
    side = local.side(rt)
    with ctx.db.session() as session:
        found = side.by_refs(session, scope, [record_id])
    if not found:
        steps.append(Step("load", "failed", f"Keyrack has no {rt} {record_id}"))
        return
    record = found[0]
    remote_id = record.external_ids.get(row.provider)
    steps.append(
        Step(
            "load",
            "ok",
            f"loaded {record.name!r} from Keyrack"
            + (
                f" ({row.provider} id {remote_id})"
                if remote_id
                else f" (not in {row.provider} yet)"
            ),
            {
                "local_id": record.ref,
                "remote_id": remote_id,
                "record_name": record.name,
                "fields": sync_rules.jsonable(record.fields),
            },
        )
    )
    if not _filters(sync, record.fields, steps):
        return
    mapped = _mapping(sync, record.fields, OUTBOUND, steps)
    if mapped is None:
        return
    links = local.links_out(record, row.provider)
    if links is None:
        steps.append(
            Step("links", "failed", "the client it belongs to has no id at the provider yet")
        )
        return
    item = OutboundRecord(record.ref, mapped, links)
    if dry_run:
        steps.append(
            Step(
                "request",
                "not-run",
                f"dry run: would upsert it into {row.provider} by its Keyrack id",
                {
                    "would_send": sync_rules.jsonable(mapped),
                    "links": {str(k): v for k, v in links.items()},
                },
            )
        )
        steps.append(Step("write-back", "not-run", "dry run: nothing written"))
        return
    [answer] = connector.upsert(rt, [item])
    if answer.result == WriteResult.FAILED:
        steps.append(
            Step(
                "request",
                "failed",
                answer.failure.message if answer.failure else "the provider refused it",
                {"failure": _failure(answer.failure), "exchange": _exchange(answer.exchange)},
            )
        )
        return
    steps.append(
        Step(
            "request",
            "ok",
            f"{row.provider} answered {answer.result.value} ({answer.remote_id})",
            {
                "result": answer.result.value,
                "remote_id": answer.remote_id,
                "exchange": _exchange(answer.exchange),
            },
        )
    )
    _write_back(ctx, row, scope, rt, record, answer.remote_id, steps)


def _write_back(
    ctx: Context,
    row: Integration,
    scope: Scope,
    rt: RecordType,
    record: LocalRecord,
    remote_id: str | None,
    steps: list[Step],
) -> None:
    if not remote_id or record.external_ids.get(row.provider) == remote_id:
        steps.append(Step("write-back", "ok", f"external_ids.{row.provider} already {remote_id}"))
        return
    with ctx.db.transaction() as session:
        records.stamp(session, scope.org_id, ctx.clock())
        refused = external_ids.assign_system(
            session,
            scope,
            local.crm_type(rt),
            row.provider,
            {record.id: (record.external_ids, remote_id)},
        )
    if refused:
        steps.append(Step("write-back", "failed", refused[record.id]))
        return
    steps.append(Step("write-back", "ok", f"external_ids.{row.provider} = {remote_id}"))


def _inbound(
    ctx: Context,
    row: Integration,
    scope: Scope,
    sync: syncs.SyncView,
    record_id: str,
    connector: Any,
    steps: list[Step],
    *,
    dry_run: bool,
) -> None:
    rt = RecordType(sync.record_type)
    remote_id = record_id
    with ctx.db.session() as session:
        held = local.side(rt).by_refs(session, scope, [record_id])
    if held:  # a Keyrack id: the provider's id it holds
        remote_id = held[0].external_ids.get(row.provider, "")
        if not remote_id:
            steps.append(
                Step("load", "failed", f"{record_id} has no {row.provider} id to load it by")
            )
            return
    remote: RemoteRecord | None = connector.get(rt, remote_id)
    if remote is None:
        steps.append(Step("load", "failed", f"{row.provider} has no {rt} {remote_id}"))
        return
    steps.append(
        Step(
            "load",
            "ok",
            f"loaded {remote.name!r} from {row.provider}",
            {
                "remote_id": remote.remote_id,
                "local_id": remote.external_ids.get(KEYRACK),
                "record_name": remote.name,
                "fields": sync_rules.jsonable(remote.fields),
            },
        )
    )
    if not _filters(sync, remote.fields, steps):
        return
    mapped = _mapping(sync, remote.fields, INBOUND, steps)
    if mapped is None:
        return
    side = local.side(rt)
    if dry_run:
        with ctx.db.session() as session:
            holder = local.held_by(session, scope, rt, row.provider, remote.remote_id)
        steps.append(
            Step(
                "request",
                "not-run",
                "dry run: would "
                + ("update the Keyrack record holding it" if holder else "create it in Keyrack"),
                {"would_write": sync_rules.jsonable(mapped)},
            )
        )
        steps.append(Step("write-back", "not-run", "dry run: nothing written"))
        return
    try:
        with ctx.db.transaction() as session:
            at = records.stamp(session, scope.org_id, ctx.clock())
            result, ref = side.upsert(session, scope, row.provider, remote, mapped, at)
    except (InvalidInput, Conflict) as exc:
        steps.append(Step("request", "failed", exc.detail))
        return
    steps.append(
        Step("request", "ok", f"Keyrack {result} {ref}", {"result": result, "local_id": ref})
    )
    steps.append(
        Step("write-back", "ok", f"{ref} holds external_ids.{row.provider} = {remote.remote_id}")
    )


def _secrets(ctx: Context, row: Integration) -> list[str]:
    """The connection's credential values (what no answer may hold)."""
    credential = connections.open_credential(ctx, row) or {}
    return [str(v) for v in credential.values() if isinstance(v, str) and len(v) >= 4]


# diagnose


@dataclass(frozen=True, slots=True)
class DiagnosisView:
    integration_id: str
    checks: tuple[Check, ...]
    bundle: dict[str, Any]
    markdown: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "checks": [c.as_dict() for c in self.checks],
            "bundle": self.bundle,
            "markdown": self.markdown,
        }


@dataclass
class _SyncState:
    record_type: str
    direction: str
    enabled: bool
    filters: tuple[sync_rules.Filter, ...]
    synced: int = 0
    skipped: int = 0
    failed: int = 0
    skips: Counter[str] = dataclasses.field(default_factory=Counter)
    skipped_fields: set[str] = dataclasses.field(default_factory=set)
    """The fields of the filters that skipped records."""
    last_worked_at: datetime | None = None
    last_worked_run: str | None = None
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return syncs.key(self.record_type, self.direction)

    def symptoms(self) -> rules.SyncSymptoms:
        return rules.SyncSymptoms(
            self.record_type,
            self.direction,
            self.enabled,
            self.synced,
            self.failed,
            frozenset(self.skipped_fields),
            self.last_worked_at,
        )


def _public_url(url: str | None) -> str | None:
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def diagnose(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    record_type: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    live: bool = True,
) -> DiagnosisView:
    """The four checks, in the article's order, and the support bundle. ``live=False``
    (an issue's bundle) uses the stored status and runs no single-record test."""
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        _validate_kind(row.provider, record_type, direction)
        integration_id = row.id
    if live and row.credential_sealed is not None:
        with contextlib.suppress(InvalidInput):  # no credential: the first check says so
            connections.probe(ctx, integration_id, actor=actor)
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        states = _states(session, row, record_type, direction)
        runs = _recent_runs(session, row.id, since)
        _count(session, row, states, runs)
        changes = _changes(session, row, states, since)
        session.expunge(row)
    affected = _affected(states, record_type, direction)
    checks: list[Check] = [
        _check_credentials(row),
        _check_direction(affected, runs),
        _check_changes(affected, changes, row),
    ]
    _examples(ctx, row, scope, affected)
    tested = None
    if live and checks[0].verdict == "ok":
        tested = _pick_and_test(ctx, actor, scope, row, affected)
    checks.append(_check_single(tested, checks[0]))
    bundle = _bundle(ctx, row, affected, checks, changes, runs)
    secrets = _secrets(ctx, row)
    bundle = rules.scrub_value(bundle, secrets)
    clean_checks = tuple(
        Check(
            c.name, c.verdict, rules.scrub(c.summary, secrets), rules.scrub_value(c.data, secrets)
        )
        for c in checks
    )
    return DiagnosisView(
        row.ref, clean_checks, bundle, rules.scrub(rules.markdown(bundle), secrets)
    )


def _validate_kind(provider: str, record_type: str | None, direction: str | None) -> None:
    if record_type and direction:
        syncs.parse_kind(provider, record_type, direction)
        return
    if record_type and record_type not in {t.value for t in RecordType}:
        raise InvalidInput(f"record_type must be one of {', '.join(RecordType)}")
    if direction and direction not in {d.value for d in Direction}:
        raise InvalidInput(f"direction must be one of {', '.join(Direction)}")


def _states(
    session: Session, row: Integration, record_type: str | None, direction: str | None
) -> list[_SyncState]:
    rows = {
        (s.record_type, s.direction): s
        for s in session.scalars(
            select(IntegrationSync).where(IntegrationSync.integration_id == row.id)
        )
    }
    states = []
    for (rt, way), s in sorted(rows.items()):
        if record_type and rt != record_type:
            continue
        if direction and way != direction:
            continue
        states.append(_SyncState(rt, way, s.enabled, sync_rules.parse_filters(s.filters)))
    if record_type and direction and not states:
        states.append(_SyncState(record_type, direction, False, ()))
    return states


def _recent_runs(session: Session, integration_id: int, since: datetime | None) -> list[SyncRun]:
    stmt = select(SyncRun).where(
        SyncRun.integration_id == integration_id,
        SyncRun.status.in_(("succeeded", "partial", "failed")),
    )
    if since is not None:
        stmt = stmt.where(SyncRun.created_at >= since)
    return list(session.scalars(stmt.order_by(SyncRun.id.desc()).limit(RECENT_RUNS)))


def _count(
    session: Session, row: Integration, states: list[_SyncState], runs: list[SyncRun]
) -> None:
    by_key = {s.key: s for s in states}
    for run in runs:
        for rt, ways in run.counts.items():
            for way, tally in ways.items():
                state = by_key.get(syncs.key(rt, way))
                if state is not None:
                    state.synced += int(tally.get("synced", 0))
                    state.skipped += int(tally.get("skipped", 0))
                    state.failed += int(tally.get("failed", 0))
    if runs:
        for skip, rt, way in session.execute(
            select(SyncRunRecord.skip, SyncRunRecord.record_type, SyncRunRecord.direction)
            .where(
                SyncRunRecord.run_id.in_([r.id for r in runs]),
                SyncRunRecord.outcome == "skipped",
            )
            .limit(MAX_SKIPS_READ)
        ):
            state = by_key.get(syncs.key(rt, way))
            if state is not None and skip:
                state.skips[_skip_label(skip)] += 1
                if "filter" in skip:
                    state.skipped_fields.add(str(skip.get("field")))
    for state in states:  # when it last worked: the last run that synced one of them
        for run in session.scalars(
            select(SyncRun)
            .where(SyncRun.integration_id == row.id, SyncRun.status.in_(("succeeded", "partial")))
            .order_by(SyncRun.id.desc())
            .limit(200)
        ):
            tally = run.counts.get(state.record_type, {}).get(state.direction, {})
            if int(tally.get("synced", 0)) > 0:
                state.last_worked_at, state.last_worked_run = run.finished_at, run.ref
                break
        failed = session.scalars(
            select(SyncRunRecord)
            .join(SyncRun, SyncRun.id == SyncRunRecord.run_id)
            .where(
                SyncRun.integration_id == row.id,
                SyncRunRecord.record_type == state.record_type,
                SyncRunRecord.direction == state.direction,
                SyncRunRecord.outcome == "failed",
            )
            .order_by(SyncRunRecord.id.desc())
            .limit(MAX_EXAMPLES)
        ).all()
        for record in failed:
            state.examples.append(_example(record, "failed: " + (record.error_message or "")))
        if failed:
            first = failed[0]
            state.error = {
                "message": first.error_message,
                "code": first.error_code,
                "http_status": first.http_status,
                "at": first.created_at.isoformat(),
                "local_id": first.local_id,
                "remote_id": first.remote_id,
            }


def _skip_label(skip: dict[str, Any]) -> str:
    if "filter" in skip:
        return f"{skip.get('index')}:{skip.get('field')}"
    return str(skip.get("reason", "other"))


def _example(record: SyncRunRecord, why: str) -> dict[str, Any]:
    return {
        "record_type": record.record_type,
        "direction": record.direction,
        "local_id": record.local_id,
        "remote_id": record.remote_id,
        "name": record.name,
        "why": why[:500],
    }


def _changes(
    session: Session, row: Integration, states: list[_SyncState], since: datetime | None
) -> list[IntegrationChange]:
    worked = [s.last_worked_at for s in states if s.last_worked_at is not None]
    start = since
    if start is None and worked:
        start = min(worked) - CHANGE_WINDOW
    stmt = select(IntegrationChange).where(IntegrationChange.integration_id == row.id)
    if start is not None:
        stmt = stmt.where(IntegrationChange.occurred_at >= start)
    return list(session.scalars(stmt.order_by(IntegrationChange.id.desc()).limit(MAX_CHANGES)))


def _affected(
    states: list[_SyncState], record_type: str | None, direction: str | None
) -> list[_SyncState]:
    """The syncs asked about, or those in trouble (off after working, failing, skipping
    everything), or else every enabled one."""
    if record_type or direction:
        return states
    troubled = [
        s
        for s in states
        if (not s.enabled and s.last_worked_at is not None)
        or (s.enabled and s.failed > 0 and s.synced == 0)
        or (s.enabled and s.skipped > 0 and s.synced == 0 and s.failed == 0)
    ]
    return troubled or [s for s in states if s.enabled]


def _check_credentials(row: Integration) -> Check:
    data = {
        "status": row.status,
        "status_reason": row.status_reason,
        "last_probed_at": row.last_probed_at.isoformat() if row.last_probed_at else None,
    }
    if row.credential_sealed is None:
        return Check("credentials", "problem", "the connection has no credential", data)
    if row.status == "active":
        return Check("credentials", "ok", "the credential is active: the provider accepts it", data)
    error = row.last_error_message or "no message"
    return Check(
        "credentials",
        "problem",
        f"the credential is {row.status} ({row.status_reason}): the provider said “{error}”; "
        "reauthorize (PUT …/credential)",
        {**data, "error": error},
    )


def _check_direction(affected: list[_SyncState], runs: list[SyncRun]) -> Check:
    per_sync = []
    verdict, notes = "ok", []
    for s in affected:
        per_sync.append(
            {
                "record_type": s.record_type,
                "direction": s.direction,
                "enabled": s.enabled,
                "synced": s.synced,
                "skipped": s.skipped,
                "failed": s.failed,
                "skipped_by": [
                    {
                        "filter": next(
                            (
                                f.as_dict()
                                for i, f in enumerate(s.filters)
                                if f"{i}:{f.field}" == label
                            ),
                            None,
                        ),
                        "label": label,
                        "records": n,
                    }
                    for label, n in s.skips.most_common()
                ],
            }
        )
        if not s.enabled:
            verdict = "problem"
            notes.append(f"{s.record_type} {s.direction} is turned off")
        elif s.skipped and not s.synced and not s.failed:
            verdict = "problem" if verdict != "problem" else verdict
            top, n = s.skips.most_common(1)[0] if s.skips else ("?", s.skipped)
            notes.append(
                f"the filter {top} skipped {n} of {s.skipped} record(s) of "
                f"{s.record_type} {s.direction} and none synced"
            )
        elif s.skips:
            if verdict == "ok":
                verdict = "warning"
            notes.append(
                f"{s.record_type} {s.direction}: "
                + ", ".join(f"filter {label} skipped {n}" for label, n in s.skips.most_common())
            )
    if not affected:
        return Check("direction-and-filters", "problem", "no sync is enabled", {"syncs": []})
    summary = "; ".join(notes) or (
        "every affected direction is enabled and no filter skipped a record in the last "
        f"{len(runs)} run(s)"
    )
    return Check("direction-and-filters", verdict, summary, {"syncs": per_sync, "runs": len(runs)})


def _change_dict(c: IntegrationChange) -> dict[str, Any]:
    return {
        "id": c.id,
        "occurred_at": c.occurred_at.isoformat(),
        "actor": c.actor_label,
        "what": c.what,
        "before": c.before,
        "after": c.after,
    }


def _change_facts(c: IntegrationChange) -> rules.Change:
    return rules.Change(c.what, c.occurred_at, c.before, c.after)


def _check_changes(
    affected: list[_SyncState], changes: list[IntegrationChange], row: Integration
) -> Check:
    symptoms = [s.symptoms() for s in affected]
    suspects = [
        c
        for c in changes
        if any(rules.could_explain(_change_facts(c), symptom) for symptom in symptoms)
    ]
    if row.status != "active":
        suspects += [
            c for c in changes if c.what == "status" and (c.after or {}).get("status") == row.status
        ]
    data = {"changes": [_change_dict(c) for c in changes]}
    if not suspects:
        return Check(
            "recent-changes",
            "ok",
            f"{len(changes)} change(s) in the window; none that could explain what the "
            "other checks found",
            data,
        )
    first = sorted(suspects, key=lambda c: c.id)[-1]
    nearby = [
        c
        for c in changes
        if c.id != first.id
        and c.actor_label == first.actor_label
        and abs((c.occurred_at - first.occurred_at).total_seconds()) <= 3600
        and c.what.startswith("sync:")
    ]
    if first.what == "status":
        said = (
            f"no setting changed: the provider started refusing the credential at "
            f"{first.occurred_at.isoformat()} (status {(first.before or {}).get('status')} → "
            f"{(first.after or {}).get('status')}, seen by {first.actor_label})"
        )
    else:
        said = f"{first.actor_label} changed {first.what} at {first.occurred_at.isoformat()}: " + (
            f"{rules.compact(first.before)} → {rules.compact(first.after)}"
        )
    if nearby:
        said += " (while also editing " + ", ".join(sorted({c.what for c in nearby})) + ")"
    return Check(
        "recent-changes",
        "problem",
        said,
        {**data, "suspect": _change_dict(first), "nearby": [_change_dict(c) for c in nearby]},
    )


def _examples(ctx: Context, row: Integration, scope: Scope, affected: list[_SyncState]) -> None:
    """For a sync with no failed record to show (turned off, or the credential refused
    before any record): Keyrack's records changed since it last worked, going out."""
    for s in affected:
        if s.examples or s.direction != OUTBOUND:
            continue
        try:
            side = local.side(RecordType(s.record_type))
        except InvalidInput:
            continue
        after = None if s.last_worked_at is None else (s.last_worked_at, 2**62)
        with ctx.db.session() as session:  # the first records changed after it last worked
            batch = side.changed(session, scope, after, MAX_EXAMPLES)
        for record in batch:
            s.examples.append(
                {
                    "record_type": s.record_type,
                    "direction": s.direction,
                    "local_id": record.ref,
                    "remote_id": record.external_ids.get(row.provider),
                    "name": record.name,
                    "why": "changed in Keyrack since it last worked"
                    + ("" if s.enabled else f"; {s.record_type} {s.direction} is off"),
                }
            )


def _pick_and_test(
    ctx: Context, actor: Actor, scope: Scope, row: Integration, affected: list[_SyncState]
) -> tuple[TestRecordView, dict[str, Any]] | None:
    """A dry-run test of the first example record, and that example."""
    for s in affected:
        for ex in s.examples:
            record_id = ex["local_id"] if s.direction == OUTBOUND else ex["remote_id"]
            if record_id:
                test = test_record(
                    ctx,
                    actor,
                    scope,
                    row.ref,
                    record_type=s.record_type,
                    direction=s.direction,
                    record_id=record_id,
                    dry_run=True,
                )
                return test, ex
    return None


def _check_single(
    tested: tuple[TestRecordView, dict[str, Any]] | None, credentials: Check
) -> Check:
    if tested is None:
        why = (
            "not run: the credential is not active"
            if credentials.verdict != "ok"
            else "not run: no record that should have synced was found"
        )
        return Check("single-record", "not-run", why)
    test, example = tested
    last = next((s for s in test.steps if s.outcome in ("failed", "skipped")), None)
    verdict = {"failed": "problem", "skipped": "problem"}.get(test.outcome, "ok")
    summary = f"{test.record_type} {test.direction} {test.record_id}: {test.outcome}"
    if last is not None:
        summary += f" at {last.name} — {last.detail}"
    elif str(example.get("why", "")).startswith("failed: "):
        verdict = "problem"  # a dry run stops before the provider, which refused it last time
        summary += (
            " here, but the provider refused it in the last run: "
            + example["why"][len("failed: ") :]
        )
    elif test.steps and test.steps[0].data.get("enabled") is False:
        summary += " (the pipeline works; the direction is off)"
    return Check("single-record", verdict, summary, {"test": test.as_dict()})


def _bundle(
    ctx: Context,
    row: Integration,
    affected: list[_SyncState],
    checks: Sequence[Check],
    changes: list[IntegrationChange],
    runs: list[SyncRun],
) -> dict[str, Any]:
    error = next((s.error for s in affected if s.error), None)
    failed_run = next((r for r in runs if r.error), None)
    if error is None and failed_run is not None:
        error = {
            "message": failed_run.error,
            "code": None,
            "http_status": None,
            "at": (failed_run.finished_at or failed_run.created_at).isoformat(),
            "run_id": failed_run.ref,
        }
    if error is None and row.last_error_message:
        error = {
            "message": row.last_error_message,
            "code": row.status_reason,
            "http_status": None,
            "at": row.last_error_at.isoformat() if row.last_error_at else None,
        }
    worked = [s.last_worked_at for s in affected if s.last_worked_at]
    examples: list[dict[str, Any]] = []
    for s in affected:
        examples += s.examples
    return {
        "integration": {
            "id": row.ref,
            "name": row.name,
            "provider": row.provider,
            "base_url": _public_url(row.base_url),
            "status": row.status,
            "status_reason": row.status_reason,
        },
        "affected": [
            {
                "record_type": s.record_type,
                "direction": s.direction,
                "enabled": s.enabled,
                "last_worked_at": s.last_worked_at.isoformat() if s.last_worked_at else None,
                "last_worked_run": s.last_worked_run,
            }
            for s in affected
        ],
        "last_worked_at": max(worked).isoformat() if worked else None,
        "examples": examples[:MAX_EXAMPLES],
        "error": error,
        "recent_changes": [
            {k: v for k, v in _change_dict(c).items() if k != "id"} for c in changes
        ],
        "checks": [{"name": c.name, "verdict": c.verdict, "summary": c.summary} for c in checks],
        "generated_at": ctx.clock().isoformat(),
    }


def bundle_of(
    ctx: Context,
    scope: Scope,
    ref: str,
    *,
    record_type: str | None = None,
    direction: str | None = None,
) -> dict[str, Any]:
    """The bundle without the live checks (no probe, no single-record test)."""
    return diagnose(
        ctx,
        Actor.system("issues"),
        scope,
        ref,
        record_type=record_type,
        direction=direction,
        live=False,
    ).bundle
