"""Bulk exports (SPEC §6.1): create, list, show, cancel, run (the job), download, purge.

``create_export`` writes the export's row and its job in one transaction; the job's
unique key (organization, location, resource) admits one queued or running export of
a resource per scope, so a second is refused with the first one's id (409).

``run`` (the ``export.run`` job) reads the rows through a server-side cursor in
``(changed_at, id)`` order and writes the file in parts of ``PART_SIZE`` bytes, each
with the progress in one short transaction, so its memory does not grow with the row
count and every instance can serve the file.

The watermark. A record's ``updated_at`` is a stamp of its organization's change clock
(``services.crm.records``): stamps rise in commit order, and every stamp up to the
clock's committed value is committed. So the job first reads the clock, exports the
rows stamped from ``updated_since`` up to it, and hands back the clock plus 1 µs as
``next_updated_since``: a later change gets a later stamp and falls in the next export,
and a record changed while the job runs is left to the next one (with its new
values), never written twice in one chain. Pulse responses and usage events are never
changed; they are taken by their arrival time up to the moment the job starts
(a row written by a transaction still open then, stamped earlier, is not: their times
come from the wall clock, not the change clock).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, true, update
from sqlalchemy.orm import Session, aliased

from keyrack.domain import crm
from keyrack.domain import exports as rules
from keyrack.domain.crm import ClientStatus, RecordType
from keyrack.domain.exports import (
    DOWNLOAD_LIFETIME,
    PART_SIZE,
    UNDER_WAY,
    ByteRange,
    Encoder,
    Format,
    Resource,
    Status,
)
from keyrack.domain.ids import new_ref
from keyrack.domain.jobs import FINISHED, Priority
from keyrack.domain.jobs import State as JobState
from keyrack.domain.tenancy import Scope
from keyrack.errors import AccessDenied, Conflict, InvalidInput, KeyrackError, NotFound
from keyrack.jobs import Handler, RunningJob, Worker, queue
from keyrack.jobs import admin as job_admin
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import external_ids
from keyrack.services.crm.scoping import client_in_scope
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.base import MICROSECOND, from_epoch_us
from keyrack.storage.tables.crm import (
    ChangeClock,
    Client,
    Contact,
    Contract,
    Engagement,
    ExternalId,
    PulseResponse,
    UsageEvent,
)
from keyrack.storage.tables.exports import Export, ExportPart
from keyrack.storage.tables.jobs import Job

RUN_EXPORT = "export.run"
PURGE_EXPORTS = "exports.purge"
MAX_ATTEMPTS = 3
CHUNK_ROWS = 1000
"""Rows fetched from the server-side cursor at a time."""
PROGRESS_EVERY = 0.5
"""Seconds between progress reports (besides one with each part of the file)."""


class ExportUnderWay(Conflict):
    """An export of the same resource and scope is queued or running (409, with its id)."""

    def __init__(self, detail: str, export_id: str) -> None:
        super().__init__(detail)
        self.extra = {"export_id": export_id}


class NotReady(Conflict):
    """The export has no file (yet, or any more)."""


# -- what each resource exports ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """How to read one resource: its fields in file order, its rows' statement (``_id``,
    ``_changed`` and the fields), the change column, and the ``RecordType`` of its
    external ids (None: it has none)."""

    fields: tuple[str, ...]
    select: Callable[[Scope, Mapping[str, str]], Select[Any]]
    changed: Any
    row_id: Any
    record_type: RecordType | None
    stamped: bool
    """Whether ``changed`` is a change-clock stamp (else an arrival time)."""
    derive: Callable[[dict[str, Any]], None] = lambda record: None
    """Adds the fields computed from the others."""


def _clients(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    stmt = select(
        Client.id.label("_id"),
        Client.updated_at.label("_changed"),
        Client.ref.label("id"),
        Client.name,
        Client.status,
        Client.location_id,
        Client.owner_email,
        Client.arr_cents,
        Client.health,
        Client.custom_fields,
        Client.created_at,
        Client.updated_at,
    ).where(within_scope(scope, Client.org_id, Client.location_id))
    if "status" in filters:
        stmt = stmt.where(Client.status == filters["status"])
    return stmt


def _of_clients(model: Any, scope: Scope, filters: Mapping[str, str], *columns: Any) -> Select[Any]:
    """Rows of ``model`` (a client's dependent) joined to their client, in scope."""
    stmt = (
        select(model.id.label("_id"), *columns)
        .join(Client, model.client_id == Client.id)
        .where(within_scope(scope, model.org_id, Client.location_id))
    )
    if "client_id" in filters:
        stmt = stmt.where(Client.ref == filters["client_id"])
    return stmt


def _contacts(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    return _of_clients(
        Contact,
        scope,
        filters,
        Contact.updated_at.label("_changed"),
        Contact.ref.label("id"),
        Client.ref.label("client_id"),
        Contact.name,
        Contact.email,
        Contact.phone,
        Contact.title,
        Contact.created_at,
        Contact.updated_at,
    )


def _contracts(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    return _of_clients(
        Contract,
        scope,
        filters,
        Contract.updated_at.label("_changed"),
        Contract.ref.label("id"),
        Client.ref.label("client_id"),
        Contract.name,
        Contract.amount_cents,
        Contract.currency,
        Contract.start_date,
        Contract.end_date,
        Contract.recurring_amount_cents,
        Contract.recurring_interval,
        Contract.created_at,
        Contract.updated_at,
    )


def _engagements(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    person = aliased(Contact)
    return _of_clients(
        Engagement,
        scope,
        filters,
        Engagement.updated_at.label("_changed"),
        Engagement.ref.label("id"),
        Client.ref.label("client_id"),
        person.ref.label("contact_id"),
        Engagement.kind,
        Engagement.occurred_at,
        Engagement.subject,
        Engagement.body,
        Engagement.owner_id,
        Engagement.created_at,
        Engagement.updated_at,
    ).outerjoin(person, Engagement.contact_id == person.id)


def _pulse(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    person = aliased(Contact)
    return _of_clients(
        PulseResponse,
        scope,
        filters,
        PulseResponse.created_at.label("_changed"),
        PulseResponse.ref.label("id"),
        Client.ref.label("client_id"),
        person.ref.label("contact_id"),
        PulseResponse.score,
        PulseResponse.comment,
        PulseResponse.responded_at,
        PulseResponse.created_at,
    ).outerjoin(person, PulseResponse.contact_id == person.id)


def _usage(scope: Scope, filters: Mapping[str, str]) -> Select[Any]:
    return _of_clients(
        UsageEvent,
        scope,
        filters,
        UsageEvent.received_at.label("_changed"),
        UsageEvent.event_id,
        Client.ref.label("client_id"),
        UsageEvent.event,
        UsageEvent.count,
        UsageEvent.occurred_at,
        UsageEvent.received_at,
    )


def _health_band(record: dict[str, Any]) -> None:
    band = crm.health_band(record["health"])
    record["health_band"] = None if band is None else band.value


def _category(record: dict[str, Any]) -> None:
    record["category"] = crm.nps_category(record["score"]).value


SOURCES: dict[Resource, Source] = {
    Resource.CLIENTS: Source(
        (
            "id",
            "name",
            "status",
            "location_id",
            "owner_email",
            "arr_cents",
            "health",
            "health_band",
            "created_at",
            "updated_at",
        ),
        _clients,
        Client.updated_at,
        Client.id,
        RecordType.CLIENTS,
        stamped=True,
        derive=_health_band,
    ),
    Resource.CONTACTS: Source(
        ("id", "client_id", "name", "email", "phone", "title", "created_at", "updated_at"),
        _contacts,
        Contact.updated_at,
        Contact.id,
        RecordType.CONTACTS,
        stamped=True,
    ),
    Resource.CONTRACTS: Source(
        (
            "id",
            "client_id",
            "name",
            "amount_cents",
            "currency",
            "start_date",
            "end_date",
            "recurring_amount_cents",
            "recurring_interval",
            "created_at",
            "updated_at",
        ),
        _contracts,
        Contract.updated_at,
        Contract.id,
        RecordType.CONTRACTS,
        stamped=True,
    ),
    Resource.ENGAGEMENTS: Source(
        (
            "id",
            "client_id",
            "contact_id",
            "kind",
            "occurred_at",
            "subject",
            "body",
            "owner_id",
            "created_at",
            "updated_at",
        ),
        _engagements,
        Engagement.updated_at,
        Engagement.id,
        RecordType.ENGAGEMENTS,
        stamped=True,
    ),
    Resource.PULSE: Source(
        (
            "id",
            "client_id",
            "contact_id",
            "score",
            "category",
            "comment",
            "responded_at",
            "created_at",
        ),
        _pulse,
        PulseResponse.created_at,
        PulseResponse.id,
        None,
        stamped=False,
        derive=_category,
    ),
    Resource.USAGE: Source(
        ("event_id", "client_id", "event", "count", "occurred_at", "received_at"),
        _usage,
        UsageEvent.received_at,
        UsageEvent.id,
        None,
        stamped=False,
    ),
}


# -- the export as shown ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportView:
    ref: str
    resource: Resource
    format: Format
    gzip: bool
    status: Status
    updated_since: datetime | None
    filters: dict[str, str]
    location_id: int | None
    rows_total: int | None
    rows_done: int
    bytes: int
    next_updated_since: datetime | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    download_expires_at: datetime | None

    @classmethod
    def of(cls, row: Export, job: Job | None, now: datetime) -> ExportView:
        """The row, its status told by its job while it is under way (a job that ended
        without finishing the export failed it, or was canceled)."""
        status, error, finished = Status(row.status), row.error, row.finished_at
        if status in UNDER_WAY:
            if job is None or job.state in FINISHED:
                canceled = job is not None and job.state == JobState.CANCELED
                status = Status.CANCELED if canceled else Status.FAILED
                error = error or (job.last_error if job else None) or "its job was lost"
                finished = job.finished_at if job else finished
            else:
                status = Status.RUNNING if job.state == JobState.RUNNING else Status.QUEUED
        if (
            status is Status.SUCCEEDED
            and row.download_expires_at is not None
            and row.download_expires_at <= now
        ):
            status = Status.EXPIRED
        return cls(
            ref=row.ref,
            resource=Resource(row.resource),
            format=Format(row.format),
            gzip=row.gzip,
            status=status,
            updated_since=row.updated_since,
            filters=dict(row.filters),
            location_id=row.location_id,
            rows_total=row.rows_total,
            rows_done=row.rows_done,
            bytes=row.bytes,
            next_updated_since=row.next_updated_since,
            error=error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=finished,
            download_expires_at=row.download_expires_at,
        )


def _unique_key(scope: Scope, resource: Resource) -> str:
    return f"export:{scope.org_id}:{scope.location_id or '-'}:{resource.value}"


def _view(session: Session, row: Export, now: datetime) -> ExportView:
    job = session.get(Job, row.job_id) if row.job_id is not None else None
    return ExportView.of(row, job, now)


def _check_permission(actor: Actor, resource: Resource) -> None:
    needed = rules.READ_PERMISSION[resource]
    if actor.key is not None and needed not in actor.key.permissions:
        raise AccessDenied(
            f"exporting {resource.value} needs the {needed!r} permission too",
            code="insufficient-permission",
        )


def create_export(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    resource: Resource,
    format: Format = Format.CSV,
    gzip: bool = False,
    updated_since: datetime | None = None,
    filters: Mapping[str, Any] | None = None,
) -> ExportView:
    """Queue an export of ``resource`` in ``scope`` (``ExportUnderWay`` while another of the
    same resource and scope is queued or running). Audited."""
    resource, fmt = Resource(resource), Format(format)
    _check_permission(actor, resource)
    checked = rules.check_filters(resource, filters or {})
    if "status" in checked:
        try:
            ClientStatus(checked["status"])
        except ValueError:
            raise InvalidInput(f"no client status {checked['status']!r}") from None
    if updated_since is not None and updated_since.tzinfo is None:
        raise InvalidInput("updated_since needs a UTC offset (e.g. 2026-03-01T00:00:00Z)")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        if "client_id" in checked:
            client_in_scope(session, scope, checked["client_id"])
        row = Export(
            ref=new_ref("exp"),
            org_id=scope.org_id,
            location_id=scope.location_id,
            created_by=actor.label[:200],
            resource=resource.value,
            format=fmt.value,
            gzip=bool(gzip),
            updated_since=updated_since,
            filters=checked,
            status=Status.QUEUED.value,
            rows_done=0,
            bytes=0,
            created_at=now,
        )
        session.add(row)
        session.flush()
        queued = queue.enqueue(
            session,
            RUN_EXPORT,
            {"export_id": row.id, "export_ref": row.ref},
            unique_key=_unique_key(scope, resource),
            priority=Priority.BULK,
            max_attempts=MAX_ATTEMPTS,
            now=now,
        )
        if not queued.created:
            holder = str(queued.job.payload.get("export_ref", ""))
            raise ExportUnderWay(
                f"an export of {resource.value} in this scope is {_stage(queued.job.state)}: "
                f"{holder}",
                holder,
            )
        row.job_id = queued.job.id
        audit.record(
            session,
            actor,
            "export.created",
            now=now,
            org_id=scope.org_id,
            target_type="export",
            target_ref=row.ref,
            after={"resource": resource.value, "format": fmt.value, "filters": checked},
        )
        session.flush()
        return _view(session, row, now)


def _stage(state: JobState) -> str:
    return "running" if state == JobState.RUNNING else "queued"


def _export_in_scope(session: Session, scope: Scope, ref: str) -> Export:
    row = session.scalar(
        select(Export).where(
            Export.ref == ref, within_scope(scope, Export.org_id, Export.location_id)
        )
    )
    if row is None:
        raise NotFound(f"no export {ref!r}")
    return row


def list_exports(
    ctx: Context, scope: Scope, *, limit: int = 50, cursor: str | None = None
) -> Page[ExportView]:
    """Newest first."""
    stmt = select(Export).where(within_scope(scope, Export.org_id, Export.location_id))
    now = ctx.clock()
    with ctx.db.session() as session:
        page = paginate(session, stmt, Export.id, limit=limit, cursor=cursor)
        job_ids = [row.job_id for row in page.data if row.job_id is not None]
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        return page.map(lambda row: ExportView.of(row, jobs.get(row.job_id or 0), now))


def get_export(ctx: Context, scope: Scope, ref: str) -> ExportView:
    with ctx.db.session() as session:
        return _view(session, _export_in_scope(session, scope, ref), ctx.clock())


def cancel_export(ctx: Context, actor: Actor, scope: Scope, ref: str) -> ExportView:
    """Stop a queued or running export (its job too) and drop what it wrote; ``Conflict``
    once it has finished."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _export_in_scope(session, scope, ref)
        view = _view(session, row, now)
        if view.status not in UNDER_WAY:
            raise Conflict(f"export {ref} has ended ({view.status.value}); nothing to cancel")
        row.status, row.finished_at = Status.CANCELED.value, now
        session.execute(delete(ExportPart).where(ExportPart.export_id == row.id))
        if row.job_id is not None:
            # the job may have ended meanwhile: the export says canceled all the same
            with contextlib.suppress(KeyrackError):
                job_admin.cancel(session, row.job_id, now)
        audit.record(
            session,
            actor,
            "export.canceled",
            now=now,
            org_id=scope.org_id,
            target_type="export",
            target_ref=ref,
        )
        session.flush()
        return _view(session, row, now)


# -- the job ----------------------------------------------------------------------------


class _Stopped(Exception):
    """The export was canceled while the job wrote it."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run exports: the rows' statement and header, and the watermark after it."""

    stmt: Select[Any]
    header: list[str]
    watermark: datetime | None


def plan(session: Session, row: Export, now: datetime) -> Plan:
    """The statement of ``row``'s rows from its ``updated_since`` up to the watermark, in
    ``(changed, id)`` order (see the module docstring), and its CSV header."""
    resource = Resource(row.resource)
    source = SOURCES[resource]
    scope = Scope(row.org_id, row.location_id)
    stmt = source.select(scope, row.filters)
    if source.stamped:
        last = session.scalar(select(ChangeClock.last_us).where(ChangeClock.org_id == row.org_id))
        watermark = row.updated_since if last is None else from_epoch_us(last + 1)
    else:
        watermark = now + MICROSECOND
    if row.updated_since is not None:
        stmt = stmt.where(source.changed >= row.updated_since)
    if watermark is not None:
        stmt = stmt.where(source.changed < watermark)
    else:
        stmt = stmt.where(source.row_id.is_(None))  # nothing was ever written
    ids = stmt.with_only_columns(source.row_id).scalar_subquery()
    custom: list[str] = []
    systems: list[str] = []
    if resource is Resource.CLIENTS:
        custom = _custom_names(session, ids)
    if source.record_type is not None:
        systems = list(
            session.scalars(
                select(ExternalId.system)
                .where(
                    ExternalId.record_type == source.record_type.value,
                    ExternalId.record_id.in_(ids),
                )
                .distinct()
            )
        )
    header = rules.columns(source.fields, custom, systems)
    return Plan(stmt.order_by(source.changed, source.row_id), header, watermark)


def _custom_names(session: Session, ids: Any) -> list[str]:
    """Every custom field name among the clients ``ids``."""
    if session.get_bind().dialect.name == "postgresql":
        keys = func.json_object_keys(Client.custom_fields)
        stmt = select(keys).where(Client.id.in_(ids)).distinct()
    else:
        each = func.json_each(Client.custom_fields).table_valued("key").alias("each")
        stmt = select(each.c.key).select_from(Client).join(each, true()).where(Client.id.in_(ids))
        stmt = stmt.distinct()
    return [str(name) for name in session.scalars(stmt)]


def _record(source: Source, row: Any, ids: Mapping[int, Mapping[str, str]]) -> dict[str, Any]:
    mapping = row._mapping
    record = {name: mapping[name] for name in mapping if not name.startswith("_")}
    source.derive(record)
    ordered: dict[str, Any] = {name: record.get(name) for name in source.fields}
    if "custom_fields" in record:
        ordered["custom_fields"] = record["custom_fields"]
    if source.record_type is not None:
        ordered["external_ids"] = dict(ids.get(mapping["_id"], {}))
    return ordered


def run(ctx: Context, job: RunningJob) -> None:
    """Write the export's file (the ``export.run`` job); a retry starts it over."""
    export_id = int(job.payload["export_id"])
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.get(Export, export_id)
        if row is None or row.status not in UNDER_WAY:
            return  # canceled, or gone
        session.execute(delete(ExportPart).where(ExportPart.export_id == export_id))
        row.status, row.started_at, row.rows_done, row.bytes = Status.RUNNING.value, now, 0, 0
        row.error = None
    try:
        _write(ctx, job, row)
    except _Stopped:
        return
    except Exception as error:
        if job.attempt >= MAX_ATTEMPTS:
            _finish_failed(ctx, export_id, error)
        raise


def _write(ctx: Context, job: RunningJob, row: Export) -> None:
    source = SOURCES[Resource(row.resource)]
    part = 0
    done = 0
    with ctx.db.session() as reader:
        planned = plan(reader, row, ctx.clock())
        total = reader.scalar(select(func.count()).select_from(planned.stmt.subquery()))
        _report(ctx, job, row.id, part=None, rows_done=0, rows_total=total)
        encoder = Encoder(Format(row.format), row.gzip, planned.header)
        result = reader.connection().execute(  # Core rows: no ORM work per row
            planned.stmt.execution_options(stream_results=True, yield_per=CHUNK_ROWS)
        )
        with_ids = source.record_type is not None and any(
            name.startswith(rules.EXTERNAL_PREFIX) for name in planned.header
        )  # no system named in the header: none of these rows has an external id
        reported = -PROGRESS_EVERY
        for chunk in result.partitions():
            ids: Mapping[int, Mapping[str, str]] = {}
            if with_ids and source.record_type is not None:
                ids = external_ids.ids_of_records(
                    reader, source.record_type, (r._mapping["_id"] for r in chunk)
                )
            for record_row in chunk:
                encoder.write(_record(source, record_row, ids))
            done += len(chunk)
            while encoder.pending >= PART_SIZE:
                offset = encoder.size
                stored = (part, offset, encoder.take(PART_SIZE))
                _report(ctx, job, row.id, part=stored, rows_done=done, bytes=encoder.size)
                part += 1
                reported = time.monotonic()
            if time.monotonic() - reported >= PROGRESS_EVERY:
                _report(ctx, job, row.id, part=None, rows_done=done, bytes=encoder.size)
                reported = time.monotonic()
            if job.should_stop():
                raise _Stopped
        result.close()
    encoder.close()
    while encoder.pending:
        offset = encoder.size
        _report(ctx, job, row.id, part=(part, offset, encoder.take(PART_SIZE)))
        part += 1
    finished = ctx.clock()
    _report(
        ctx,
        job,
        row.id,
        part=None,
        status=Status.SUCCEEDED.value,
        rows_done=done,
        bytes=encoder.size,
        finished_at=finished,
        download_expires_at=finished + DOWNLOAD_LIFETIME,
        next_updated_since=planned.watermark,
    )


def _report(
    ctx: Context,
    job: RunningJob,
    export_id: int,
    *,
    part: tuple[int, int, bytes] | None,
    **values: Any,
) -> None:
    """Store a part of the file, or progress, while the export still runs (``_Stopped`` once
    it was canceled: the part is not kept)."""
    with ctx.db.transaction() as session:
        if part is not None:
            seq, offset, data = part
            session.add(ExportPart(export_id=export_id, seq=seq, position=offset, data=data))
        changed = session.execute(
            update(Export)
            .where(Export.id == export_id, Export.status == Status.RUNNING.value)
            .values(**(values or {"bytes": Export.bytes}))
            .execution_options(synchronize_session=False)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise _Stopped
    shown = {k: v for k, v in values.items() if k in ("rows_done", "rows_total", "bytes")}
    if shown:
        job.progress(**shown)


def _finish_failed(ctx: Context, export_id: int, error: Exception) -> None:
    with ctx.db.transaction() as session:
        session.execute(delete(ExportPart).where(ExportPart.export_id == export_id))
        session.execute(
            update(Export)
            .where(Export.id == export_id)
            .values(
                status=Status.FAILED.value,
                finished_at=ctx.clock(),
                error=queue.scrub_error(f"{type(error).__name__}: {error}"),
            )
        )


# -- download and purge -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Download:
    """An export's file, or the part of it a ``Range`` asked for."""

    size: int
    """The whole file's bytes."""
    range: ByteRange | None
    media_type: str
    file_name: str
    chunks: Iterator[bytes]

    @property
    def length(self) -> int:
        return self.size if self.range is None else self.range.length


def open_download(ctx: Context, scope: Scope, ref: str, range_header: str | None) -> Download:
    """The file of a succeeded export, whole or the range asked; ``NotReady`` before it
    succeeded and once it expired, ``RangeNotSatisfiable`` for a range past its end."""
    now = ctx.clock()
    with ctx.db.session() as session:
        row = _export_in_scope(session, scope, ref)
        view = _view(session, row, now)
    if view.status is Status.EXPIRED:
        raise NotReady(f"export {ref} expired on {view.download_expires_at:%Y-%m-%d}; run it again")
    if view.status is not Status.SUCCEEDED:
        raise NotReady(f"export {ref} is {view.status.value}; its file is not there")
    wanted = rules.byte_range(range_header, view.bytes)
    return Download(
        size=view.bytes,
        range=wanted,
        media_type=rules.media_type(view.format, view.gzip),
        file_name=rules.file_name(ref, view.resource, view.format, view.gzip),
        chunks=_chunks(ctx, row.id, wanted or ByteRange(0, view.bytes - 1)),
    )


def _chunks(ctx: Context, export_id: int, wanted: ByteRange) -> Iterator[bytes]:
    """The bytes of ``wanted``, one stored part at a time (one short read each)."""
    position = wanted.start
    while position <= wanted.end:
        with ctx.db.session() as session:
            data = session.scalar(
                select(ExportPart.data).where(
                    ExportPart.export_id == export_id, ExportPart.seq == position // PART_SIZE
                )
            )
        if data is None:
            return  # purged meanwhile
        start = position % PART_SIZE
        piece = data[start : start + wanted.end + 1 - position]
        if not piece:
            return
        position += len(piece)
        yield piece


def purge_expired(ctx: Context) -> int:
    """Delete the files of exports past ``download_expires_at``; their status says expired."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        due = select(Export.id).where(
            Export.status == Status.SUCCEEDED.value, Export.download_expires_at <= now
        )
        expired = list(session.scalars(due))
        if not expired:
            return 0
        session.execute(delete(ExportPart).where(ExportPart.export_id.in_(expired)))
        session.execute(
            update(Export).where(Export.id.in_(expired)).values(status=Status.EXPIRED.value)
        )
    return len(expired)


def run_waiting(ctx: Context) -> None:
    """Run the waiting export jobs here, in the calling thread, until none is due (the CLI,
    when no worker may be running)."""
    Worker(ctx, [Handler(RUN_EXPORT, lambda job: run(ctx, job))], bulk_concurrency=1).drain()
