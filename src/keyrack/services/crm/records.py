"""What every CRM record (client, contact, contract, engagement) shares: ``updated_at`` from
its organization's change clock, external ids, and lists filtered by both.

A sync reads ``?updated_since=`` lists in ``(updated_at, id)`` order and keeps the last
position as its watermark. For that never to skip a change, a record written after a
page was read must sort after that page, even when the wall clock has not moved (or has
stepped back) and other writers commit at the same time. So ``updated_at`` is a stamp:
each writing transaction first advances its organization's clock to
``max(now, last + 1 µs)`` (``stamp``, one upsert) and holds the clock's row until it
commits. Stamps are then strictly increasing in commit order, and a stamp not yet
visible is above every visible one. The price: one organization's CRM writes commit
one at a time (SQLite serialises every write anyway).

``updated_at`` moves only when the record really changes (a field, or its external ids):
a sync writing back what it read is not a change, so it does not echo.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, case, inspect, select, update
from sqlalchemy.orm import Session

from keyrack.domain import crm
from keyrack.domain.crm import RecordType, Unset
from keyrack.domain.tenancy import Scope
from keyrack.services.crm import external_ids
from keyrack.services.crm.external_ids import ExternalIds
from keyrack.services.crm.scoping import KINDS
from keyrack.storage.database import insert_for
from keyrack.storage.paging import Page, paginate, paginate_changes
from keyrack.storage.tables.base import from_epoch_us, to_epoch_us
from keyrack.storage.tables.crm import ChangeClock, Client, Contact, Contract, Engagement

V = TypeVar("V")
ExternalIdChanges = Mapping[str, str | None]


def stamp(session: Session, org_id: int, now: datetime) -> datetime:
    """Advance the organization's change clock and return the stamp for this transaction's
    records. Call it first in the transaction, before touching a record, so every writer
    takes the clock before any row lock (no deadlock between them)."""
    proposed = insert_for(session)(ChangeClock).values(org_id=org_id, last_us=to_epoch_us(now))
    advanced = case(
        (ChangeClock.last_us >= proposed.excluded.last_us, ChangeClock.last_us + 1),
        else_=proposed.excluded.last_us,
    )
    upsert = proposed.on_conflict_do_update(
        index_elements=[ChangeClock.org_id], set_={"last_us": advanced}
    ).returning(ChangeClock.last_us)
    return from_epoch_us(session.execute(upsert).scalar_one())


def page(
    session: Session,
    stmt: Select[Any],
    record_type: RecordType,
    scope: Scope,
    view: Callable[[Any, ExternalIds], V],
    *,
    external_id: str | None,
    updated_since: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[V]:
    """One page of ``stmt`` (scoped records of ``record_type``), as ``view(row, ids)``.

    ``external_id`` (``system:id``) keeps the record holding it. Without ``updated_since``
    the newest come first; with it, records with ``updated_at >= updated_since`` in
    ``(updated_at, id)`` order, the cursor holding the last one's pair.
    """
    model = KINDS[record_type].model
    if external_id is not None:
        held = external_ids.holding(scope, record_type, crm.parse_external_ref(external_id))
        stmt = stmt.where(model.id.in_(held))
    if updated_since is None:
        rows = paginate(session, stmt, model.id, limit=limit, cursor=cursor)
    else:
        rows = paginate_changes(
            session,
            stmt,
            model.updated_at,
            model.id,
            since=updated_since,
            limit=limit,
            cursor=cursor,
        )
    ids = external_ids.ids_of_records(session, record_type, (row.id for row in rows.data))
    return rows.map(lambda row: view(row, ids.get(row.id, {})))


def shown(
    session: Session, record_type: RecordType, row: Any, view: Callable[[Any, ExternalIds], V]
) -> V:
    """``view(row, ids)`` with the record's stored external ids."""
    return view(row, external_ids.ids_of_record(session, record_type, row.id))


def created(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    row: Any,
    *,
    at: datetime,
    external_id_changes: ExternalIdChanges | None,
) -> ExternalIds:
    """Insert the new record ``row``, stamped ``at``, with its external ids."""
    row.created_at = row.updated_at = at
    session.add(row)
    session.flush()
    return external_ids.assign(session, scope, record_type, row.id, {}, external_id_changes or {})


def state(row: Any) -> tuple[Any, ...]:
    """What ``row`` holds (its columns, and the rows it points to), to tell afterwards whether
    a change changed anything."""
    mapper = inspect(row).mapper
    columns = [copy.deepcopy(getattr(row, column.key)) for column in mapper.column_attrs]
    targets = [getattr(row, link.key) for link in mapper.relationships if not link.uselist]
    return (*columns, *(None if target is None else inspect(target).identity for target in targets))


def updated(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    row: Any,
    *,
    before: tuple[Any, ...],
    at: datetime,
    external_id_changes: ExternalIdChanges | Unset,
) -> ExternalIds:
    """Finish a change to ``row`` (its fields set since ``before = state(row)``): merge
    ``external_id_changes``, and stamp ``updated_at`` if a field or an external id changed."""
    with session.no_autoflush:  # the row's change is written once, with its stamp
        ids_before = external_ids.ids_of_record(session, record_type, row.id)
        ids = ids_before
        if not isinstance(external_id_changes, Unset):
            ids = external_ids.assign(
                session, scope, record_type, row.id, ids_before, external_id_changes
            )
    if state(row) != before or ids != ids_before:
        row.updated_at = at
    session.flush()
    return ids


_DEPENDENTS: tuple[tuple[RecordType, Any], ...] = (
    (RecordType.CONTACTS, Contact),
    (RecordType.CONTRACTS, Contract),
    (RecordType.ENGAGEMENTS, Engagement),
)


def touch_dependents(session: Session, client: Client, at: datetime) -> None:
    """Stamp ``at`` on every record ``client`` holds (they changed with it)."""
    for _, model in _DEPENDENTS:
        session.execute(update(model).where(model.client_id == client.id).values(updated_at=at))


def deleted(session: Session, record_type: RecordType, row: Any) -> None:
    """Delete ``row`` with its external ids (a client: with its dependents' too, which the
    database deletes with it)."""
    external_ids.forget(session, record_type, [row.id])
    if isinstance(row, Client):
        for dependent, model in _DEPENDENTS:
            external_ids.forget(
                session, dependent, select(model.id).where(model.client_id == row.id)
            )
    session.delete(row)
