"""Bulk upload (SPEC §6.1.1): what a row of an uploaded file says, and what became of it.

A file holds clients, contacts, contracts or engagements (``RESOURCES``); a contact, contract
or engagement names its client by ``client_id`` (a Keyrack id), an engagement maybe one of
that client's contacts by ``contact_id``.
A file is CSV (RFC 4180, UTF-8, a header row) or NDJSON, in the shape an export writes:
CSV columns ``custom.<name>`` and ``external_ids.<system>``, NDJSON objects with
``custom_fields`` and ``external_ids``. Each row is matched to a record by its ``id``, else
by any of its external ids; a match is updated with the fields the row gives, else a
record is created. An empty CSV cell gives nothing (the field keeps its value, or its
default). Read-only fields an export writes (``created_at``, ``updated_at``,
``health_band``) are ignored, so an export's file can be uploaded as it is. A row that
fails says why and never stops the others; uploading the same file again changes
nothing (every row matches, and a record written with what it holds is not changed),
as long as each row carries an ``id`` or an external id.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from keyrack.domain.exports import CUSTOM_PREFIX, EXTERNAL_PREFIX, Format, Resource
from keyrack.errors import InvalidInput

MAX_UPLOAD_BYTES = 1024**3
"""1 GiB."""
BATCH_ROWS = 500
"""Rows written per transaction (each in a savepoint of its own)."""

RESOURCES: tuple[Resource, ...] = (
    Resource.CLIENTS,
    Resource.CONTACTS,
    Resource.CONTRACTS,
    Resource.ENGAGEMENTS,
)
"""What may be uploaded so far."""
WRITE_PERMISSION: dict[Resource, str] = {
    Resource.CLIENTS: "clients:write",
    Resource.CONTACTS: "contacts:write",
    Resource.CONTRACTS: "contracts:write",
    Resource.ENGAGEMENTS: "engagements:write",
}


class RowOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


Outcome = RowOutcome
Status = ImportStatus


UNDER_WAY: tuple[Status, ...] = (Status.QUEUED, Status.RUNNING)

CLIENT_FIELDS = {
    "name": "text",
    "status": "text",
    "location_id": "integer",
    "owner_email": "text",
    "arr_cents": "integer",
    "health": "integer",
}
CONTACT_FIELDS = {
    "client_id": "text",
    "name": "text",
    "email": "text",
    "phone": "text",
    "title": "text",
}
"""A contact's client is ``client_id`` (a Keyrack id); it has no custom fields."""
CONTRACT_FIELDS = {
    "client_id": "text",
    "name": "text",
    "amount_cents": "integer",
    "currency": "text",
    "start_date": "date",
    "end_date": "date",
    "recurring_amount_cents": "integer",
    "recurring_interval": "text",
}
ENGAGEMENT_FIELDS = {
    "client_id": "text",
    "contact_id": "text",
    "kind": "text",
    "occurred_at": "timestamp",
    "subject": "text",
    "body": "text",
    "owner_id": "integer",
}
"""An engagement's contact (optional) is ``contact_id``, one of its client's contacts."""
FIELDS: dict[Resource, dict[str, str]] = {
    Resource.ENGAGEMENTS: ENGAGEMENT_FIELDS,
    Resource.CLIENTS: CLIENT_FIELDS,
    Resource.CONTACTS: CONTACT_FIELDS,
    Resource.CONTRACTS: CONTRACT_FIELDS,
}
CUSTOM: frozenset[Resource] = frozenset({Resource.CLIENTS})
"""The resources whose records have custom fields."""
IGNORED = frozenset({"created_at", "updated_at", "health_band", "annual_recurring_cents"})


@dataclass(frozen=True, slots=True)
class Row:
    """A row as asked: the record it names (``ref``), the fields it sets, its external ids."""

    ref: str | None
    fields: dict[str, Any]
    external_ids: dict[str, str] = field(default_factory=dict)


def format_of(content_type: str | None) -> Format | None:
    """The format a ``Content-Type`` names, if any."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in ("text/csv", "application/csv"):
        return Format.CSV
    if media in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        return Format.NDJSON
    return None


def _value(name: str, kind: str, value: Any) -> Any:
    if kind == "integer" and not isinstance(value, int):
        if isinstance(value, bool) or not isinstance(value, str):
            raise InvalidInput(f"{name}: {value!r} is not an integer")
        try:
            return int(value.strip())
        except ValueError:
            raise InvalidInput(f"{name}: {value!r} is not an integer") from None
    if kind == "date":
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise InvalidInput(f"{name}: {value!r} is not a date (YYYY-MM-DD)")
    if kind == "timestamp":
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                if moment.tzinfo is None:
                    raise InvalidInput(f"{name}: {value!r} has no time zone")
                return moment.astimezone(UTC)
        raise InvalidInput(f"{name}: {value!r} is not a date and time (ISO 8601)")
    if kind == "text" and not isinstance(value, str):
        raise InvalidInput(f"{name}: {value!r} is not text")
    return value


def record_row(resource: Resource, raw: Mapping[str | None, Any], fmt: Format) -> Row:
    """A row of ``resource``, its values typed; ``InvalidInput`` naming the column that is
    wrong."""
    known, custom_ok = FIELDS[resource], resource in CUSTOM
    what = resource.value[:-1]
    if None in raw:
        raise InvalidInput("the row has more fields than the header")
    ref: str | None = None
    fields: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    systems: dict[str, str] = {}
    for key, value in raw.items():
        assert key is not None
        if fmt is Format.CSV and (value is None or value == ""):
            continue  # an empty cell gives nothing
        if key == "id":
            if not isinstance(value, str):
                raise InvalidInput(f"id: {value!r} is not a {what} id")
            ref = value
        elif key in known:
            fields[key] = None if value is None else _value(key, known[key], value)
        elif key in IGNORED:
            continue
        elif custom_ok and fmt is Format.CSV and key.startswith(CUSTOM_PREFIX):
            custom[key[len(CUSTOM_PREFIX) :]] = value
        elif fmt is Format.CSV and key.startswith(EXTERNAL_PREFIX):
            systems[key[len(EXTERNAL_PREFIX) :]] = value
        elif custom_ok and fmt is Format.NDJSON and key == "custom_fields":
            if not isinstance(value, dict):
                raise InvalidInput("custom_fields: not an object")
            custom = value
        elif fmt is Format.NDJSON and key == "external_ids":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise InvalidInput("external_ids: not an object of text values")
            systems = value
        else:
            raise InvalidInput(f"unknown column {key!r}")
    if custom:
        fields["custom_fields"] = custom
    return Row(ref, fields, systems)
