"""CRM bodies: clients, contacts, contracts, engagements, usage, pulse.

Public ids are prefixed ULIDs (``cli_…``, ``con_…``, ``ctr_…``, ``eng_…``, ``pul_…``).
Money is integer cents. PATCH bodies change only the fields they contain; a
field that cannot be empty refuses ``null``. Clients, contacts, contracts and
engagements carry ``external_ids`` and list by ``external_id`` and ``updated_since``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from keyrack.domain import crm
from keyrack.domain.crm import (
    MAX_CUSTOM_FIELDS,
    MAX_ENGAGEMENT_BODY,
    MAX_EXTERNAL_ID,
    MAX_EXTERNAL_SYSTEMS,
    MAX_MONEY_CENTS,
    MAX_SUBJECT,
    MAX_USAGE_BATCH,
    MAX_USAGE_COUNT,
    SYSTEM_PATTERN,
    ClientStatus,
    CustomValue,
    EngagementKind,
    HealthBand,
    Interval,
    NpsCategory,
    Period,
)
from keyrack.http.schemas.common import Strict
from keyrack.services.crm.clients import ClientView
from keyrack.services.crm.contacts import ContactView
from keyrack.services.crm.contracts import ContractView
from keyrack.services.crm.engagements import EngagementView
from keyrack.services.crm.pulse import MAX_COMMENT, NpsSummary, PulseView
from keyrack.services.crm.usage import IngestResult, UsageBucket


def _storable(value: str) -> str:
    if not crm.is_storable(value):
        raise ValueError("must be valid UTF-8 text without NUL characters")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date and time out of range") from None


Storable = AfterValidator(_storable)
"""Checked after the length limits, so a bad length reads "at least 1 character", not "item"."""
Timestamp = Annotated[AwareDatetime, AfterValidator(_utc)]
Ref = Annotated[str, Field(min_length=1, max_length=40), Storable]
Name = Annotated[str, Field(min_length=1, max_length=200), Storable]
Email = Annotated[str, Field(max_length=320), Storable]
Phone = Annotated[str, Field(max_length=40), Storable]
Cents = Annotated[int, Field(ge=0, le=MAX_MONEY_CENTS, description="integer minor units")]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code")]
Health = Annotated[int, Field(ge=0, le=100, description="0-100; >=70 green, 40-69 yellow")]
LocationId = Annotated[int, Field(ge=1, le=2**31 - 1)]
CustomFields = Annotated[
    dict[Annotated[str, Field(max_length=64)], CustomValue],
    Field(max_length=MAX_CUSTOM_FIELDS, description="flat object, scalar values, <= 16 KiB"),
]
System = Annotated[str, Field(pattern=SYSTEM_PATTERN)]
ExternalIdValue = Annotated[str, Field(min_length=1, max_length=MAX_EXTERNAL_ID), Storable]
ExternalIds = Annotated[
    dict[System, ExternalIdValue],
    Field(
        max_length=MAX_EXTERNAL_SYSTEMS,
        description='system name → that system\'s id, e.g. {"hubspot": "123"}; unique per '
        "organization, record type and system (409 conflict otherwise)",
    ),
]
ExternalIdChanges = Annotated[
    dict[System, ExternalIdValue | None],
    Field(
        max_length=MAX_EXTERNAL_SYSTEMS,
        description="merged by system: an id sets that system's, null removes it, "
        "systems not named stay",
    ),
]


RECORD_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "An external id is already held by another record (conflict)"},
}
"""What the routes of records with external ids (clients, contacts, contracts,
engagements) answer besides the refusals ``http/openapi`` derives: 409."""


class RecordFilters(BaseModel):
    """The filters of every CRM record list (query parameters)."""

    external_id: Annotated[str, Field(max_length=300)] | None = Field(
        default=None, description="system:id (e.g. hubspot:123): the record holding that id"
    )
    updated_since: Timestamp | None = Field(
        default=None,
        description="records with updated_at >= this, oldest change first in (updated_at, id) "
        "order; page on with next_cursor (a watermark)",
    )


class ClientRecordFilters(RecordFilters):
    client_ref: Ref | None = Field(
        default=None, alias="client_id", description="only this client's"
    )


class Patch(Strict):
    """A PATCH body: absent fields stay; ``null`` is refused for fields in ``required``."""

    required: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _refuse_null_for_required(self) -> Self:
        for name in self.required:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


# -- clients ---------------------------------------------------------------------------


class ClientOut(BaseModel):
    id: str = Field(examples=["cli_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"])
    name: str
    status: ClientStatus
    location_id: int | None
    owner_email: str | None
    arr_cents: int
    health: int | None
    health_band: HealthBand | None
    custom_fields: dict[str, CustomValue]
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ClientView) -> ClientOut:
        return cls(
            id=view.ref,
            name=view.name,
            status=view.status,
            location_id=view.location_id,
            owner_email=view.owner_email,
            arr_cents=view.arr_cents,
            health=view.health,
            health_band=view.health_band,
            custom_fields=dict(view.custom_fields),
            external_ids=dict(view.external_ids),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class ClientCreate(Strict):
    name: Name
    status: ClientStatus = ClientStatus.ACTIVE
    location_id: LocationId | None = Field(
        default=None, description="agency keys only; a location key's clients are its own"
    )
    owner_email: Email | None = None
    arr_cents: Cents = 0
    health: Health | None = None
    custom_fields: CustomFields = Field(default_factory=dict)
    external_ids: ExternalIds = Field(default_factory=dict)


class ClientFilters(RecordFilters):
    status: ClientStatus | None = None


class ClientUpdate(Patch):
    required = ("name", "status", "arr_cents", "custom_fields", "external_ids")

    name: Name | SkipJsonSchema[None] = None
    status: ClientStatus | SkipJsonSchema[None] = None
    location_id: LocationId | None = None
    owner_email: Email | None = None
    arr_cents: Cents | SkipJsonSchema[None] = None
    health: Health | None = None
    custom_fields: CustomFields | SkipJsonSchema[None] = Field(
        default=None, description="replaces the whole object"
    )
    external_ids: ExternalIdChanges | SkipJsonSchema[None] = None


# -- contacts --------------------------------------------------------------------------


class ContactOut(BaseModel):
    id: str
    client_id: str
    name: str
    email: str | None
    phone: str | None
    title: str | None
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ContactView) -> ContactOut:
        return cls(
            id=view.ref,
            client_id=view.client_ref,
            name=view.name,
            email=view.email,
            phone=view.phone,
            title=view.title,
            external_ids=dict(view.external_ids),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class ContactCreate(Strict):
    client_ref: Ref = Field(alias="client_id")
    name: Name
    email: Email | None = None
    phone: Phone | None = None
    title: Annotated[str, Field(max_length=200), Storable] | None = None
    external_ids: ExternalIds = Field(default_factory=dict)


class ContactUpdate(Patch):
    required = ("name", "external_ids")

    name: Name | SkipJsonSchema[None] = None
    email: Email | None = None
    phone: Phone | None = None
    title: Annotated[str, Field(max_length=200), Storable] | None = None
    external_ids: ExternalIdChanges | SkipJsonSchema[None] = None


# -- contracts -------------------------------------------------------------------------


class ContractOut(BaseModel):
    id: str
    client_id: str
    name: str
    amount_cents: int
    currency: str
    start_date: date
    end_date: date | None
    recurring_amount_cents: int | None
    recurring_interval: Interval | None
    annual_recurring_cents: int | None = Field(description="recurring amount per year")
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: ContractView) -> ContractOut:
        return cls(
            id=view.ref,
            client_id=view.client_ref,
            name=view.name,
            amount_cents=view.amount_cents,
            currency=view.currency,
            start_date=view.start_date,
            end_date=view.end_date,
            recurring_amount_cents=view.recurring_amount_cents,
            recurring_interval=view.recurring_interval,
            annual_recurring_cents=view.annual_recurring_cents,
            external_ids=dict(view.external_ids),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class ContractCreate(Strict):
    client_ref: Ref = Field(alias="client_id")
    name: Name
    amount_cents: Cents
    currency: Currency = "USD"
    start_date: date
    end_date: date | None = None
    recurring_amount_cents: Cents | None = None
    recurring_interval: Interval | None = None
    external_ids: ExternalIds = Field(default_factory=dict)


class ContractUpdate(Patch):
    required = ("name", "amount_cents", "currency", "start_date", "external_ids")

    name: Name | SkipJsonSchema[None] = None
    amount_cents: Cents | SkipJsonSchema[None] = None
    currency: Currency | SkipJsonSchema[None] = None
    start_date: date | SkipJsonSchema[None] = None
    end_date: date | None = None
    recurring_amount_cents: Cents | None = None
    recurring_interval: Interval | None = None
    external_ids: ExternalIdChanges | SkipJsonSchema[None] = None


# -- engagements -----------------------------------------------------------------------

Subject = Annotated[str, Field(max_length=MAX_SUBJECT), Storable]
Body = Annotated[
    str,
    Field(max_length=MAX_ENGAGEMENT_BODY, description="a paragraph: line breaks and tabs allowed"),
    Storable,
]
OwnerId = Annotated[int, Field(ge=1, le=2**31 - 1, description="a user of the organization")]


class EngagementOut(BaseModel):
    id: str = Field(examples=["eng_01HX3Z8Q9R6T0V2W4Y6A8C0E2G"])
    client_id: str
    contact_id: str | None
    kind: EngagementKind
    occurred_at: datetime
    subject: str | None
    body: str | None
    owner_id: int | None
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: EngagementView) -> EngagementOut:
        return cls(
            id=view.ref,
            client_id=view.client_ref,
            contact_id=view.contact_ref,
            kind=view.kind,
            occurred_at=view.occurred_at,
            subject=view.subject,
            body=view.body,
            owner_id=view.owner_id,
            external_ids=dict(view.external_ids),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class EngagementCreate(Strict):
    client_ref: Ref = Field(alias="client_id")
    contact_ref: Ref | None = Field(
        default=None, alias="contact_id", description="a contact of the same client"
    )
    kind: EngagementKind
    occurred_at: Timestamp | None = Field(default=None, description="default: now")
    subject: Subject | None = None
    body: Body | None = None
    owner_id: OwnerId | None = None
    external_ids: ExternalIds = Field(default_factory=dict)


class EngagementUpdate(Patch):
    required = ("kind", "occurred_at", "external_ids")

    contact_ref: Ref | None = Field(
        default=None, alias="contact_id", description="a contact of the same client"
    )
    kind: EngagementKind | SkipJsonSchema[None] = None
    occurred_at: Timestamp | SkipJsonSchema[None] = None
    subject: Subject | None = None
    body: Body | None = None
    owner_id: OwnerId | None = None
    external_ids: ExternalIdChanges | SkipJsonSchema[None] = None


class EngagementFilters(ClientRecordFilters):
    contact_ref: Ref | None = Field(
        default=None, alias="contact_id", description="only this contact's"
    )
    kind: EngagementKind | None = None
    occurred_since: Timestamp | None = Field(default=None, description="occurred_at >= this")
    occurred_until: Timestamp | None = Field(default=None, description="occurred_at < this")


# -- usage -----------------------------------------------------------------------------


class UsageEventIn(Strict):
    id: Annotated[str, Field(min_length=1, max_length=128), Storable] = Field(
        description="your id for the event, unique per location: re-sending it is harmless"
    )
    client_id: Ref
    event: Annotated[str, Field(min_length=1, max_length=64), Storable]
    count: Annotated[int, Field(ge=1, le=MAX_USAGE_COUNT)] = 1
    timestamp: Timestamp


class UsageBatch(Strict):
    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_USAGE_BATCH)


class UsageIngestOut(BaseModel):
    received: int
    inserted: int
    duplicates: list[str] = Field(description="event ids already received: not stored again")

    @classmethod
    def of(cls, result: IngestResult) -> UsageIngestOut:
        return cls(
            received=result.received, inserted=result.inserted, duplicates=list(result.duplicates)
        )


class UsageBucketOut(BaseModel):
    client_id: str
    period: Period
    label: str = Field(examples=["2026-01-05", "2026-01"])
    start: date
    event: str
    count: int = Field(description="sum of the events' counts")
    events: int = Field(description="number of events")

    @classmethod
    def of(cls, bucket: UsageBucket) -> UsageBucketOut:
        return cls(
            client_id=bucket.client_ref,
            period=bucket.period,
            label=bucket.label,
            start=bucket.start,
            event=bucket.event,
            count=bucket.count,
            events=bucket.events,
        )


# -- pulse -----------------------------------------------------------------------------


class PulseCreate(Strict):
    client_id: Ref
    contact_id: Ref | None = None
    score: Annotated[int, Field(ge=0, le=10)]
    comment: Annotated[str, Field(max_length=MAX_COMMENT), Storable] | None = None
    responded_at: Timestamp | None = Field(default=None, description="default: now")


class PulseOut(BaseModel):
    id: str
    client_id: str
    contact_id: str | None
    score: int
    category: NpsCategory
    comment: str | None
    responded_at: datetime
    created_at: datetime

    @classmethod
    def of(cls, view: PulseView) -> PulseOut:
        return cls(
            id=view.ref,
            client_id=view.client_ref,
            contact_id=view.contact_ref,
            score=view.score,
            category=view.category,
            comment=view.comment,
            responded_at=view.responded_at,
            created_at=view.created_at,
        )


class NpsSummaryOut(BaseModel):
    client_id: str
    period: Period
    label: str = Field(examples=["2026-01", "2026-Q1"])
    start: date
    responses: int
    promoters: int = Field(description="scores 9-10")
    passives: int = Field(description="scores 7-8")
    detractors: int = Field(description="scores 0-6")
    nps: float | None = Field(description="% promoters - % detractors, -100..100")

    @classmethod
    def of(cls, summary: NpsSummary) -> NpsSummaryOut:
        tally = summary.tally
        return cls(
            client_id=summary.client_ref,
            period=summary.period,
            label=summary.label,
            start=summary.start,
            responses=tally.responses,
            promoters=tally.promoters,
            passives=tally.passives,
            detractors=tally.detractors,
            nps=tally.nps,
        )
