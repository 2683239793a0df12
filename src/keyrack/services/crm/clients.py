"""Clients: the CRM's customer accounts (name, status, owner, ARR, health, custom fields)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyrack.domain import crm
from keyrack.domain.crm import UNSET, ClientStatus, CustomValue, HealthBand, RecordType, Unset
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope, validate_email, validate_name
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.crm import records
from keyrack.services.crm.records import ExternalIdChanges
from keyrack.services.crm.scoping import client_in_scope, clients_of
from keyrack.storage.paging import Page
from keyrack.storage.scoping import location_in_scope
from keyrack.storage.tables.crm import Client

RECORD_TYPE = RecordType.CLIENTS


@dataclass(frozen=True, slots=True)
class ClientView:
    ref: str
    name: str
    status: ClientStatus
    location_id: int | None
    owner_email: str | None
    arr_cents: int
    health: int | None
    custom_fields: Mapping[str, CustomValue]
    external_ids: Mapping[str, str]
    created_at: datetime
    updated_at: datetime

    @property
    def health_band(self) -> HealthBand | None:
        return crm.health_band(self.health)

    @classmethod
    def of(cls, row: Client, external_ids: Mapping[str, str]) -> ClientView:
        return cls(
            ref=row.ref,
            name=row.name,
            status=ClientStatus(row.status),
            location_id=row.location_id,
            owner_email=row.owner_email,
            arr_cents=row.arr_cents,
            health=row.health,
            custom_fields=dict(row.custom_fields),
            external_ids=dict(external_ids),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "location_id": self.location_id,
            "arr_cents": self.arr_cents,
            "health": self.health,
            "external_ids": dict(self.external_ids),
        }


def _owner(email: str | None) -> str | None:
    return validate_email(email) if email else None


def create_client(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    name: str,
    status: ClientStatus = ClientStatus.ACTIVE,
    location_id: int | None = None,
    owner_email: str | None = None,
    arr_cents: int = 0,
    health: int | None = None,
    custom_fields: Mapping[str, Any] | None = None,
    external_ids: ExternalIdChanges | None = None,
) -> ClientView:
    """A location key's clients land in its location; an agency key may pick one."""
    row_values = {
        "name": validate_name(name),
        "status": ClientStatus(status).value,
        "owner_email": _owner(owner_email),
        "arr_cents": crm.validate_cents(arr_cents, "arr_cents"),
        "health": crm.validate_health(health),
        "custom_fields": crm.validate_custom_fields(custom_fields or {}),
    }
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = Client(
            ref=new_ref("cli"),
            org_id=scope.org_id,
            location_id=location_in_scope(session, scope, location_id),
            **row_values,
        )
        ids = records.created(
            session, scope, RECORD_TYPE, row, at=at, external_id_changes=external_ids
        )
        return ClientView.of(row, ids)


def list_clients(
    ctx: Context,
    scope: Scope,
    *,
    status: ClientStatus | None = None,
    external_id: str | None = None,
    updated_since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ClientView]:
    """Newest first, or by change from ``updated_since`` (``records.page``)."""
    stmt = clients_of(scope)
    if status is not None:
        stmt = stmt.where(Client.status == ClientStatus(status).value)
    with ctx.db.session() as session:
        return records.page(
            session,
            stmt,
            RECORD_TYPE,
            scope,
            ClientView.of,
            external_id=external_id,
            updated_since=updated_since,
            limit=limit,
            cursor=cursor,
        )


def get_client(ctx: Context, scope: Scope, ref: str) -> ClientView:
    with ctx.db.session() as session:
        return records.shown(
            session, RECORD_TYPE, client_in_scope(session, scope, ref), ClientView.of
        )


def update_client(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    name: str | Unset = UNSET,
    status: ClientStatus | Unset = UNSET,
    location_id: int | Unset | None = UNSET,
    owner_email: str | Unset | None = UNSET,
    arr_cents: int | Unset = UNSET,
    health: int | Unset | None = UNSET,
    custom_fields: Mapping[str, Any] | Unset = UNSET,
    external_ids: ExternalIdChanges | Unset = UNSET,
) -> ClientView:
    """Change the given fields; ``custom_fields`` is replaced as a whole, ``external_ids``
    merged by system. Moving a client to another location stamps its contacts, contracts
    and engagements too: they are new to that location's lists by change."""
    with ctx.db.transaction() as session:
        at = records.stamp(session, scope.org_id, ctx.clock())
        row = client_in_scope(session, scope, ref)
        before = records.state(row)
        if not isinstance(name, Unset):
            row.name = validate_name(name)
        if not isinstance(status, Unset):
            row.status = ClientStatus(status).value
        if not isinstance(location_id, Unset):
            moved_from = row.location_id
            row.location_id = location_in_scope(session, scope, location_id)
            if row.location_id != moved_from:  # what it holds moves with it, into other lists
                records.touch_dependents(session, row, at)
        if not isinstance(owner_email, Unset):
            row.owner_email = _owner(owner_email)
        if not isinstance(arr_cents, Unset):
            row.arr_cents = crm.validate_cents(arr_cents, "arr_cents")
        if not isinstance(health, Unset):
            row.health = crm.validate_health(health)
        if not isinstance(custom_fields, Unset):
            row.custom_fields = crm.validate_custom_fields(custom_fields)
        ids = records.updated(
            session, scope, RECORD_TYPE, row, before=before, at=at, external_id_changes=external_ids
        )
        return ClientView.of(row, ids)


def delete_client(ctx: Context, actor: Actor, scope: Scope, ref: str) -> ClientView:
    """Delete a client with its contacts, contracts, usage and pulse responses (audited)."""
    with ctx.db.transaction() as session:
        row = client_in_scope(session, scope, ref)
        view = records.shown(session, RECORD_TYPE, row, ClientView.of)
        records.deleted(session, RECORD_TYPE, row)
        audit.record(
            session,
            actor,
            "client.deleted",
            now=ctx.clock(),
            org_id=scope.org_id,
            target_type="client",
            target_ref=ref,
            before=view.snapshot(),
        )
    return view
