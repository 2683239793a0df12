"""Bulk upload (SPEC §6.1.1): receive a file, run it as a job, show each row's outcome.

The file is stored as it arrives (``begin_upload``, ``add_part``, ``finish_upload``, parts
of any size in the database, so any worker reads it), then the ``import.run`` job reads
it back as a stream and writes ``BATCH_ROWS`` rows per transaction, each row in a
savepoint of its own: a row that fails is rolled back alone and recorded with its line
number and the exact error. The rules of a row are ``keyrack.domain.imports``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from keyrack.domain import crm
from keyrack.domain import imports as rules
from keyrack.domain.crm import UNSET, ClientStatus, ExternalRef, RecordType, Unset
from keyrack.domain.exports import Format, Resource
from keyrack.domain.ids import new_ref
from keyrack.domain.imports import BATCH_ROWS, UNDER_WAY, Outcome, Row, Status
from keyrack.domain.jobs import FINISHED, Priority
from keyrack.domain.jobs import State as JobState
from keyrack.domain.tenancy import Scope, validate_email, validate_name
from keyrack.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    KeyrackError,
    NotFound,
    PayloadTooLarge,
)
from keyrack.jobs import Discard, Handler, RunningJob, Worker, queue
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import contacts, contracts, engagements, external_ids, records
from keyrack.services.crm.scoping import (
    KINDS,
    client_in_scope,
    clients_of,
    contact_of,
    in_scope,
    one_in_scope,
)
from keyrack.storage.paging import Page, check_limit, decode_cursor, encode_cursor, paginate
from keyrack.storage.scoping import location_in_scope, user_in_org, within_scope
from keyrack.storage.tables.crm import Client, Contact, Contract, Engagement, ExternalId
from keyrack.storage.tables.exports import Import, ImportPart, ImportRow
from keyrack.storage.tables.jobs import Job

RUN_IMPORT = "import.run"
UPLOADING = "uploading"
"""The status of an import whose file is still arriving (no job yet)."""
MAX_ATTEMPTS = 3
CLIENTS = cast(Table, Client.__table__)
EXTERNAL_IDS = cast(Table, ExternalId.__table__)
IMPORT_ROWS = cast(Table, ImportRow.__table__)
"""Batches go to the tables, not the ORM entities: no per-row ORM work."""


@dataclass(frozen=True, slots=True)
class ImportView:
    ref: str
    resource: Resource
    format: Format
    status: Status
    bytes: int
    rows_done: int
    created: int
    updated: int
    unchanged: int
    failed: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Import, job: Job | None) -> ImportView:
        status, error, finished = row.status, row.error, row.finished_at
        if status in UNDER_WAY and (job is None or job.state in FINISHED):
            status, finished = Status.FAILED, job.finished_at if job else finished
            error = error or (job.last_error if job else None) or "its job was lost"
        elif status in UNDER_WAY and job is not None:
            status = Status.RUNNING if job.state == JobState.RUNNING else Status.QUEUED
        return cls(
            ref=row.ref,
            resource=Resource(row.resource),
            format=Format(row.format),
            status=Status(status),
            bytes=row.bytes,
            rows_done=row.rows_done,
            created=row.created,
            updated=row.updated,
            unchanged=row.unchanged,
            failed=row.failed,
            error=error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=finished,
        )


@dataclass(frozen=True, slots=True)
class RowView:
    line: int
    outcome: Outcome
    record_id: str | None
    error: str | None


def _view(session: Session, row: Import) -> ImportView:
    return ImportView.of(row, session.get(Job, row.job_id) if row.job_id else None)


def _in_scope(session: Session, scope: Scope, ref: str) -> Import:
    row = session.scalar(
        select(Import).where(
            Import.ref == ref,
            Import.status != UPLOADING,
            within_scope(scope, Import.org_id, Import.location_id),
        )
    )
    if row is None:
        raise NotFound(f"no import {ref!r}")
    return row


# -- receiving the file -----------------------------------------------------------------


def begin_upload(
    ctx: Context, actor: Actor, scope: Scope, *, resource: Resource, format: Format
) -> int:
    """Start receiving a file of ``resource`` rows; returns the import's row id."""
    resource, fmt = Resource(resource), Format(format)
    if resource not in rules.RESOURCES:
        known = ", ".join(r.value for r in rules.RESOURCES)
        raise InvalidInput(f"{resource.value} cannot be uploaded yet; known: {known}")
    needed = rules.WRITE_PERMISSION[resource]
    if actor.key is not None and needed not in actor.key.permissions:
        raise AccessDenied(
            f"uploading {resource.value} needs the {needed!r} permission too",
            code="insufficient-permission",
        )
    with ctx.db.transaction() as session:
        row = Import(
            ref=new_ref("imp"),
            org_id=scope.org_id,
            location_id=scope.location_id,
            created_by=actor.label[:200],
            resource=resource.value,
            format=fmt.value,
            status=UPLOADING,
            bytes=0,
            rows_done=0,
            created=0,
            updated=0,
            unchanged=0,
            failed=0,
            created_at=ctx.clock(),
        )
        session.add(row)
        session.flush()
        return row.id


def add_part(ctx: Context, import_id: int, seq: int, data: bytes) -> None:
    """Store part ``seq`` of the file (``PayloadTooLarge`` past ``MAX_UPLOAD_BYTES``)."""
    with ctx.db.transaction() as session:
        row = session.get(Import, import_id)
        if row is None or row.status != UPLOADING:
            raise NotFound("no upload under way")
        if row.bytes + len(data) > rules.MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(f"a file holds at most {rules.MAX_UPLOAD_BYTES} bytes")
        session.add(ImportPart(import_id=import_id, seq=seq, data=data))
        row.bytes += len(data)


def abandon_upload(ctx: Context, import_id: int) -> None:
    with ctx.db.transaction() as session:
        session.execute(delete(Import).where(Import.id == import_id, Import.status == UPLOADING))


def finish_upload(ctx: Context, actor: Actor, import_id: int) -> ImportView:
    """The file has arrived: queue its job (audited)."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.get(Import, import_id)
        if row is None or row.status != UPLOADING:
            raise NotFound("no upload under way")
        if row.bytes == 0:
            raise InvalidInput("the file is empty")
        row.status = Status.QUEUED.value
        row.job_id = queue.enqueue(
            session,
            RUN_IMPORT,
            {"import_id": row.id, "import_ref": row.ref},
            priority=Priority.BULK,
            max_attempts=MAX_ATTEMPTS,
            now=now,
        ).job.id
        audit.record(
            session,
            actor,
            "import.created",
            now=now,
            org_id=row.org_id,
            target_type="import",
            target_ref=row.ref,
            after={"resource": row.resource, "format": row.format, "bytes": row.bytes},
        )
        session.flush()
        return _view(session, row)


def list_imports(
    ctx: Context, scope: Scope, *, limit: int = 50, cursor: str | None = None
) -> Page[ImportView]:
    stmt = select(Import).where(
        Import.status != UPLOADING, within_scope(scope, Import.org_id, Import.location_id)
    )
    with ctx.db.session() as session:
        return paginate(session, stmt, Import.id, limit=limit, cursor=cursor).map(
            lambda row: _view(session, row)
        )


def get_import(ctx: Context, scope: Scope, ref: str) -> ImportView:
    with ctx.db.session() as session:
        return _view(session, _in_scope(session, scope, ref))


def list_rows(
    ctx: Context,
    scope: Scope,
    ref: str,
    *,
    outcome: Outcome | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RowView]:
    """The rows' outcomes in line order (``outcome``: only those)."""
    check_limit(limit)
    with ctx.db.session() as session:
        found = _in_scope(session, scope, ref)
        stmt = select(ImportRow).where(ImportRow.import_id == found.id)
        if outcome is not None:
            stmt = stmt.where(ImportRow.outcome == Outcome(outcome).value)
        if cursor:
            stmt = stmt.where(ImportRow.line > decode_cursor(cursor))
        rows = list(session.scalars(stmt.order_by(ImportRow.line).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    views = [RowView(r.line, Outcome(r.outcome), r.record_id, r.error) for r in rows]
    return Page(views, encode_cursor(rows[-1].line) if more else None)


# -- the job ----------------------------------------------------------------------------


class _Parts(io.RawIOBase):
    """The stored file as a stream, one part read at a time."""

    def __init__(self, ctx: Context, import_id: int) -> None:
        self._ctx, self._id, self._seq = ctx, import_id, 0
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            with self._ctx.db.session() as session:
                data = session.scalar(
                    select(ImportPart.data).where(
                        ImportPart.import_id == self._id, ImportPart.seq == self._seq
                    )
                )
            if data is None:
                return 0
            self._seq += 1
            self._pending = data
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


Line = tuple[int, dict[str | None, Any] | None, str | None]
"""A line number, the row there (None when it could not be read), and why not."""


def _lines(stream: io.TextIOBase, fmt: Format) -> Iterator[Line]:
    if fmt is Format.CSV:
        reader = csv.DictReader(stream)
        try:
            if not reader.fieldnames:  # reads the header: line numbers count from it
                return
        except csv.Error as error:
            yield 1, None, f"not CSV: {error}"
            return
        while True:
            start = reader.line_num + 1
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield start, None, f"not CSV: {error}"
                return
            yield start, dict(raw), None
        return
    for number, text in enumerate(stream, 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield number, None, f"not JSON: {error.msg} (column {error.colno})"
            continue
        if not isinstance(value, dict):
            yield number, None, "not a JSON object"
            continue
        yield number, value, None


def run(ctx: Context, job: RunningJob) -> None:
    """Apply the uploaded file (the ``import.run`` job); a retry starts it over, which the
    rows' idempotence makes safe."""
    import_id = int(job.payload["import_id"])
    with ctx.db.transaction() as session:
        row = session.get(Import, import_id)
        if row is None or row.status not in UNDER_WAY:
            return
        session.execute(delete(ImportRow).where(ImportRow.import_id == import_id))
        row.status, row.started_at, row.error = Status.RUNNING.value, ctx.clock(), None
        row.rows_done = row.created = row.updated = row.unchanged = row.failed = 0
    scope = Scope(row.org_id, row.location_id)
    fmt, resource = Format(row.format), Resource(row.resource)
    stream = io.TextIOWrapper(io.BufferedReader(_Parts(ctx, import_id)), "utf-8", newline="")
    batch: list[Line] = []
    try:
        for line in _lines(stream, fmt):
            batch.append(line)
            if len(batch) >= BATCH_ROWS:
                _apply(ctx, import_id, scope, resource, fmt, batch)
                job.progress(rows_done=line[0])
                batch = []
        if batch:
            _apply(ctx, import_id, scope, resource, fmt, batch)
    except UnicodeDecodeError as error:
        _finish(ctx, import_id, Status.FAILED, f"the file is not UTF-8 ({error.reason})")
        raise Discard("the file is not UTF-8") from None
    _finish(ctx, import_id, Status.SUCCEEDED, None)


def _finish(ctx: Context, import_id: int, status: Status, error: str | None) -> None:
    with ctx.db.transaction() as session:
        session.execute(
            update(Import)
            .where(Import.id == import_id)
            .values(status=status.value, error=error, finished_at=ctx.clock())
        )


def _apply(
    ctx: Context, import_id: int, scope: Scope, resource: Resource, fmt: Format, batch: list[Line]
) -> None:
    """Write one batch of rows with their outcomes and counts, in one transaction: clients
    all at once (``_write_batch``), or, if the database refuses that, each row in a
    savepoint of its own, so only the rows at fault fail; other records each row in its
    savepoint (``UPSERTS``)."""
    results: dict[int, tuple[Outcome, str | None, str | None]] = {}
    parsed: list[tuple[int, Row]] = []
    for number, raw, problem in batch:
        if raw is None:
            results[number] = (Outcome.FAILED, None, problem)
            continue
        try:
            parsed.append((number, rules.record_row(resource, raw, fmt)))
        except KeyrackError as refused:
            results[number] = (Outcome.FAILED, None, refused.detail)
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        upsert = UPSERTS[resource]
        try:
            if resource is not Resource.CLIENTS:
                raise _Again
            with session.begin_nested():
                results.update(_write_batch(session, scope, parsed, at))
        except SQLAlchemyError:
            for number, row in parsed:
                results[number] = _one(session, scope, row, at, upsert)
        outcomes = [
            {
                "import_id": import_id,
                "line": number,
                "outcome": outcome.value,
                "record_id": ref,
                "error": None if error is None else error[:2000],
            }
            for number, (outcome, ref, error) in sorted(results.items())
        ]
        if outcomes:
            session.execute(insert(IMPORT_ROWS), outcomes)
        tally = {o.value: sum(1 for x in outcomes if x["outcome"] == o.value) for o in Outcome}
        session.execute(
            update(Import)
            .where(Import.id == import_id)
            .values(
                rows_done=Import.rows_done + len(outcomes),
                **{name: getattr(Import, name) + count for name, count in tally.items()},
            )
        )


Upsert = Callable[[Session, Scope, Row, datetime], tuple[Outcome, str]]


def _one(
    session: Session, scope: Scope, row: Row, at: datetime, upsert: Upsert
) -> tuple[Outcome, str | None, str | None]:
    """One row in a savepoint of its own (the slow path, where a batch was refused)."""
    try:
        with session.begin_nested():
            outcome, ref = upsert(session, scope, row, at)
        return outcome, ref, None
    except KeyrackError as refused:
        return Outcome.FAILED, None, refused.detail
    except SQLAlchemyError as refused:
        reason = str(getattr(refused, "orig", refused)).splitlines()[0]
        return Outcome.FAILED, None, f"the database refused the row: {reason}"


_COLUMNS = ("name", "status", "location_id", "owner_email", "arr_cents", "health", "custom_fields")


def _checked(
    session: Session, scope: Scope, fields: dict[str, Any], locations: dict[Any, Any]
) -> dict[str, Any]:
    """``fields`` validated as the API does (locations looked up once per batch)."""
    probe = Client(location_id=None)
    wanted = dict(fields)
    if "location_id" in wanted:
        key = wanted.pop("location_id")
        if key not in locations:
            locations[key] = location_in_scope(session, scope, key)
    _set(session, scope, probe, wanted)
    checked = {name: getattr(probe, name) for name in wanted}
    if "location_id" in fields:
        checked["location_id"] = locations[fields["location_id"]]
    return checked


def _write_batch(
    session: Session, scope: Scope, parsed: list[tuple[int, Row]], at: datetime
) -> dict[int, tuple[Outcome, str | None, str | None]]:
    """The batch as a few statements: one read of the clients its ids and external ids
    name, one insert of the new clients, one update of the changed ones, and their external
    ids. Each row is judged by the rules ``_upsert_client`` applies one at a time."""
    results: dict[int, tuple[Outcome, str | None, str | None]] = {}
    refs = {row.ref for _, row in parsed if row.ref is not None}
    by_ref = {c.ref: c for c in session.scalars(clients_of(scope).where(Client.ref.in_(refs)))}
    pairs = {(s, v) for _, row in parsed for s, v in row.external_ids.items()}
    holders: dict[tuple[str, str], int] = {}
    for system in {s for s, _ in pairs}:
        asked = [v for s, v in pairs if s == system]
        held = session.execute(
            select(ExternalId.external_id, ExternalId.record_id).where(
                ExternalId.org_id == scope.org_id,
                ExternalId.record_type == RecordType.CLIENTS.value,
                ExternalId.system == system,
                ExternalId.external_id.in_(asked),
            )
        )
        holders.update({(system, value): record_id for value, record_id in held})
    visible = {
        c.id: c
        for c in session.scalars(clients_of(scope).where(Client.id.in_(set(holders.values()))))
    }
    by_id = {**visible, **{c.id: c for c in by_ref.values()}}
    current_ids = external_ids.ids_of_records(session, RecordType.CLIENTS, by_id)
    locations: dict[Any, Any] = {}
    creates: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    updates: dict[int, tuple[int, dict[str, Any], dict[str, str]]] = {}
    claimed: dict[tuple[str, str], int | str] = dict(holders.items())
    for number, row in parsed:
        try:
            target = _target(row, by_ref, holders, by_id)
            changes = crm.validate_external_id_changes(row.external_ids)
            fields = _checked(session, scope, row.fields, locations)
            key: int | str = target.id if target is not None else f"new:{number}"
            if target is None:
                current: dict[str, str] = {}
                values: dict[str, Any] = {
                    "status": ClientStatus.ACTIVE.value,
                    "location_id": location_in_scope(session, scope, None),
                    "owner_email": None,
                    "arr_cents": 0,
                    "health": None,
                    "custom_fields": {},
                }
                if "name" not in fields:
                    raise InvalidInput(
                        "name: required to create a client (no id or external id matched)"
                    )
            elif target.id in updates:  # named twice in a batch: the slow path decides
                raise _Again
            else:
                current = dict(current_ids.get(target.id, {}))
                values = {name: getattr(target, name) for name in _COLUMNS}
            merged = crm.merge_external_ids(current, changes)
            for system, value in merged.items():
                holder = claimed.get((system, value))
                if holder is not None and holder != key:
                    raise Conflict(
                        f"{ExternalRef(system, value)} is already held by another client"
                    )
            new_values = {**values, **fields}
            if target is None:
                creates.append((number, new_values, merged))
            elif new_values != values or merged != current:
                updates[target.id] = (number, new_values, merged)
            else:
                results[number] = (Outcome.UNCHANGED, target.ref, None)
            for system, value in merged.items():
                claimed[(system, value)] = key
        except _Again:
            raise
        except KeyrackError as refused:
            results[number] = (Outcome.FAILED, None, refused.detail)
    if creates:
        inserted = session.execute(
            insert(CLIENTS).returning(CLIENTS.c.id, CLIENTS.c.ref, sort_by_parameter_order=True),
            [
                {
                    "ref": new_ref("cli"),
                    "org_id": scope.org_id,
                    "created_at": at,
                    "updated_at": at,
                    **values,
                }
                for _line, values, _ids in creates
            ],
        ).all()
        new_ids: list[dict[str, Any]] = []
        for (number, _values, merged), (client_id, ref) in zip(creates, inserted, strict=True):
            results[number] = (Outcome.CREATED, ref, None)
            new_ids.extend(_id_rows(scope, client_id, merged))
        if new_ids:
            session.execute(insert(EXTERNAL_IDS), new_ids)
    if updates:
        session.execute(
            update(Client),
            [{"id": cid, **change[1], "updated_at": at} for cid, change in updates.items()],
        )
        replaced = [cid for cid, change in updates.items() if change[2] != current_ids.get(cid, {})]
        if replaced:
            external_ids.forget(session, RecordType.CLIENTS, replaced)
            rows = [r for cid in replaced for r in _id_rows(scope, cid, updates[cid][2])]
            if rows:
                session.execute(insert(EXTERNAL_IDS), rows)
        for cid, change in updates.items():
            results[change[0]] = (Outcome.UPDATED, by_id[cid].ref, None)
    return results


class _Again(SQLAlchemyError):
    """A batch the fast path does not judge: redo it row by row."""


def _target(
    row: Row,
    by_ref: dict[str, Client],
    holders: dict[tuple[str, str], int],
    by_id: dict[int, Client],
) -> Client | None:
    if row.ref is not None:
        if row.ref not in by_ref:
            raise NotFound(f"no client {row.ref!r}")
        return by_ref[row.ref]
    for system, value in sorted(row.external_ids.items()):
        holder = holders.get((system, value))
        if holder is not None and holder in by_id:
            return by_id[holder]
    return None


def _id_rows(scope: Scope, client_id: int, ids: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "org_id": scope.org_id,
            "record_type": RecordType.CLIENTS.value,
            "record_id": client_id,
            "system": system,
            "external_id": value,
        }
        for system, value in ids.items()
    ]


def _match(session: Session, scope: Scope, row: Row) -> Client | None:
    if row.ref is not None:
        found = session.scalar(clients_of(scope).where(Client.ref == row.ref))
        if found is None:
            raise NotFound(f"no client {row.ref!r}")
        return found
    for system, value in sorted(row.external_ids.items()):
        ref = ExternalRef(crm.validate_system(system), value)
        held = external_ids.holding(scope, RecordType.CLIENTS, ref)
        found = session.scalar(clients_of(scope).where(Client.id.in_(held)))
        if found is not None:
            return found
    return None


def _set(session: Session, scope: Scope, client: Client, fields: dict[str, Any]) -> None:
    """Validate ``fields`` as the API does and set them on ``client``."""
    for name, value in fields.items():
        if name == "name":
            client.name = validate_name(value)
        elif name == "status":
            try:
                client.status = ClientStatus(value).value
            except ValueError:
                known = ", ".join(s.value for s in ClientStatus)
                raise InvalidInput(f"status: {value!r} is not one of {known}") from None
        elif name == "location_id":
            client.location_id = location_in_scope(session, scope, value)
        elif name == "owner_email":
            client.owner_email = validate_email(value) if value else None
        elif name == "arr_cents":
            client.arr_cents = crm.validate_cents(value, "arr_cents")
        elif name == "health":
            client.health = crm.validate_health(value)
        elif name == "custom_fields":
            client.custom_fields = crm.validate_custom_fields(value)


def _upsert_client(session: Session, scope: Scope, row: Row, at: datetime) -> tuple[Outcome, str]:
    found = _match(session, scope, row)
    if found is None:
        if "name" not in row.fields:
            raise InvalidInput("name: required to create a client (no id or external id matched)")
        client = Client(
            ref=new_ref("cli"),
            org_id=scope.org_id,
            location_id=location_in_scope(session, scope, None),
            status=ClientStatus.ACTIVE.value,
            arr_cents=0,
            custom_fields={},
        )
        _set(session, scope, client, row.fields)
        records.created(
            session, scope, RecordType.CLIENTS, client, at=at, external_id_changes=row.external_ids
        )
        return Outcome.CREATED, client.ref
    before, stamped = records.state(found), found.updated_at
    _set(session, scope, found, row.fields)
    fields_changed = records.state(found) != before
    records.updated(
        session,
        scope,
        RecordType.CLIENTS,
        found,
        before=before,
        at=at,
        external_id_changes=row.external_ids,
    )
    changed = fields_changed or (found.updated_at == at and stamped != at)
    return (Outcome.UPDATED if changed else Outcome.UNCHANGED), found.ref


def _match_record(session: Session, scope: Scope, record_type: RecordType, row: Row) -> Any:
    """The contact, contract or engagement ``row`` names by id, else by an external id (the
    holder read first, then the record by its key: a plan PostgreSQL keeps on an index)."""
    kind = KINDS[record_type]
    if row.ref is not None:
        return one_in_scope(session, kind.model, kind.prefix, kind.what, scope, row.ref)
    for system, value in sorted(row.external_ids.items()):
        ref = ExternalRef(crm.validate_system(system), value)
        record_id = session.scalar(external_ids.holding(scope, record_type, ref))
        if record_id is None:
            continue
        stmt = in_scope(select(kind.model), kind.model, scope).where(kind.model.id == record_id)
        match = session.scalar(stmt)
        if match is not None:
            return match
    return None


R = TypeVar("R", Contact, Contract, Engagement)
"""A CRM record an upload row matches by id or external id."""


def _created(
    session: Session, scope: Scope, record_type: RecordType, record: Any, row: Row, at: datetime
) -> tuple[Outcome, str]:
    """Record a new CRM record (stamped, with the row's external ids)."""
    records.created(
        session, scope, record_type, record, at=at, external_id_changes=row.external_ids
    )
    return Outcome.CREATED, record.ref


def _updated(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    found: R,
    checked: Mapping[str, Any],
    row: Row,
    at: datetime,
    then: Callable[[R], None] | None = None,
) -> tuple[Outcome, str]:
    """Apply a row's checked fields (and ``then``: the record's own further changes and
    checks) to a matched record: ``updated`` when its fields or external ids changed."""
    before, stamped = records.state(found), found.updated_at
    for name, value in checked.items():
        setattr(found, name, value)
    if then is not None:
        then(found)
    fields_changed = records.state(found) != before
    records.updated(
        session,
        scope,
        record_type,
        found,
        before=before,
        at=at,
        external_id_changes=row.external_ids,
    )
    changed = fields_changed or (found.updated_at == at and stamped != at)
    return (Outcome.UPDATED if changed else Outcome.UNCHANGED), found.ref


def _upsert_contact(session: Session, scope: Scope, row: Row, at: datetime) -> tuple[Outcome, str]:
    """A contact matched by id or external id, else created at the client ``client_id``
    names (which the scope must see); fields validated as the API does."""
    fields = dict(row.fields)
    client_ref = fields.pop("client_id", None)
    checked = contacts.validated(**fields)
    found = _match_record(session, scope, RecordType.CONTACTS, row)
    client = None if client_ref is None else client_in_scope(session, scope, client_ref)
    if found is None:
        if client is None:
            raise InvalidInput(
                "client_id: required to create a contact (no id or external id matched)"
            )
        if "name" not in checked:
            raise InvalidInput("name: required to create a contact (no id or external id matched)")
        contact = Contact(ref=new_ref("con"), org_id=scope.org_id, client=client, **checked)
        return _created(session, scope, RecordType.CONTACTS, contact, row, at)
    if client is not None and client.id != found.client_id:
        raise InvalidInput(f"client_id: contact {found.ref!r} belongs to another client")
    return _updated(session, scope, RecordType.CONTACTS, found, checked, row, at)


_CONTRACT_REQUIRED = ("name", "amount_cents", "start_date")


def _upsert_contract(session: Session, scope: Scope, row: Row, at: datetime) -> tuple[Outcome, str]:
    """A contract matched by id or external id, else created at the client ``client_id``
    names (which the scope must see); fields validated and checked as the API does."""
    fields = dict(row.fields)
    client_ref = fields.pop("client_id", None)
    checked = contracts.validated(**fields)
    found = _match_record(session, scope, RecordType.CONTRACTS, row)
    client = None if client_ref is None else client_in_scope(session, scope, client_ref)
    if found is None:
        if client is None:
            raise InvalidInput(
                "client_id: required to create a contract (no id or external id matched)"
            )
        for name in _CONTRACT_REQUIRED:
            if checked.get(name) is None:
                raise InvalidInput(
                    f"{name}: required to create a contract (no id or external id matched)"
                )
        contract = Contract(
            ref=new_ref("ctr"),
            org_id=scope.org_id,
            client=client,
            **{"currency": "USD", **checked},
        )
        contracts.check(contract)
        return _created(session, scope, RecordType.CONTRACTS, contract, row, at)
    if client is not None and client.id != found.client_id:
        raise InvalidInput(f"client_id: contract {found.ref!r} belongs to another client")
    for name in _CONTRACT_REQUIRED:
        if name in checked and checked[name] is None:
            raise InvalidInput(f"{name}: a contract always has one")
    return _updated(
        session, scope, RecordType.CONTRACTS, found, checked, row, at, then=contracts.check
    )


def _upsert_engagement(
    session: Session, scope: Scope, row: Row, at: datetime
) -> tuple[Outcome, str]:
    """An engagement matched by id or external id, else created at the client ``client_id``
    names (which the scope must see), with ``contact_id`` one of that client's contacts;
    fields validated as the API does."""
    fields = dict(row.fields)
    client_ref = fields.pop("client_id", None)
    contact_ref = fields.pop("contact_id", UNSET)
    owner_id = fields.pop("owner_id", UNSET)
    checked = engagements.validated(**fields)
    found = _match_record(session, scope, RecordType.ENGAGEMENTS, row)
    client = None if client_ref is None else client_in_scope(session, scope, client_ref)
    if found is None:
        if client is None:
            raise InvalidInput(
                "client_id: required to create an engagement (no id or external id matched)"
            )
        if checked.get("kind") is None:
            raise InvalidInput(
                "kind: required to create an engagement (no id or external id matched)"
            )
        engagement = Engagement(
            ref=new_ref("eng"),
            org_id=scope.org_id,
            client=client,
            contact=contact_of(session, scope, client, _given(contact_ref)),
            owner_id=user_in_org(session, scope, _given(owner_id)),
            **{**checked, "occurred_at": checked.get("occurred_at") or at},
        )
        return _created(session, scope, RecordType.ENGAGEMENTS, engagement, row, at)
    if client is not None and client.id != found.client_id:
        raise InvalidInput(f"client_id: engagement {found.ref!r} belongs to another client")
    for name in ("kind", "occurred_at"):
        if name in checked and checked[name] is None:
            raise InvalidInput(f"{name}: an engagement always has one")

    def relink(found: Engagement) -> None:
        if not isinstance(contact_ref, Unset):
            found.contact = contact_of(session, scope, found.client, contact_ref)
        if not isinstance(owner_id, Unset):
            found.owner_id = user_in_org(session, scope, owner_id)

    return _updated(session, scope, RecordType.ENGAGEMENTS, found, checked, row, at, then=relink)


def _given(value: Any) -> Any:
    return None if isinstance(value, Unset) else value


UPSERTS: dict[Resource, Upsert] = {
    Resource.ENGAGEMENTS: _upsert_engagement,
    Resource.CLIENTS: _upsert_client,
    Resource.CONTACTS: _upsert_contact,
    Resource.CONTRACTS: _upsert_contract,
}
"""How a row of each uploadable resource is written, one at a time."""


def counts(ctx: Context, import_id: int) -> dict[str, int]:
    """Outcomes per kind, counted from the rows (a check on the running tallies)."""
    with ctx.db.session() as session:
        rows = session.execute(
            select(ImportRow.outcome, func.count())
            .where(ImportRow.import_id == import_id)
            .group_by(ImportRow.outcome)
        )
        return {outcome: int(n) for outcome, n in rows}


def run_waiting(ctx: Context) -> None:
    """Run the waiting import jobs here, in the calling thread (the CLI)."""
    Worker(ctx, [Handler(RUN_IMPORT, lambda job: run(ctx, job))], bulk_concurrency=1).drain()
