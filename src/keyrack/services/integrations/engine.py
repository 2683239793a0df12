"""The sync engine: what an ``integration.run`` job does, knowing no provider.

A run probes the credential first (a refusal moves the connection's status, which is
an event, and fails the run with the provider's words). Then, for each enabled sync:

* inbound: ``connector.changed_since(watermark)`` is streamed; each record goes through
  the sync's filters (on the provider's fields), then its mappings, then is upserted into
  Keyrack's CRM keyed by ``external_ids[provider]``;
* outbound: Keyrack's records changed since the watermark (``(updated_at, id)`` order)
  go through the filters (on Keyrack's fields) and mappings, then ``connector.upsert`` in
  batches of ``connector.batch_size``; the remote id is written back into
  ``external_ids[provider]`` (without stamping the record: the sync's own bookkeeping is no
  change to send again).

Each batch ends with one transaction holding its outcome rows, the run's counts and
its checkpoint (the watermark after the batch). A run whose worker died is taken up by
another worker from that checkpoint; the batch it was writing is written again by
external id, which the connector answers ``unchanged``, so the far side holds each
record once. Memory stays flat: one batch at a time. A retry run takes the failed
records of the run it retries, by id, and nothing else.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from keyrack.domain import sync_rules
from keyrack.domain.sync_rules import INBOUND, OUTBOUND, FieldRule, Filter, MappingFailed
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput
from keyrack.integrations.connector import (
    KEYRACK,
    Connector,
    ConnectorError,
    CredentialRejected,
    Direction,
    EngagementKind,
    Exchange,
    OutboundRecord,
    Probe,
    ProbeStatus,
    ProviderFailure,
    RecordType,
    RemoteRecord,
    WriteOutcome,
    WriteResult,
)
from keyrack.jobs import RunningJob, Snooze
from keyrack.services.context import Context
from keyrack.services.crm import external_ids, records
from keyrack.services.integrations import connections, issues, local, runs, syncs
from keyrack.services.integrations.local import LocalRecord
from keyrack.services.integrations.runs import ACTIVE, ENDED
from keyrack.storage.tables.integrations import Integration, IntegrationSync, SyncRun, SyncRunRecord

log = logging.getLogger("keyrack.integrations")

INBOUND_BATCH = 100
RETRY_BATCH = 100
MAX_MESSAGE = 4000


@dataclass(slots=True)
class Outcome:
    """One record's outcome, before it is a row."""

    record_type: str
    direction: str
    outcome: str
    local_id: str | None = None
    remote_id: str | None = None
    name: str | None = None
    result: str | None = None
    skip: dict[str, Any] | None = None
    failure: ProviderFailure | None = None
    exchange: Exchange | None = None
    local_error: str | None = None
    keyed: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    record_type: RecordType
    direction: str
    filters: tuple[Filter, ...]
    mappings: tuple[FieldRule, ...]

    @property
    def key(self) -> str:
        return syncs.key(self.record_type, self.direction)

    @classmethod
    def of(cls, sync: IntegrationSync) -> Settings:
        return cls(
            RecordType(sync.record_type),
            sync.direction,
            sync_rules.parse_filters(sync.filters),
            sync_rules.parse_mappings(sync.field_mappings),
        )


@dataclass
class Connection:
    """What the engine keeps of the connection while it runs (no session holds it)."""

    id: int
    ref: str
    provider: str
    scope: Scope
    row: Integration = field(repr=False)


def run_job(ctx: Context, job: RunningJob) -> None:
    """The ``integration.run`` handler."""
    run_id = int(job.payload["run_id"])
    now = ctx.clock()
    with ctx.db.transaction() as session:
        run = session.get(SyncRun, run_id)
        if run is None or run.status in ENDED:
            return  # deleted with its connection, or canceled
        row = session.get(Integration, run.integration_id)
        if row is None:
            return
        if run.started_at is None:
            run.started_at = now
            if run.trigger != "retry":
                run.watermark_before = {
                    syncs.key(s.record_type, s.direction): s.watermark
                    for s in syncs.enabled_syncs(session, row.id)
                }
        run.status = "running"
        session.expunge(row)
    connection = Connection(row.id, row.ref, row.provider, Scope(row.org_id, row.location_id), row)
    Engine(ctx, job, run_id, connection).perform()


class Engine:
    def __init__(
        self, ctx: Context, job: RunningJob | None, run_id: int, connection: Connection
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.run_id = run_id
        self.connection = connection
        self.base_calls = 0
        self.base_wait = 0.0
        self.connector: Connector | None = None
        self.counts: dict[str, Any] | None = None

    def perform(self) -> None:
        ctx, connection = self.ctx, self.connection
        with ctx.db.session() as session:
            run = session.get(SyncRun, self.run_id)
            assert run is not None
            self.base_calls, self.base_wait = run.api_calls, run.rate_limit_wait_seconds
            trigger, retry_of = run.trigger, run.retry_of
        try:
            with connections.connector(
                ctx, connection.row, connections.keep_token(ctx, connection.id)
            ) as connector:
                self.connector = connector
                verdict = connector.probe()
                connections.apply_probe(ctx, connection.id, verdict)
                if verdict.status != ProbeStatus.ACTIVE:
                    self.finish("failed", connections.failure_text(verdict))
                    return
                if trigger == "retry" and retry_of is not None:
                    self.retry(retry_of)
                else:
                    self.syncs()
        except Snooze:
            self.checkpoint_stats()
            raise
        except CredentialRejected as exc:
            connections.apply_probe(
                ctx, connection.id, Probe(exc.status, exc.reason, exc.failure, exc.exchange)
            )
            self.finish("failed", exc.failure.message[:MAX_MESSAGE])
            return
        except ConnectorError as exc:
            connections.apply_probe(
                ctx, connection.id, Probe(ProbeStatus.UNREACHABLE, exc.reason, exc.failure)
            )
            self.finish("failed", exc.failure.message[:MAX_MESSAGE])
            return
        except InvalidInput as exc:  # no credential, a setting no longer valid
            self.finish("failed", exc.detail)
            return
        except Exception as exc:  # a bug must not leave the run running for ever
            log.exception("integration run %s failed", self.run_id)
            self.finish("failed", f"internal error ({type(exc).__name__}); see the worker's log")
            return
        self.finish(None, None)

    # the two directions

    def syncs(self) -> None:
        with self.ctx.db.session() as session:
            run = session.get(SyncRun, self.run_id)
            assert run is not None
            done = set(run.done.get("syncs", []))
            start = {**run.watermark_before, **run.watermark_after}
            todo = sorted(  # clients before what belongs to them
                (
                    Settings.of(s)
                    for s in syncs.enabled_syncs(session, self.connection.id)
                    if syncs.key(s.record_type, s.direction) not in done
                ),
                key=lambda s: (list(RecordType).index(s.record_type), s.direction),
            )
        for settings in todo:
            if settings.direction == INBOUND:
                self.inbound(settings, start.get(settings.key))
            else:
                self.outbound(settings, start.get(settings.key))
            self.commit([], settings=settings, done=settings.key)

    def inbound(self, settings: Settings, watermark: str | None) -> None:
        assert self.connector is not None
        stream = self.connector.changed_since(settings.record_type, watermark)
        for chunk in _batched(stream, INBOUND_BATCH):
            self.stop_if_asked()
            self.commit_inbound(settings, chunk, watermark=chunk[-1].watermark)

    def outbound(self, settings: Settings, watermark: str | None) -> None:
        assert self.connector is not None
        side = local.side(settings.record_type)
        position = local.parse_position(watermark)
        while True:
            self.stop_if_asked()
            with self.ctx.db.session() as session:
                batch = side.changed(
                    session, self.connection.scope, position, self.connector.batch_size
                )
            if not batch:
                return
            position = batch[-1].position
            self.write_out(settings, batch, watermark=local.format_position(position))

    # one batch each way

    def write_out(
        self, settings: Settings, batch: Sequence[LocalRecord], *, watermark: str | None
    ) -> None:
        assert self.connector is not None
        outcomes: list[Outcome | None] = []
        items: list[OutboundRecord] = []
        slots: list[int] = []
        rt, way = settings.record_type.value, OUTBOUND
        unkeyed = self.unkeyed(batch)
        for record in batch:
            found = Outcome(rt, way, "skipped", local_id=record.ref, name=record.name)
            found.remote_id = record.external_ids.get(self.connection.provider)
            if record.ref in unkeyed:
                found.skip = {
                    "reason": "from-provider",
                    "detail": f"it came from {self.connection.provider} as {found.remote_id}, "
                    "which does not carry its Keyrack id; the connector writes by Keyrack id, "
                    "so sending it would make a second record there",
                }
                outcomes.append(found)
                continue
            skip = sync_rules.first_skip(settings.filters, record.fields)
            if skip is not None:
                found.skip = skip.as_dict()
                outcomes.append(found)
                continue
            try:
                mapped = self.mapped(settings, record.fields, OUTBOUND, record.kind)
            except MappingFailed as exc:
                found.outcome, found.local_error = "failed", exc.detail
                outcomes.append(found)
                continue
            links = local.links_out(record, self.connection.provider)
            if links is None:
                found.outcome = "failed"
                found.local_error = "the client it belongs to has no id at the provider yet"
                outcomes.append(found)
                continue
            slots.append(len(outcomes))
            outcomes.append(None)
            kind = EngagementKind(record.kind) if record.kind else None
            items.append(OutboundRecord(record.ref, mapped, links, kind))
        answers = self.connector.upsert(settings.record_type, items) if items else []
        by_ref = {record.ref: record for record in batch}
        for slot, answer in zip(slots, answers, strict=True):
            outcomes[slot] = self.answered(rt, by_ref[answer.keyrack_id], answer)
        with self.ctx.db.transaction() as session:
            records.stamp(session, self.connection.scope.org_id, self.ctx.clock())
            final = [o for o in outcomes if o is not None]
            self.write_back(session, settings.record_type, batch, final)
            self.commit(final, settings=settings, watermark=watermark, session=session)
        self.report()

    def mapped(
        self, settings: Settings, values: dict[str, Any], way: str, kind: str | None
    ) -> dict[str, Any]:
        """The sync's mappings applied; for an engagement, then the connector's mappings
        for its kind (a HubSpot call's subject is not a note's) of the Keyrack fields the
        sync does not map itself."""
        mapped = sync_rules.apply(settings.mappings, values, way)
        if kind is None:
            return mapped
        own = {m.local for m in settings.mappings}
        table = getattr(self.connector, "mappings", None) or {}
        extra = tuple(
            FieldRule(m.local, m.remote, m.transform)
            for m in table.get((settings.record_type, Direction(way)), ())
            if m.kind is not None and m.kind == kind and m.local not in own
        )
        return {**mapped, **sync_rules.apply(extra, values, way)} if extra else mapped

    def answered(self, rt: str, record: LocalRecord, answer: WriteOutcome) -> Outcome:
        found = Outcome(rt, OUTBOUND, "synced", local_id=record.ref, name=record.name)
        found.remote_id = answer.remote_id or record.external_ids.get(self.connection.provider)
        if answer.result == WriteResult.FAILED:
            found.outcome, found.failure, found.exchange = "failed", answer.failure, answer.exchange
        else:
            found.result, found.keyed = answer.result.value, 1
        return found

    def unkeyed(self, batch: Sequence[LocalRecord]) -> set[str]:
        """Refs of records that came from the provider, whose record there does not carry
        their Keyrack id (and that Keyrack never wrote there since)."""
        provider = self.connection.provider
        refs = [record.ref for record in batch if provider in record.external_ids]
        if not refs:
            return set()
        with self.ctx.db.session() as session:
            rows = session.execute(
                select(SyncRunRecord.local_id, func.max(SyncRunRecord.keyed))
                .join(SyncRun, SyncRun.id == SyncRunRecord.run_id)
                .where(
                    SyncRun.integration_id == self.connection.id,
                    SyncRunRecord.local_id.in_(refs),
                    SyncRunRecord.keyed.is_not(None),
                )
                .group_by(SyncRunRecord.local_id)
            )
            return {ref for ref, keyed in rows if ref is not None and keyed == 0}

    def write_back(
        self,
        session: Session,
        record_type: RecordType,
        batch: Sequence[LocalRecord],
        outcomes: list[Outcome],
    ) -> None:
        """Store each written record's remote id as its ``external_ids[provider]``, for the
        whole batch at once; a record whose id cannot be stored fails."""
        held = {record.ref: record for record in batch}
        wanted: dict[int, tuple[dict[str, str], str]] = {}
        by_id: dict[int, Outcome] = {}
        for found in outcomes:
            record = held.get(found.local_id or "")
            if found.outcome != "synced" or record is None or not found.remote_id:
                continue
            wanted[record.id] = (record.external_ids, found.remote_id)
            by_id[record.id] = found
        refused = external_ids.assign_system(
            session,
            self.connection.scope,
            local.crm_type(record_type),
            self.connection.provider,
            wanted,
        )
        for record_id, detail in refused.items():
            found = by_id[record_id]
            found.outcome, found.result, found.local_error, found.keyed = (
                "failed",
                None,
                detail,
                None,
            )

    def commit_inbound(
        self, settings: Settings, chunk: Sequence[RemoteRecord], *, watermark: str | None
    ) -> None:
        with self.ctx.db.transaction() as session:
            at = records.stamp(session, self.connection.scope.org_id, self.ctx.clock())
            outcomes = self.upsert_in(session, settings, chunk, at)
            self.commit(outcomes, settings=settings, watermark=watermark, session=session)
        self.report()

    def upsert_in(
        self, session: Session, settings: Settings, chunk: Sequence[RemoteRecord], at: datetime
    ) -> list[Outcome]:
        """Each provider record through the filters and mappings into Keyrack, in the
        caller's transaction: its outcome."""
        side = local.side(settings.record_type)
        rt, way = settings.record_type.value, INBOUND
        provider = self.connection.provider
        outcomes = []
        for remote in chunk:
            found = Outcome(rt, way, "skipped", remote_id=remote.remote_id, name=remote.name)
            found.local_id = remote.external_ids.get(KEYRACK)
            skip = sync_rules.first_skip(settings.filters, remote.fields)
            if skip is not None:
                found.skip = skip.as_dict()
                outcomes.append(found)
                continue
            try:
                mapped = self.mapped(settings, remote.fields, INBOUND, remote.kind)
                result, ref = side.upsert(
                    session, self.connection.scope, provider, remote, mapped, at
                )
            except (InvalidInput, Conflict) as exc:
                found.outcome, found.local_error = "failed", exc.detail
                outcomes.append(found)
                continue
            found.outcome, found.result, found.local_id = "synced", result, ref
            found.keyed = int(remote.external_ids.get(KEYRACK) == ref)
            outcomes.append(found)
        return outcomes

    # retry

    def retry(self, original_id: int) -> None:
        assert self.connector is not None
        with self.ctx.db.session() as session:
            run = session.get(SyncRun, self.run_id)
            assert run is not None
            after = int(run.done.get("retried_after", 0))
        while True:
            self.stop_if_asked()
            with self.ctx.db.session() as session:
                failed = list(
                    session.scalars(
                        select(SyncRunRecord)
                        .where(
                            SyncRunRecord.run_id == original_id,
                            SyncRunRecord.outcome == "failed",
                            SyncRunRecord.id > after,
                        )
                        .order_by(SyncRunRecord.id)
                        .limit(RETRY_BATCH)
                    )
                )
                current = {
                    syncs.key(s.record_type, s.direction): Settings.of(s)
                    for s in session.scalars(
                        select(IntegrationSync).where(
                            IntegrationSync.integration_id == self.connection.id
                        )
                    )
                }
                for row in failed:
                    session.expunge(row)
            if not failed:
                return
            after = failed[-1].id
            for (rt, way), group in itertools.groupby(
                failed, key=lambda r: (r.record_type, r.direction)
            ):
                settings = current.get(syncs.key(rt, way))
                if settings is None:
                    continue
                rows = list(group)
                if way == OUTBOUND:
                    with self.ctx.db.session() as session:
                        batch = local.side(settings.record_type).by_refs(
                            session, self.connection.scope, [r.local_id for r in rows if r.local_id]
                        )
                    for part in _batched(iter(batch), self.connector.batch_size):
                        self.write_out(settings, part, watermark=None)
                else:
                    found = [
                        self.connector.get(settings.record_type, r.remote_id)
                        for r in rows
                        if r.remote_id
                    ]
                    self.commit_inbound(settings, [f for f in found if f], watermark=None)
            self.commit([], settings=None, retried_after=after)

    # checkpoints

    def stop_if_asked(self) -> None:
        if self.job is not None and self.job.should_stop():
            raise Snooze(1, "the worker stops: the run goes on from its checkpoint")

    def report(self) -> None:
        """The counts as the job's progress (after the commit: SQLite has one writer)."""
        if self.counts is not None and self.job is not None:
            self.job.progress(counts=self.counts)
            self.counts = None

    def checkpoint_stats(self) -> None:
        with self.ctx.db.transaction() as session:
            run = session.get(SyncRun, self.run_id)
            if run is not None:
                self._stats(run)

    def _stats(self, run: SyncRun) -> None:
        if self.connector is not None:
            run.api_calls = self.base_calls + self.connector.stats.api_calls
            run.rate_limit_wait_seconds = (
                self.base_wait + self.connector.stats.rate_limit_wait_seconds
            )

    def commit(
        self,
        outcomes: Sequence[Outcome],
        *,
        settings: Settings | None,
        watermark: str | None = None,
        done: str | None = None,
        retried_after: int | None = None,
        session: Session | None = None,
    ) -> None:
        """Outcome rows, counts, stats and the checkpoint, in one transaction."""
        if session is None:
            with self.ctx.db.transaction() as own:
                self.commit(
                    outcomes,
                    settings=settings,
                    watermark=watermark,
                    done=done,
                    retried_after=retried_after,
                    session=own,
                )
            self.report()
            return
        now = self.ctx.clock()
        run = session.get(SyncRun, self.run_id, with_for_update=True)
        if run is None:
            return
        counts = {rt: {way: dict(c) for way, c in ways.items()} for rt, ways in run.counts.items()}
        for found in outcomes:
            tally = counts.setdefault(found.record_type, {}).setdefault(found.direction, {})
            tally[found.outcome] = tally.get(found.outcome, 0) + 1
            if found.result:
                tally[found.result] = tally.get(found.result, 0) + 1
        if outcomes:  # one multi-row INSERT per batch
            session.execute(insert(SyncRunRecord), [_row(self.run_id, f, now) for f in outcomes])
        run.counts = counts
        if settings is not None and watermark is not None:
            run.watermark_after = {**run.watermark_after, settings.key: watermark}
        if done is not None:
            run.done = {**run.done, "syncs": [*run.done.get("syncs", []), done]}
        if retried_after is not None:
            run.done = {**run.done, "retried_after": retried_after}
        self._stats(run)
        self.counts = counts

    def finish(self, status: str | None, error: str | None) -> None:
        """End the run: its watermarks become the syncs' (what it recorded is exact, even
        for a run that failed part way), and the schedule moves on."""
        now = self.ctx.clock()
        with self.ctx.db.transaction() as session:
            run = session.get(SyncRun, self.run_id)
            row = session.get(Integration, self.connection.id)
            if run is None or row is None or run.status not in ACTIVE:
                return
            self._stats(run)
            failed = any(c.get("failed", 0) for ways in run.counts.values() for c in ways.values())
            run.status = status or ("partial" if failed else "succeeded")
            run.error = error
            run.finished_at = now
            for sync in session.scalars(
                select(IntegrationSync).where(IntegrationSync.integration_id == row.id)
            ):
                wanted = run.watermark_after.get(syncs.key(sync.record_type, sync.direction))
                if wanted is not None and run.trigger != "retry":
                    sync.watermark = wanted
                if sync.enabled and sync.schedule_seconds > 0:
                    sync.next_run_at = now + timedelta(seconds=sync.schedule_seconds)
            if run.status in ("succeeded", "partial"):
                row.last_success_at = now
            elif error:
                row.last_error_at, row.last_error_message = now, error[:MAX_MESSAGE]
        try:  # the run has ended either way; an issue not opened now is opened next time
            issues.evaluate(self.ctx, self.connection.id)
        except Exception:
            log.exception("issues of integration %s not evaluated", self.connection.ref)


def _row(run_id: int, found: Outcome, now: datetime) -> dict[str, Any]:
    failure = found.failure
    return dict(
        run_id=run_id,
        record_type=found.record_type,
        direction=found.direction,
        local_id=found.local_id,
        remote_id=found.remote_id,
        name=(found.name or "")[:500] or None,
        outcome=found.outcome,
        result=found.result,
        skip=found.skip,
        error_message=(failure.message if failure else found.local_error or None),
        error_code=(failure.code if failure else None),
        http_status=(failure.http_status if failure else None),
        exchange=dataclasses.asdict(found.exchange) if found.exchange is not None else None,
        keyed=found.keyed,
        created_at=now,
    )


def _batched(stream: Iterator[Any] | Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(stream)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


PROBE_EVERY = timedelta(days=1)
TICK_JOB = "integrations.tick"


def tick(ctx: Context) -> dict[str, int]:
    """The periodic work: enqueue a run for each connection with a sync due (none while
    one is under way), and probe each connection not probed for a day."""
    now = ctx.clock()
    enqueued = probed = 0
    with ctx.db.session() as session:
        due = sorted(
            set(
                session.scalars(
                    select(IntegrationSync.integration_id).where(
                        IntegrationSync.enabled.is_(True),
                        IntegrationSync.next_run_at.is_not(None),
                        IntegrationSync.next_run_at <= now,
                    )
                )
            )
        )
        stale = list(
            session.scalars(
                select(Integration.id).where(
                    Integration.credential_sealed.is_not(None),
                    (Integration.last_probed_at.is_(None))
                    | (Integration.last_probed_at < now - PROBE_EVERY),
                )
            )
        )
    for integration_id in due:
        with ctx.db.transaction() as session:
            row = session.get(Integration, integration_id)
            if row is None or row.credential_sealed is None:
                continue
            if runs.active_run(session, row.id) is not None:
                continue
            try:
                runs.enqueue_run(session, row, trigger="schedule", requested_by="schedule", now=now)
            except runs.RunInProgress:
                continue
            enqueued += 1
    for integration_id in stale:
        connections.probe(ctx, integration_id)
        probed += 1
    return {"runs_enqueued": enqueued, "probed": probed}
