"""CRM records served by the public API: clients and what hangs off them.

Every row carries ``org_id`` so a query is always bounded by the tenant; a
location key's view is the clients whose ``location_id`` is its location, and
everything joined to them. Deleting a client deletes its dependents.

Clients, contacts, contracts and engagements are *records*: each has ``updated_at``
(indexed with ``org_id`` and ``id``, the order of ``?updated_since=`` lists), stamped by
the organization's ``ChangeClock``, and its ids in other systems in ``ExternalId``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from keyrack.storage.tables.base import Base


class Client(Base):
    __tablename__ = "crm_clients"
    __table_args__ = (
        Index("ix_crm_clients_org_id_id", "org_id", "id"),
        Index("ix_crm_clients_location_id_id", "location_id", "id"),
        Index("ix_crm_clients_org_id_updated_at_id", "org_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    owner_email: Mapped[str | None] = mapped_column(String(320))
    arr_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    health: Mapped[int | None]
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Contact(Base):
    __tablename__ = "crm_contacts"
    __table_args__ = (
        Index("ix_crm_contacts_org_id_id", "org_id", "id"),
        Index("ix_crm_contacts_org_id_updated_at_id", "org_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[int] = mapped_column(
        ForeignKey("crm_clients.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    title: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    client: Mapped[Client] = relationship(lazy="joined", innerjoin=True)


class Contract(Base):
    __tablename__ = "crm_contracts"
    __table_args__ = (
        Index("ix_crm_contracts_org_id_id", "org_id", "id"),
        Index("ix_crm_contracts_org_id_updated_at_id", "org_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[int] = mapped_column(
        ForeignKey("crm_clients.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    start_date: Mapped[date]
    end_date: Mapped[date | None]
    recurring_amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    recurring_interval: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    client: Mapped[Client] = relationship(lazy="joined", innerjoin=True)


class Engagement(Base):
    """An email, call, meeting or note logged against a client (and maybe one of its contacts)."""

    __tablename__ = "crm_engagements"
    __table_args__ = (
        Index("ix_crm_engagements_org_id_id", "org_id", "id"),
        Index("ix_crm_engagements_org_id_updated_at_id", "org_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[int] = mapped_column(
        ForeignKey("crm_clients.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_contacts.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime]
    subject: Mapped[str | None] = mapped_column(String(500))
    body: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    client: Mapped[Client] = relationship(lazy="joined", innerjoin=True)
    contact: Mapped[Contact | None] = relationship(lazy="joined")


class ExternalId(Base):
    """A record's id in another system: one per record and system (the primary key), and
    one record per organization, record type and system holding a given id.

    ``record_type`` names the record's table (``clients``, ``contacts``, ``contracts``,
    ``engagements``) and ``record_id`` its row: no foreign key can point into four tables,
    so the services delete these rows with their records.
    """

    __tablename__ = "crm_external_ids"
    __table_args__ = (UniqueConstraint("org_id", "record_type", "system", "external_id"),)

    record_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    record_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    external_id: Mapped[str] = mapped_column(String(255))


class ChangeClock(Base):
    """The last ``updated_at`` stamped on a record of the organization, in microseconds since
    the epoch. Each writing transaction advances it first (``keyrack.services.crm.records``),
    and holds its row lock until it commits."""

    __tablename__ = "crm_change_clocks"

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    last_us: Mapped[int] = mapped_column(BigInteger)


class UsageEvent(Base):
    """One product usage event; ``event_id`` is the sender's, unique per location.

    ``location_id`` is the client's location when the event arrived (None for a client
    of the agency itself, which is a namespace of its own): one location neither
    learns another's event ids nor has its events dropped as their duplicates.
    """

    __tablename__ = "crm_usage_events"
    __table_args__ = (
        Index("ix_crm_usage_events_client_id_day", "client_id", "day"),
        Index("ix_crm_usage_events_org_id_day", "org_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("crm_clients.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(64))
    count: Mapped[int]
    occurred_at: Mapped[datetime]
    day: Mapped[date]
    month: Mapped[str] = mapped_column(String(7))
    received_at: Mapped[datetime]


USAGE_EVENT_ID_SCOPE = (
    UsageEvent.org_id,
    func.coalesce(UsageEvent.location_id, literal_column("0")),
    UsageEvent.event_id,
)
"""What makes an event id unique: the organization, the location (0: the agency), the id.
The unique index and ``INSERT … ON CONFLICT`` name these same expressions."""
Index("uq_crm_usage_events_scope_event_id", *USAGE_EVENT_ID_SCOPE, unique=True)


class PulseResponse(Base):
    """An NPS answer (0-10) with an optional comment."""

    __tablename__ = "crm_pulse_responses"
    __table_args__ = (
        Index("ix_crm_pulse_responses_org_id_id", "org_id", "id"),
        Index("ix_crm_pulse_responses_client_id_day", "client_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[int] = mapped_column(ForeignKey("crm_clients.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_contacts.id", ondelete="SET NULL")
    )
    score: Mapped[int]
    comment: Mapped[str | None] = mapped_column(Text)
    responded_at: Mapped[datetime]
    day: Mapped[date]
    month: Mapped[str] = mapped_column(String(7))
    created_at: Mapped[datetime]

    client: Mapped[Client] = relationship(lazy="joined", innerjoin=True)
    contact: Mapped[Contact | None] = relationship(lazy="joined")
