"""Keyrack's side of a sync, per record type: the records changed since a position (in
``(updated_at, id)`` order, as ``?updated_since=`` lists them), their fields as filters and
mappings see them, and the upsert of a provider's record keyed by ``external_ids``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from keyrack.domain import crm
from keyrack.domain.crm import (
    MAX_ENGAGEMENT_BODY,
    MAX_SUBJECT,
    UNSET,
    ClientStatus,
    EngagementKind,
    Interval,
)
from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import Scope, validate_email, validate_name
from keyrack.errors import InvalidInput
from keyrack.integrations.connector import KEYRACK, RecordType, RemoteRecord
from keyrack.services.crm import external_ids, records
from keyrack.services.crm.scoping import clients_of, in_scope
from keyrack.storage.tables.base import from_epoch_us, to_epoch_us
from keyrack.storage.tables.crm import Client, Contact, Contract, Engagement, ExternalId

Position = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class LocalRecord:
    id: int
    ref: str
    name: str
    fields: dict[str, Any]
    external_ids: dict[str, str]
    position: Position
    links: dict[RecordType, dict[str, str]] = field(default_factory=dict)
    """The external ids of the records it belongs to (a contact's client)."""
    kind: str | None = None
    """An engagement's kind (it picks the provider's object)."""


def parse_position(watermark: str | None) -> Position | None:
    if not watermark:
        return None
    try:
        us, row_id = watermark.split(":")
        return from_epoch_us(int(us)), int(row_id)
    except ValueError:
        return None


def format_position(position: Position) -> str:
    return f"{to_epoch_us(position[0])}:{position[1]}"


def crm_type(record_type: RecordType) -> crm.RecordType:
    return crm.RecordType(record_type.value)


def links_out(record: LocalRecord, provider: str) -> dict[RecordType, str] | None:
    """The remote ids of the records ``record`` belongs to, or None if one has none yet."""
    found = {}
    for rt, ids in record.links.items():
        if provider not in ids:
            return None
        found[rt] = ids[provider]
    return found


def held_by(
    session: Session, scope: Scope, record_type: RecordType, provider: str, remote_id: str
) -> int | None:
    return session.scalars(
        select(ExternalId.record_id).where(
            ExternalId.org_id == scope.org_id,
            ExternalId.record_type == record_type.value,
            ExternalId.system == provider,
            ExternalId.external_id == remote_id,
        )
    ).first()


class Side(Protocol):
    record_type: RecordType
    fields: tuple[str, ...]

    def changed(
        self, session: Session, scope: Scope, after: Position | None, limit: int
    ) -> list[LocalRecord]: ...

    def by_refs(self, session: Session, scope: Scope, refs: Sequence[str]) -> list[LocalRecord]: ...

    def upsert(
        self,
        session: Session,
        scope: Scope,
        provider: str,
        remote: RemoteRecord,
        mapped: Mapping[str, Any],
        at: datetime,
    ) -> tuple[str, str]:
        """Create or update the record holding ``external_ids[provider] = remote_id``:
        (``created``/``updated``/``unchanged``, its ref)."""


def _after(stmt: Any, model: Any, after: Position | None) -> Any:
    if after is not None:
        stmt = stmt.where(tuple_(model.updated_at, model.id) > tuple_(*after))
    return stmt.order_by(model.updated_at, model.id)


def _text(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None or value == "":
        if optional:
            return None
        raise InvalidInput(f"{what} is required")
    return validate_name(str(value), what)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a whole number")
    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float) or number != int(number):
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a whole number, not {value!r}") from None


def _find(
    session: Session, scope: Scope, model: Any, rt: RecordType, provider: str, remote: RemoteRecord
) -> Any:
    """The record holding the remote id, or (a record Keyrack wrote there) the Keyrack id
    it carries."""
    held = held_by(session, scope, rt, provider, remote.remote_id)
    if held is not None:
        return session.get(model, held)
    ref = remote.external_ids.get(KEYRACK)
    if ref:
        found = session.scalars(
            in_scope(select(model), model, scope).where(model.ref == ref)
            if model is not Client
            else clients_of(scope).where(Client.ref == ref)
        ).first()
        return found
    return None


def _client_of(session: Session, scope: Scope, provider: str, remote: RemoteRecord) -> Client:
    """The Keyrack client a provider's record belongs to, by the client's remote id."""
    company = remote.links.get(RecordType.CLIENTS)
    client_id = held_by(session, scope, RecordType.CLIENTS, provider, company) if company else None
    client = session.get(Client, client_id) if client_id is not None else None
    if client is None or not scope.covers(client.org_id, client.location_id):
        raise InvalidInput(
            f"its client ({provider} {company or 'none'}) is not in Keyrack: "
            "sync clients inbound first"
        )
    return client


def _contact_of(
    session: Session, scope: Scope, provider: str, remote: RemoteRecord, client: Client
) -> Contact | None:
    """The Keyrack contact a provider's record names (None when it names none)."""
    person = remote.links.get(RecordType.CONTACTS)
    if not person:
        return None
    contact_id = held_by(session, scope, RecordType.CONTACTS, provider, person)
    contact = session.get(Contact, contact_id) if contact_id is not None else None
    if contact is None or contact.client_id != client.id:
        raise InvalidInput(
            f"its contact ({provider} {person}) is not in Keyrack as a contact of its client: "
            "sync contacts inbound first"
        )
    return contact


def _iso(value: dt.date | dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _date(value: Any, what: str) -> dt.date | None:
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InvalidInput(f"{what} must be a date (YYYY-MM-DD), not {value!r}") from None


def _moment(value: Any, what: str) -> dt.datetime | None:
    """A provider's datetime: ISO 8601 or epoch milliseconds, as UTC."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        if text.lstrip("-").isdigit():
            return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise InvalidInput(f"{what} must be a datetime, not {value!r}") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _owners(
    session: Session, rows: Sequence[Contract] | Sequence[Engagement]
) -> dict[int, dict[str, str]]:
    return external_ids.ids_of_records(session, crm.RecordType.CLIENTS, {r.client_id for r in rows})


Row = TypeVar("Row", Client, Contact, Contract, Engagement)


class _Rows(Generic[Row]):
    """What every side shares: its rows in the caller's scope, read by change position or
    by ref, each turned into a ``LocalRecord`` by the side's ``_records``."""

    model: ClassVar[Any]

    def _in_scope(self, scope: Scope) -> Select[Row]:
        """A dependent of a client is in its client's location."""
        return in_scope(select(self.model), self.model, scope)

    def _records(self, session: Session, rows: list[Row]) -> list[LocalRecord]:
        raise NotImplementedError

    def changed(
        self, session: Session, scope: Scope, after: Position | None, limit: int
    ) -> list[LocalRecord]:
        stmt = _after(self._in_scope(scope), self.model, after).limit(limit)
        return self._records(session, list(session.scalars(stmt)))

    def by_refs(self, session: Session, scope: Scope, refs: Sequence[str]) -> list[LocalRecord]:
        stmt = self._in_scope(scope).where(self.model.ref.in_(refs)).order_by(self.model.id)
        return self._records(session, list(session.scalars(stmt)))


class Clients(_Rows[Client]):
    model = Client
    record_type: RecordType = RecordType.CLIENTS
    fields: tuple[str, ...] = ("name", "status", "owner_email", "arr_cents", "health")

    def _record(self, row: Client, ids: dict[str, str]) -> LocalRecord:
        values = {
            "name": row.name,
            "status": row.status,
            "owner_email": row.owner_email,
            "arr_cents": row.arr_cents,
            "health": row.health,
        }
        return LocalRecord(row.id, row.ref, row.name, values, ids, (row.updated_at, row.id))

    def _records(self, session: Session, rows: list[Client]) -> list[LocalRecord]:
        ids = external_ids.ids_of_records(session, crm.RecordType.CLIENTS, (r.id for r in rows))
        return [self._record(row, ids.get(row.id, {})) for row in rows]

    def _in_scope(self, scope: Scope) -> Select[Client]:
        return clients_of(scope)

    def _values(self, mapped: Mapping[str, Any], remote: RemoteRecord) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "name" in mapped or remote.name:
            values["name"] = _text(mapped.get("name", remote.name), "name")
        if "status" in mapped and mapped["status"] is not None:
            try:
                values["status"] = ClientStatus(str(mapped["status"]).lower()).value
            except ValueError:
                raise InvalidInput(
                    f"status must be one of {', '.join(ClientStatus)}, not {mapped['status']!r}"
                ) from None
        if "owner_email" in mapped:
            email = mapped["owner_email"]
            values["owner_email"] = validate_email(str(email)) if email else None
        if "arr_cents" in mapped:
            cents = (
                0 if mapped["arr_cents"] in (None, "") else _int(mapped["arr_cents"], "arr_cents")
            )
            values["arr_cents"] = crm.validate_cents(cents, "arr_cents")
        if "health" in mapped:
            score = mapped["health"]
            values["health"] = crm.validate_health(
                None if score in (None, "") else _int(score, "health")
            )
        return values

    def upsert(
        self,
        session: Session,
        scope: Scope,
        provider: str,
        remote: RemoteRecord,
        mapped: Mapping[str, Any],
        at: datetime,
    ) -> tuple[str, str]:
        values = self._values(mapped, remote)
        row = _find(session, scope, Client, self.record_type, provider, remote)
        ids = {provider: remote.remote_id}
        if row is None:
            if "name" not in values:
                raise InvalidInput("name is required to create a client")
            row = Client(
                ref=new_ref("cli"),
                org_id=scope.org_id,
                location_id=scope.location_id,
                status=values.pop("status", ClientStatus.ACTIVE.value),
                arr_cents=values.pop("arr_cents", 0),
                custom_fields={},
                **values,
            )
            records.created(
                session, scope, crm.RecordType.CLIENTS, row, at=at, external_id_changes=ids
            )
            return "created", row.ref
        before = records.state(row)
        held = external_ids.ids_of_record(session, crm.RecordType.CLIENTS, row.id)
        for name, value in values.items():
            setattr(row, name, value)
        changes = ids if held.get(provider) != remote.remote_id else UNSET
        records.updated(
            session,
            scope,
            crm.RecordType.CLIENTS,
            row,
            before=before,
            at=at,
            external_id_changes=changes,
        )
        changed = records.state(row) != before
        return ("updated" if changed else "unchanged"), row.ref


class Contacts(_Rows[Contact]):
    """Contacts belong to a client: going out, the client's remote id is their link (a
    contact whose client has none yet fails, to go once the client went); coming in, the
    provider's link names the client by its remote id."""

    model = Contact
    record_type: RecordType = RecordType.CONTACTS
    fields: tuple[str, ...] = ("name", "email", "phone", "title")

    def _records(self, session: Session, rows: list[Contact]) -> list[LocalRecord]:
        ids = external_ids.ids_of_records(session, crm.RecordType.CONTACTS, (r.id for r in rows))
        owners = external_ids.ids_of_records(
            session, crm.RecordType.CLIENTS, {r.client_id for r in rows}
        )
        return [
            LocalRecord(
                row.id,
                row.ref,
                row.name,
                {"name": row.name, "email": row.email, "phone": row.phone, "title": row.title},
                ids.get(row.id, {}),
                (row.updated_at, row.id),
                {RecordType.CLIENTS: owners.get(row.client_id, {})},
            )
            for row in rows
        ]

    def upsert(
        self,
        session: Session,
        scope: Scope,
        provider: str,
        remote: RemoteRecord,
        mapped: Mapping[str, Any],
        at: datetime,
    ) -> tuple[str, str]:
        values: dict[str, Any] = {}
        if "name" in mapped or remote.name:
            values["name"] = _text(mapped.get("name") or remote.name, "name")
        if "email" in mapped:
            values["email"] = validate_email(str(mapped["email"])) if mapped["email"] else None
        if "phone" in mapped:
            values["phone"] = crm.validate_phone(
                None if mapped["phone"] is None else str(mapped["phone"])
            )
        if "title" in mapped:
            values["title"] = crm.validate_text(
                None if mapped["title"] is None else str(mapped["title"]), "title", 200
            )
        client = _client_of(session, scope, provider, remote)
        row = _find(session, scope, Contact, self.record_type, provider, remote)
        ids = {provider: remote.remote_id}
        if row is None:
            if "name" not in values:
                raise InvalidInput("name is required to create a contact")
            row = Contact(ref=new_ref("con"), org_id=scope.org_id, client_id=client.id, **values)
            records.created(
                session, scope, crm.RecordType.CONTACTS, row, at=at, external_id_changes=ids
            )
            return "created", row.ref
        before = records.state(row)
        held = external_ids.ids_of_record(session, crm.RecordType.CONTACTS, row.id)
        for name, value in values.items():
            setattr(row, name, value)
        row.client_id = client.id
        changes = ids if held.get(provider) != remote.remote_id else UNSET
        records.updated(
            session,
            scope,
            crm.RecordType.CONTACTS,
            row,
            before=before,
            at=at,
            external_id_changes=changes,
        )
        return ("updated" if records.state(row) != before else "unchanged"), row.ref


class Contracts(_Rows[Contract]):
    """Contracts belong to a client, linked by the client's remote id both ways (as
    contacts are). Coming in, a new contract without a currency is in USD and without a
    start date starts the day it arrives."""

    model = Contract
    record_type: RecordType = RecordType.CONTRACTS
    fields: tuple[str, ...] = (
        "name",
        "amount_cents",
        "currency",
        "start_date",
        "end_date",
        "recurring_amount_cents",
        "recurring_interval",
    )

    def _records(self, session: Session, rows: list[Contract]) -> list[LocalRecord]:
        ids = external_ids.ids_of_records(session, crm.RecordType.CONTRACTS, (r.id for r in rows))
        owners = _owners(session, rows)
        return [
            LocalRecord(
                row.id,
                row.ref,
                row.name,
                {
                    "name": row.name,
                    "amount_cents": row.amount_cents,
                    "currency": row.currency,
                    "start_date": _iso(row.start_date),
                    "end_date": _iso(row.end_date),
                    "recurring_amount_cents": row.recurring_amount_cents,
                    "recurring_interval": row.recurring_interval,
                },
                ids.get(row.id, {}),
                (row.updated_at, row.id),
                {RecordType.CLIENTS: owners.get(row.client_id, {})},
            )
            for row in rows
        ]

    def _values(self, mapped: Mapping[str, Any], remote: RemoteRecord) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "name" in mapped or remote.name:
            values["name"] = _text(mapped.get("name") or remote.name, "name")
        for cents in ("amount_cents", "recurring_amount_cents"):
            if cents in mapped:
                raw = mapped[cents]
                if raw in (None, ""):
                    values[cents] = 0 if cents == "amount_cents" else None
                else:
                    values[cents] = crm.validate_cents(_int(raw, cents), cents)
        if mapped.get("currency"):
            values["currency"] = crm.validate_currency(str(mapped["currency"]).upper())
        if "start_date" in mapped and mapped["start_date"] not in (None, ""):
            values["start_date"] = _date(mapped["start_date"], "start_date")
        if "end_date" in mapped:
            values["end_date"] = _date(mapped["end_date"], "end_date")
        if "recurring_interval" in mapped:
            raw = mapped["recurring_interval"]
            try:
                values["recurring_interval"] = (
                    None if raw in (None, "") else Interval(str(raw).lower()).value
                )
            except ValueError:
                raise InvalidInput(
                    f"recurring_interval must be one of {', '.join(Interval)}, not {raw!r}"
                ) from None
        return values

    def upsert(
        self,
        session: Session,
        scope: Scope,
        provider: str,
        remote: RemoteRecord,
        mapped: Mapping[str, Any],
        at: datetime,
    ) -> tuple[str, str]:
        values = self._values(mapped, remote)
        client = _client_of(session, scope, provider, remote)
        row = _find(session, scope, Contract, self.record_type, provider, remote)
        ids = {provider: remote.remote_id}
        if row is None:
            if "name" not in values:
                raise InvalidInput("name is required to create a contract")
            row = Contract(
                ref=new_ref("ctr"),
                org_id=scope.org_id,
                client_id=client.id,
                amount_cents=values.pop("amount_cents", 0),
                currency=values.pop("currency", "USD"),
                start_date=values.pop("start_date", None) or at.date(),
                **values,
            )
            _check_contract(row)
            records.created(
                session, scope, crm.RecordType.CONTRACTS, row, at=at, external_id_changes=ids
            )
            return "created", row.ref
        before = records.state(row)
        held = external_ids.ids_of_record(session, crm.RecordType.CONTRACTS, row.id)
        for name, value in values.items():
            setattr(row, name, value)
        row.client_id = client.id
        _check_contract(row)
        changes = ids if held.get(provider) != remote.remote_id else UNSET
        records.updated(
            session,
            scope,
            crm.RecordType.CONTRACTS,
            row,
            before=before,
            at=at,
            external_id_changes=changes,
        )
        return ("updated" if records.state(row) != before else "unchanged"), row.ref


def _check_contract(row: Contract) -> None:
    crm.check_contract_dates(row.start_date, row.end_date)
    interval = Interval(row.recurring_interval) if row.recurring_interval else None
    crm.check_recurring(row.recurring_amount_cents, interval)


class Engagements(_Rows[Engagement]):
    """Engagements belong to a client and maybe one of its contacts, both linked by their
    remote ids; each carries its kind (the provider's object for it: a HubSpot call, note…).
    Coming in, the record's kind is the provider's object; a new engagement without a time
    happened when it arrived."""

    model = Engagement
    record_type: RecordType = RecordType.ENGAGEMENTS
    fields: tuple[str, ...] = ("kind", "occurred_at", "subject", "body")

    def _records(self, session: Session, rows: list[Engagement]) -> list[LocalRecord]:
        ids = external_ids.ids_of_records(session, crm.RecordType.ENGAGEMENTS, (r.id for r in rows))
        owners = _owners(session, rows)
        people = external_ids.ids_of_records(
            session, crm.RecordType.CONTACTS, {r.contact_id for r in rows if r.contact_id}
        )
        found = []
        for row in rows:
            links = {RecordType.CLIENTS: owners.get(row.client_id, {})}
            if row.contact_id is not None:
                links[RecordType.CONTACTS] = people.get(row.contact_id, {})
            found.append(
                LocalRecord(
                    row.id,
                    row.ref,
                    row.subject or f"{row.kind} {row.ref}",
                    {
                        "kind": row.kind,
                        "occurred_at": _iso(row.occurred_at),
                        "subject": row.subject,
                        "body": row.body,
                    },
                    ids.get(row.id, {}),
                    (row.updated_at, row.id),
                    links,
                    kind=row.kind,
                )
            )
        return found

    def upsert(
        self,
        session: Session,
        scope: Scope,
        provider: str,
        remote: RemoteRecord,
        mapped: Mapping[str, Any],
        at: datetime,
    ) -> tuple[str, str]:
        raw_kind = remote.kind or mapped.get("kind")
        try:
            kind = EngagementKind(str(raw_kind).lower()).value
        except ValueError:
            raise InvalidInput(
                f"kind must be one of {', '.join(EngagementKind)}, not {raw_kind!r}"
            ) from None
        values: dict[str, Any] = {"kind": kind}
        if "occurred_at" in mapped and mapped["occurred_at"] not in (None, ""):
            values["occurred_at"] = _moment(mapped["occurred_at"], "occurred_at")
        if "subject" in mapped:
            values["subject"] = crm.validate_text(
                None if mapped["subject"] in (None, "") else str(mapped["subject"]),
                "subject",
                MAX_SUBJECT,
            )
        if "body" in mapped:
            values["body"] = crm.validate_text(
                None if mapped["body"] in (None, "") else str(mapped["body"]),
                "body",
                MAX_ENGAGEMENT_BODY,
                paragraph=True,
            )
        client = _client_of(session, scope, provider, remote)
        contact = _contact_of(session, scope, provider, remote, client)
        row = _find(session, scope, Engagement, self.record_type, provider, remote)
        ids = {provider: remote.remote_id}
        if row is None:
            row = Engagement(
                ref=new_ref("eng"),
                org_id=scope.org_id,
                client_id=client.id,
                contact_id=contact.id if contact is not None else None,
                occurred_at=values.pop("occurred_at", None) or at,
                **values,
            )
            records.created(
                session, scope, crm.RecordType.ENGAGEMENTS, row, at=at, external_id_changes=ids
            )
            return "created", row.ref
        before = records.state(row)
        held = external_ids.ids_of_record(session, crm.RecordType.ENGAGEMENTS, row.id)
        for name, value in values.items():
            setattr(row, name, value)
        row.client_id = client.id
        row.contact_id = contact.id if contact is not None else None
        changes = ids if held.get(provider) != remote.remote_id else UNSET
        records.updated(
            session,
            scope,
            crm.RecordType.ENGAGEMENTS,
            row,
            before=before,
            at=at,
            external_id_changes=changes,
        )
        return ("updated" if records.state(row) != before else "unchanged"), row.ref


_SIDES: dict[RecordType, Side] = {
    RecordType.CLIENTS: Clients(),
    RecordType.CONTACTS: Contacts(),
    RecordType.CONTRACTS: Contracts(),
    RecordType.ENGAGEMENTS: Engagements(),
}


def side(record_type: RecordType) -> Side:
    try:
        return _SIDES[record_type]
    except KeyError:
        raise InvalidInput(f"syncing {record_type} is not available yet") from None
