"""The CRM's scoped reads (clients, and the records that belong to a client), the kinds of
record by their ``RecordType``, and the offset cursor of aggregate lists. Every filter is
``keyrack.storage.scoping.within_scope``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from keyrack.domain.crm import RecordType, is_ref
from keyrack.domain.tenancy import Scope
from keyrack.errors import InvalidInput, NotFound
from keyrack.storage.paging import check_limit
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.crm import Client, Contact, Contract, Engagement


def clients_of(scope: Scope) -> Select[Client]:
    return select(Client).where(within_scope(scope, Client.org_id, Client.location_id))


Ts = TypeVarTuple("Ts")


def in_scope(stmt: Select[*Ts], model: Any, scope: Scope) -> Select[*Ts]:
    """Bound a query over a client's dependents (``model``) to the caller's scope: they
    are in the location of their client."""
    via = (model.client_id, Client.id)
    return stmt.where(within_scope(scope, model.org_id, Client.location_id, via=via))


def of_client(
    session: Session, stmt: Select[*Ts], model: Any, scope: Scope, client_ref: str | None
) -> Select[*Ts]:
    """``stmt`` narrowed to one client's ``model`` rows when ``client_ref`` names one
    (``NotFound`` if the scope may not see it); unchanged when it is None."""
    if client_ref is None:
        return stmt
    return stmt.where(model.client_id == client_in_scope(session, scope, client_ref).id)


def within(
    stmt: Select[*Ts], column: Any, since: datetime | None, until: datetime | None
) -> Select[*Ts]:
    """``stmt`` narrowed to ``since <= column < until`` (either end may be open)."""
    if since is not None:
        stmt = stmt.where(column >= since)
    if until is not None:
        stmt = stmt.where(column < until)
    return stmt


@dataclass(frozen=True, slots=True)
class RecordKind:
    """A kind of CRM record: its table, the prefix of its public ids, what it is called."""

    model: Any
    prefix: str
    what: str


KINDS: dict[RecordType, RecordKind] = {
    RecordType.CLIENTS: RecordKind(Client, "cli", "client"),
    RecordType.CONTACTS: RecordKind(Contact, "con", "contact"),
    RecordType.CONTRACTS: RecordKind(Contract, "ctr", "contract"),
    RecordType.ENGAGEMENTS: RecordKind(Engagement, "eng", "engagement"),
}


def records_of(record_type: RecordType, scope: Scope) -> Select[Any]:
    """Every record of ``record_type`` the scope may see."""
    model = KINDS[record_type].model
    return clients_of(scope) if model is Client else in_scope(select(model), model, scope)


def client_in_scope(session: Session, scope: Scope, ref: str) -> Client:
    if not is_ref("cli", ref):
        raise NotFound(f"no client {ref!r}")
    row = session.scalar(clients_of(scope).where(Client.ref == ref))
    if row is None:
        raise NotFound(f"no client {ref!r}")
    return row


def contact_of(session: Session, scope: Scope, client: Client, ref: str | None) -> Contact | None:
    """The contact ``ref`` of ``client`` (None for None); ``NotFound`` if it is not one."""
    if ref is None:
        return None
    contact: Contact = one_in_scope(session, Contact, "con", "contact", scope, ref)
    if contact.client_id != client.id:
        raise NotFound(f"no contact {ref!r} at client {client.ref!r}")
    return contact


def one_in_scope(session: Session, model: Any, kind: str, what: str, scope: Scope, ref: str) -> Any:
    """The ``model`` row with public id ``ref`` if the scope may see it, else ``NotFound``."""
    if not is_ref(kind, ref):
        raise NotFound(f"no {what} {ref!r}")
    row = session.scalar(in_scope(select(model), model, scope).where(model.ref == ref))
    if row is None:
        raise NotFound(f"no {what} {ref!r}")
    return row


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o1:{offset}".encode()).decode().rstrip("=")


def decode_offset(cursor: str | None) -> int:
    """Aggregates are grouped rows without ids, so their cursor is a position."""
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        offset = int(value)
        if version != "o1" or not 0 <= offset <= 10**9:
            raise ValueError(version)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned") from None
    return offset


def window(limit: int, cursor: str | None) -> tuple[int, int]:
    """(offset, limit) of an aggregate page."""
    return decode_offset(cursor), check_limit(limit)
