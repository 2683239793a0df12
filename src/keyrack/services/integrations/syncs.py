"""Syncs: one per record type and direction of a connection, each with its own
``enabled``, filters, field mappings and schedule. Disabling one leaves the others as
they are. A sync never set is shown disabled, with the connector's default mappings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack.domain import sync_rules
from keyrack.domain.sync_rules import FieldRule, Filter
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput
from keyrack.integrations.connector import Direction, RecordType
from keyrack.integrations.connectors import connector_for
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.integrations import connections, local
from keyrack.storage.tables.integrations import Integration, IntegrationSync

DEFAULT_SCHEDULE_SECONDS = 900
MAX_SCHEDULE_SECONDS = 7 * 24 * 3600
SYNCED_TYPES = frozenset(RecordType)
"""Record types the engine reads and writes on Keyrack's side."""


@dataclass(frozen=True, slots=True)
class SyncView:
    integration_id: str
    record_type: str
    direction: str
    enabled: bool
    filters: tuple[Filter, ...]
    field_mappings: tuple[FieldRule, ...]
    schedule_seconds: int
    watermark: str | None
    next_run_at: datetime | None
    updated_at: datetime | None

    def settings(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "filters": [f.as_dict() for f in self.filters],
            "field_mappings": [m.as_dict() for m in self.field_mappings],
            "schedule_seconds": self.schedule_seconds,
        }


def key(record_type: str, direction: str) -> str:
    return f"{record_type}:{direction}"


def parse_kind(provider: str, record_type: str, direction: str) -> tuple[RecordType, Direction]:
    """The record type and direction, if the provider and the engine both sync them."""
    try:
        rt, way = RecordType(record_type), Direction(direction)
    except ValueError:
        raise InvalidInput(
            f"record_type must be one of {', '.join(RecordType)} and direction one of "
            f"{', '.join(Direction)}"
        ) from None
    served = getattr(connector_for(provider), "directions", None)  # a class says, as data
    if served is not None and way not in served.get(rt, frozenset()):
        raise InvalidInput(f"{provider} does not sync {rt} {way}")
    if rt not in SYNCED_TYPES:
        raise InvalidInput(
            f"syncing {rt} is not available yet; available: {', '.join(sorted(SYNCED_TYPES))}"
        )
    return rt, way


def default_mappings(provider: str, rt: RecordType, way: Direction) -> tuple[FieldRule, ...]:
    table = getattr(connector_for(provider), "mappings", None) or {}
    return tuple(
        FieldRule(m.local, m.remote, m.transform)
        for m in table.get((rt, way), ())
        if m.kind is None
    )


def view_of(
    row: Integration, sync: IntegrationSync | None, rt: RecordType, way: Direction
) -> SyncView:
    if sync is None:
        return SyncView(
            integration_id=row.ref,
            record_type=rt.value,
            direction=way.value,
            enabled=False,
            filters=(),
            field_mappings=default_mappings(row.provider, rt, way),
            schedule_seconds=DEFAULT_SCHEDULE_SECONDS,
            watermark=None,
            next_run_at=None,
            updated_at=None,
        )
    return SyncView(
        integration_id=row.ref,
        record_type=sync.record_type,
        direction=sync.direction,
        enabled=sync.enabled,
        filters=sync_rules.parse_filters(sync.filters),
        field_mappings=sync_rules.parse_mappings(sync.field_mappings),
        schedule_seconds=sync.schedule_seconds,
        watermark=sync.watermark,
        next_run_at=sync.next_run_at,
        updated_at=sync.updated_at,
    )


def sync_row(session: Session, row: Integration, rt: str, way: str) -> IntegrationSync | None:
    return session.scalars(
        select(IntegrationSync).where(
            IntegrationSync.integration_id == row.id,
            IntegrationSync.record_type == rt,
            IntegrationSync.direction == way,
        )
    ).first()


def enabled_syncs(session: Session, integration_id: int) -> list[IntegrationSync]:
    return list(
        session.scalars(
            select(IntegrationSync)
            .where(
                IntegrationSync.integration_id == integration_id,
                IntegrationSync.enabled.is_(True),
            )
            .order_by(IntegrationSync.id)
        )
    )


def get_sync(ctx: Context, scope: Scope, ref: str, record_type: str, direction: str) -> SyncView:
    with ctx.db.session() as session:
        row = connections.row_in_scope(session, scope, ref)
        rt, way = parse_kind(row.provider, record_type, direction)
        return view_of(row, sync_row(session, row, rt, way), rt, way)


_UNSET: Any = object()


def _check_local_fields(rt: RecordType, mappings: tuple[FieldRule, ...]) -> None:
    known = local.side(rt).fields
    for index, mapping in enumerate(mappings):
        if mapping.local not in known:
            raise InvalidInput(
                f"field_mappings[{index}].local: {rt} have no field {mapping.local!r}; "
                f"known: {', '.join(known)}"
            )


def put_sync(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    record_type: str,
    direction: str,
    *,
    enabled: bool = _UNSET,
    filters: Any = _UNSET,
    field_mappings: Any = _UNSET,
    schedule_seconds: int = _UNSET,
) -> SyncView:
    """Set a sync's settings (those given; the others stay); a change row holds what
    changed, before and after."""
    parsed_filters = None if filters is _UNSET else sync_rules.parse_filters(filters)
    parsed_mappings = (
        None if field_mappings is _UNSET else sync_rules.parse_mappings(field_mappings)
    )
    if schedule_seconds is not _UNSET and not (
        isinstance(schedule_seconds, int) and 0 <= schedule_seconds <= MAX_SCHEDULE_SECONDS
    ):
        raise InvalidInput(f"schedule_seconds must be 0 (manual only) to {MAX_SCHEDULE_SECONDS}")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = connections.row_in_scope(session, scope, ref)
        rt, way = parse_kind(row.provider, record_type, direction)
        if parsed_mappings is not None:
            _check_local_fields(rt, parsed_mappings)
        sync = sync_row(session, row, rt, way)
        before = view_of(row, sync, rt, way).settings()
        if sync is None:
            sync = IntegrationSync(
                integration_id=row.id,
                record_type=rt.value,
                direction=way.value,
                enabled=False,
                filters=[],
                field_mappings=[m.as_dict() for m in default_mappings(row.provider, rt, way)],
                schedule_seconds=DEFAULT_SCHEDULE_SECONDS,
                updated_at=now,
            )
            session.add(sync)
        was_enabled = sync.enabled
        if enabled is not _UNSET:
            if not isinstance(enabled, bool):
                raise InvalidInput("enabled must be true or false")
            sync.enabled = enabled
        if parsed_filters is not None:
            sync.filters = [f.as_dict() for f in parsed_filters]
        if parsed_mappings is not None:
            sync.field_mappings = [m.as_dict() for m in parsed_mappings]
        if schedule_seconds is not _UNSET:
            sync.schedule_seconds = schedule_seconds
        if not sync.enabled or sync.schedule_seconds == 0:
            sync.next_run_at = None
        elif not was_enabled or sync.next_run_at is None:
            sync.next_run_at = now  # newly on: the schedule takes it up at once
        else:
            sync.next_run_at = min(sync.next_run_at, now + timedelta(seconds=sync.schedule_seconds))
        session.flush()
        after = view_of(row, sync, rt, way).settings()
        changed = [k for k in after if after[k] != before[k]]
        if changed:
            sync.updated_at = now
            what = f"sync:{key(rt, way)}"
            connections.record_change(
                session,
                actor,
                row,
                what,
                now=now,
                before={k: before[k] for k in changed},
                after={k: after[k] for k in changed},
            )
            audit.record(
                session,
                actor,
                "integration.sync_changed",
                now=now,
                org_id=row.org_id,
                target_type="integration",
                target_ref=row.ref,
                before={"sync": what, **{k: before[k] for k in changed}},
                after={"sync": what, **{k: after[k] for k in changed}},
            )
        return view_of(row, sync, rt, way)
