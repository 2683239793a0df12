"""A CRM record's ids in other systems (``crm_external_ids``): read, changed, found, forgotten.

An id is unique per organization, record type and system, so one ``hubspot:123`` client
per organization (and another organization may have its own). A claim on an id another
record holds is ``Conflict``. That answer names the holder only when the caller's scope
covers it: a location key is told that the id is taken in its organization, which the
organization-wide rule cannot hide (the write must fail), and nothing else — not which
record holds it, of what location, or with what name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Select, and_, delete, insert, or_, select
from sqlalchemy.orm import Session

from keyrack.domain import crm
from keyrack.domain.crm import ExternalRef, RecordType
from keyrack.domain.tenancy import Scope
from keyrack.errors import Conflict, InvalidInput
from keyrack.services.crm.scoping import KINDS, records_of
from keyrack.storage.tables.crm import ExternalId

ExternalIds = dict[str, str]


def ids_of_records(
    session: Session, record_type: RecordType, record_ids: Iterable[int]
) -> dict[int, ExternalIds]:
    """The external ids of each of ``record_ids`` (those with none are absent), one query."""
    ids = list(record_ids)
    found: dict[int, ExternalIds] = {}
    if not ids:
        return found
    rows = session.execute(
        select(ExternalId.record_id, ExternalId.system, ExternalId.external_id)
        .where(ExternalId.record_type == record_type.value, ExternalId.record_id.in_(ids))
        .order_by(ExternalId.record_id, ExternalId.system)
    )
    for record_id, system, external_id in rows:
        found.setdefault(record_id, {})[system] = external_id
    return found


def ids_of_record(session: Session, record_type: RecordType, record_id: int) -> ExternalIds:
    return ids_of_records(session, record_type, [record_id]).get(record_id, {})


def holding(scope: Scope, record_type: RecordType, ref: ExternalRef) -> Select[int]:
    """The ids of the records of ``record_type`` holding ``ref`` in the scope's organization
    (one at most): an indexed read, for ``model.id.in_(…)``."""
    return select(ExternalId.record_id).where(
        ExternalId.org_id == scope.org_id,
        ExternalId.record_type == record_type.value,
        ExternalId.system == ref.system,
        ExternalId.external_id == ref.external_id,
    )


def assign(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    record_id: int,
    current: Mapping[str, str],
    changes: Mapping[str, str | None],
) -> ExternalIds:
    """Apply ``changes`` (``crm.merge_external_ids``) to the record's ``current`` ids and
    store the result; ``Conflict`` if another record of the organization holds one it sets.

    The caller's transaction holds its organization's change clock, so no other write of
    the organization runs between the check and the insert.
    """
    merged = crm.merge_external_ids(current, crm.validate_external_id_changes(changes))
    added = {system: value for system, value in merged.items() if current.get(system) != value}
    dropped = [system for system in current if merged.get(system) != current[system]]
    if added:
        _refuse_taken(session, scope, record_type, record_id, added)
    mine = and_(ExternalId.record_type == record_type.value, ExternalId.record_id == record_id)
    if dropped:
        session.execute(delete(ExternalId).where(mine, ExternalId.system.in_(dropped)))
    if added:
        session.execute(
            insert(ExternalId),
            [
                {
                    "org_id": scope.org_id,
                    "record_type": record_type.value,
                    "record_id": record_id,
                    "system": system,
                    "external_id": value,
                }
                for system, value in added.items()
            ],
        )
    return merged


def _refuse_taken(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    record_id: int,
    wanted: Mapping[str, str],
) -> None:
    taken = session.execute(
        select(ExternalId.system, ExternalId.external_id, ExternalId.record_id)
        .where(
            ExternalId.org_id == scope.org_id,
            ExternalId.record_type == record_type.value,
            ExternalId.record_id != record_id,
            or_(
                *(
                    and_(ExternalId.system == system, ExternalId.external_id == value)
                    for system, value in wanted.items()
                )
            ),
        )
        .order_by(ExternalId.system)
        .limit(1)
    ).first()
    if taken is None:
        return
    system, value, holder = taken
    kind = KINDS[record_type]
    shown = session.scalar(
        records_of(record_type, scope)
        .with_only_columns(kind.model.ref)
        .where(kind.model.id == holder)
    )
    ref = ExternalRef(system, value)
    if shown is None:
        raise Conflict(f"{ref} is already held by another {kind.what} of this organization")
    raise Conflict(f"{ref} is already held by {kind.what} {shown}")


def forget(session: Session, record_type: RecordType, record_ids: Select[Any] | list[int]) -> None:
    """Delete the external ids of ``record_ids`` (a list, or a query selecting ids)."""
    session.execute(
        delete(ExternalId).where(
            ExternalId.record_type == record_type.value, ExternalId.record_id.in_(record_ids)
        )
    )


def assign_system(
    session: Session,
    scope: Scope,
    record_type: RecordType,
    system: str,
    wanted: Mapping[int, tuple[Mapping[str, str], str]],
) -> dict[int, str]:
    """Set one system's id on many records at once (a sync writing back the ids the other
    system gave): ``wanted`` maps a record id to (its current ids, the id to set). Returns
    the refusals by record id (an id another record holds, an invalid id, too many
    systems); the others are stored, in two statements. The caller holds the clock, as
    for ``assign``."""
    crm.validate_system(system)
    refused: dict[int, str] = {}
    chosen: dict[int, str] = {}
    for record_id, (current, value) in wanted.items():
        try:
            crm.validate_external_id(system, value)
        except InvalidInput as exc:
            refused[record_id] = exc.detail
            continue
        if system not in current and len(current) >= crm.MAX_EXTERNAL_SYSTEMS:
            refused[record_id] = f"a record holds ids of at most {crm.MAX_EXTERNAL_SYSTEMS} systems"
            continue
        if current.get(system) != value:
            chosen[record_id] = value
    if not chosen:
        return refused
    holders = session.execute(
        select(ExternalId.external_id, ExternalId.record_id).where(
            ExternalId.org_id == scope.org_id,
            ExternalId.record_type == record_type.value,
            ExternalId.system == system,
            ExternalId.external_id.in_(set(chosen.values())),
        )
    )
    held = {value: holder for value, holder in holders}
    claimed: dict[str, int] = {}
    for record_id, value in list(chosen.items()):
        holder = held.get(value, claimed.get(value))
        if holder is not None and holder != record_id:
            ref = ExternalRef(system, value)
            refused[record_id] = f"{ref} is already held by another {KINDS[record_type].what}"
            del chosen[record_id]
        else:
            claimed[value] = record_id
    if chosen:
        session.execute(
            delete(ExternalId).where(
                ExternalId.record_type == record_type.value,
                ExternalId.system == system,
                ExternalId.record_id.in_(list(chosen)),
            )
        )
        session.execute(
            insert(ExternalId),
            [
                {
                    "org_id": scope.org_id,
                    "record_type": record_type.value,
                    "record_id": record_id,
                    "system": system,
                    "external_id": value,
                }
                for record_id, value in chosen.items()
            ],
        )
    return refused
