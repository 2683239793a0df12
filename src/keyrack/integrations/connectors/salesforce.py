"""Salesforce REST API: Account ↔ clients, Contact ↔ contacts, Opportunity ↔ contracts,
Task (calls, emails, notes) and Event (meetings) ↔ engagements, both directions.

Changes are read with SOQL ordered by ``SystemModstamp, Id`` (SystemModstamp moves for
every change, system ones included, and is indexed; LastModifiedDate misses automation
and roll-ups), paged with ``nextRecordsUrl``. SOQL takes datetimes to the second, so a
resumed read asks for ``SystemModstamp >= <the watermark's second>`` and skips what it
already delivered: a watermark (``ms:Id``) is an exact resume point. ``nextRecordsUrl``
is followed only as a path of this instance's ``/services/data/``.

Writes use sObject Collections upsert (``PATCH …/composite/sobjects/{type}/{field}``,
≤ 200 records, ``allOrNone`` false) on an external-id field (``Keyrack_Id__c`` by
default, which must exist on each object, marked External ID and Unique). Each batch
is first read back with SOQL by that field so that records Salesforce already holds are
``unchanged`` and not written. Salesforce answers per record (``success``, ``created``,
``errors``); a request refused whole (``INVALID_FIELD`` for a field that does not
exist, ``JSON_PARSER_ERROR`` for a value it cannot read) is narrowed down
(``batching.isolate``). ``links`` are the lookup fields (``AccountId``; ``WhatId`` and
``WhoId`` on activities); a Task's ``Type`` is its kind. New records get the fields
Salesforce requires unless mapped: an Opportunity ``StageName=Closed Won``, a Task
``Status=Completed``, an Event ``DurationInMinutes=30``.

Auth: OAuth2 only (a session id is not a lasting credential), refreshed on 401
``INVALID_SESSION_ID``; ``invalid_grant`` → ``revoked``. The token answer's
``instance_url`` is not followed: calls go to ``base_url`` (the instance URL, which the
engine vetted), never to an address a token answer names. Past the org's daily API
limit Salesforce answers 403 ``REQUEST_LIMIT_EXCEEDED``: a quota, not a wait, so it
raises ``ProviderRateLimited``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from keyrack.integrations.batching import Refused, chunks, isolate, unchanged
from keyrack.integrations.connector import (
    KEYRACK,
    ConnectorError,
    Direction,
    EngagementKind,
    FieldMapping,
    Mappings,
    OutboundRecord,
    Probe,
    ProbeStatus,
    ProviderFailure,
    RecordType,
    RemoteRecord,
    TokenCallback,
    WriteOutcome,
    WriteResult,
    both_ways,
    require,
)
from keyrack.integrations.session import ProviderSession, answer_json, probe_by, retry_after
from keyrack.integrations.watermarks import Mark, across, epoch_ms, iso_seconds

API_VERSION = "59.0"
EXTERNAL_ID_FIELD = "Keyrack_Id__c"
COLLECTION_LIMIT = 200

CALL, EMAIL, MEETING, NOTE = (
    EngagementKind.CALL,
    EngagementKind.EMAIL,
    EngagementKind.MEETING,
    EngagementKind.NOTE,
)

SOBJECTS: Mapping[RecordType, tuple[str, ...]] = {
    RecordType.CLIENTS: ("Account",),
    RecordType.CONTACTS: ("Contact",),
    RecordType.CONTRACTS: ("Opportunity",),
    RecordType.ENGAGEMENTS: ("Task", "Event"),
}
KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "Task": "00T",
    "Event": "00U",
}
NAMES: Mapping[str, tuple[str, ...]] = {
    "Account": ("Name",),
    "Contact": ("FirstName", "LastName"),
    "Opportunity": ("Name",),
    "Task": ("Subject",),
    "Event": ("Subject",),
}
_ACTIVITY_LINKS = {RecordType.CLIENTS: "WhatId", RecordType.CONTACTS: "WhoId"}
LINK_FIELDS: Mapping[str, Mapping[RecordType, str]] = {
    "Contact": {RecordType.CLIENTS: "AccountId"},
    "Opportunity": {RecordType.CLIENTS: "AccountId"},
    "Task": _ACTIVITY_LINKS,
    "Event": _ACTIVITY_LINKS,
}
TASK_TYPES = {CALL: "Call", EMAIL: "Email", NOTE: "Other"}
CREATE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "Opportunity": {"StageName": "Closed Won"},
    "Task": {"Status": "Completed"},
    "Event": {"DurationInMinutes": 30},
}

MAPPINGS = both_ways(
    {
        RecordType.CLIENTS: (
            FieldMapping("name", "Name", "trim"),
            FieldMapping("arr_cents", "AnnualRevenue", "cents_to_units"),
        ),
        RecordType.CONTACTS: (
            FieldMapping("name", "LastName", "trim"),
            FieldMapping("email", "Email", "lower"),
            FieldMapping("phone", "Phone"),
            FieldMapping("title", "Title"),
        ),
        RecordType.CONTRACTS: (
            FieldMapping("name", "Name", "trim"),
            FieldMapping("amount_cents", "Amount", "cents_to_units"),
            FieldMapping("start_date", "CloseDate", "date"),
        ),
        RecordType.ENGAGEMENTS: (
            FieldMapping("subject", "Subject"),
            FieldMapping("body", "Description"),
            *(FieldMapping("occurred_at", "ActivityDate", "date", kind=k) for k in TASK_TYPES),
            FieldMapping("occurred_at", "StartDateTime", kind=MEETING),
        ),
    }
)

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NO_SUCH_COLUMN = re.compile(r"No such column '([^']+)'")


class SalesforceDialect:
    provider = "salesforce"

    def failure(self, response: httpx.Response) -> ProviderFailure:
        body = answer_json(response)
        if isinstance(body, list) and body and isinstance(body[0], dict):
            first = body[0]
            return ProviderFailure(
                str(first.get("message", "")),
                first.get("errorCode") and str(first["errorCode"]),
                response.status_code,
            )
        if isinstance(body, dict) and "error" in body:
            message = body.get("error_description") or body["error"]
            return ProviderFailure(str(message), str(body["error"]), response.status_code)
        return ProviderFailure(response.text or response.reason_phrase, None, response.status_code)

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code == 403 and self.failure(response).code == "REQUEST_LIMIT_EXCEEDED":
            return math.inf
        if response.status_code == 429:
            waited = retry_after(response)
            return waited if waited is not None else float(2**attempt)
        return None

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        if http_status == 403:
            return ProbeStatus.UNAUTHORIZED, "missing-permission"
        return ProbeStatus.UNAUTHORIZED, "credential-refused"


Write = tuple[OutboundRecord, dict[str, Any]]


class SalesforceConnector:
    provider = "salesforce"
    directions: ClassVar[Mapping[RecordType, frozenset[Direction]]] = MappingProxyType(
        {t: frozenset(Direction) for t in RecordType}
    )
    mappings: ClassVar[Mappings] = MAPPINGS
    batch_size = COLLECTION_LIMIT

    def __init__(
        self,
        *,
        credential: Mapping[str, Any],
        http: httpx.Client,
        base_url: str | None = None,
        on_token: TokenCallback | None = None,
        read_fields: Mapping[RecordType, Sequence[str]] | None = None,
        external_id_field: str = EXTERNAL_ID_FIELD,
        api_version: str = API_VERSION,
        max_wait: float = 60.0,
    ) -> None:
        if "api_key" in credential:
            raise ValueError("salesforce needs an OAuth2 credential, not an api_key")
        instance = base_url or credential.get("instance_url")
        if not instance:
            raise ValueError("salesforce needs base_url: the org's instance URL")
        if not _FIELD_NAME.match(external_id_field):
            raise ValueError(f"not a Salesforce field name: {external_id_field!r}")
        self._base = str(instance).rstrip("/")
        self._data = f"/services/data/v{api_version}"
        self._session = ProviderSession(
            http, SalesforceDialect(), credential=credential, on_token=on_token, max_wait=max_wait
        )
        self.stats = self._session.stats
        self._external = external_id_field
        self._read_fields = read_fields or {}

    def __repr__(self) -> str:
        return f"SalesforceConnector(base_url={self._base!r})"

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return self._session.json(self._session.request(method, self._base + path, **options))

    def probe(self) -> Probe:
        return probe_by(
            lambda: self._json(
                "GET", f"{self._data}/query", params={"q": "SELECT Id FROM Account LIMIT 1"}
            )
        )

    # ---- reading ------------------------------------------------------------------------

    def _fields(self, record_type: RecordType, sobject: str) -> list[str]:
        kinds = {MEETING} if sobject == "Event" else set(TASK_TYPES)
        mapped = [
            m.remote
            for m in MAPPINGS[(record_type, Direction.INBOUND)]
            if m.kind is None or (record_type is RecordType.ENGAGEMENTS and m.kind in kinds)
        ]
        wanted = [
            "Id",
            "SystemModstamp",
            self._external,
            *NAMES[sobject],
            *LINK_FIELDS.get(sobject, {}).values(),
            *(["Type"] if sobject == "Task" else []),
            *mapped,
            *self._read_fields.get(record_type, ()),
        ]
        return _distinct(wanted)

    def _query(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        """The pages of a SOQL query, following ``nextRecordsUrl``."""
        answer = self._json("GET", f"{self._data}/query", params={"q": soql})
        while True:
            yield answer.get("records") or []
            following = answer.get("nextRecordsUrl")
            if answer.get("done", True) or not following:
                return
            if not str(following).startswith(f"{self._data}/query/"):
                failure = ProviderFailure(
                    "nextRecordsUrl outside this instance's query API", "invalid-answer", 200
                )
                raise ConnectorError(f"salesforce: {failure.message}", failure=failure)
            answer = self._json("GET", str(following))

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        require(self, record_type, Direction.INBOUND)

        def read(sobject: str, position: str | None) -> Iterator[tuple[RemoteRecord, str]]:
            mark = Mark.decode(position) if position else None
            fields = ", ".join(self._fields(record_type, sobject))
            soql = f"SELECT {fields} FROM {sobject}"  # noqa: S608 (names, no values)
            if mark is not None:
                soql += f" WHERE SystemModstamp >= {iso_seconds(mark.ms)}"
            soql += " ORDER BY SystemModstamp, Id"
            for page in self._query(soql):
                for row in page:
                    at = Mark(epoch_ms(row["SystemModstamp"]), str(row["Id"]))
                    if mark is not None and (at.ms, at.id) <= (mark.ms, mark.id):
                        continue
                    yield self._record(sobject, row, ""), at.encode()

        for record, position in across(SOBJECTS[record_type], watermark, read):
            yield replace(record, watermark=position)

    def _record(self, sobject: str, row: Mapping[str, Any], watermark: str) -> RemoteRecord:
        fields = {k: v for k, v in row.items() if k != "attributes"}
        links = {
            link: str(fields[name])
            for link, name in LINK_FIELDS.get(sobject, {}).items()
            if fields.get(name) and _points_to(link, str(fields[name]))
        }
        keyrack_id = fields.get(self._external)
        name = " ".join(str(fields[n]) for n in NAMES[sobject] if fields.get(n))
        return RemoteRecord(
            remote_id=str(fields["Id"]),
            watermark=watermark,
            name=name or str(fields["Id"]),
            fields=fields,
            external_ids={KEYRACK: str(keyrack_id)} if keyrack_id else {},
            links=links,
            kind=_kind(sobject, fields),
        )

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        sobject = next(
            (s for s in SOBJECTS[record_type] if remote_id.startswith(KEY_PREFIXES[s])), None
        )
        if sobject is None or not remote_id.isalnum():
            return None
        response = self._session.request(
            "GET",
            f"{self._base}{self._data}/sobjects/{sobject}/{remote_id}",
            params={"fields": ",".join(self._fields(record_type, sobject))},
        )
        if response.status_code == 404:
            return None
        row = self._session.json(response)
        mark = Mark(epoch_ms(row["SystemModstamp"]), str(row["Id"]))
        return self._record(sobject, row, f"{sobject}={mark.encode()}")

    # ---- writing ------------------------------------------------------------------------

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        require(self, record_type, Direction.OUTBOUND)
        by_sobject: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            by_sobject.setdefault(_sobject_for(record_type, item), []).append(position)
        outcomes: list[WriteOutcome | None] = [None] * len(items)
        for sobject, positions in by_sobject.items():
            for batch in chunks(positions, COLLECTION_LIMIT):
                answered = self._upsert_batch(sobject, [items[p] for p in batch])
                for p, outcome in zip(batch, answered, strict=True):
                    outcomes[p] = outcome
        return [o for o in outcomes if o is not None]

    def _body(self, sobject: str, item: OutboundRecord) -> dict[str, Any]:
        body = dict(item.fields)
        for link, name in LINK_FIELDS.get(sobject, {}).items():
            if link in item.links:
                body[name] = item.links[link]
        if sobject == "Task" and item.kind is not None:
            body.setdefault("Type", TASK_TYPES[item.kind])
        return body

    def _upsert_batch(self, sobject: str, batch: Sequence[OutboundRecord]) -> list[WriteOutcome]:
        bodies = [self._body(sobject, item) for item in batch]
        held = self._held(sobject, batch, bodies)
        outcomes: list[WriteOutcome | None] = [None] * len(batch)
        writes: list[tuple[int, Write]] = []
        for position, (item, body) in enumerate(zip(batch, bodies, strict=True)):
            current = held.get(item.keyrack_id.lower()) if held is not None else None
            if current is not None and unchanged(body, current):
                outcomes[position] = WriteOutcome(
                    item.keyrack_id, WriteResult.UNCHANGED, str(current["Id"])
                )
                continue
            if held is not None and current is None:  # known to be new
                body = {**CREATE_DEFAULTS.get(sobject, {}), **body}
            writes.append((position, (item, body)))
        written = isolate(
            [w for _, w in writes],
            lambda sent: self._send(sobject, sent),
            lambda write, refused: WriteOutcome(
                write[0].keyrack_id,
                WriteResult.FAILED,
                None,
                refused.failure,
                self._session.exchange(refused.response, request_body=self._row(sobject, *write)),
            ),
            lambda write, field: field.lower() in {k.lower() for k in write[1]},
        )
        for (position, _), outcome in zip(writes, written, strict=True):
            outcomes[position] = outcome
        return [o for o in outcomes if o is not None]

    def _held(
        self, sobject: str, batch: Sequence[OutboundRecord], bodies: Sequence[Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]] | None:
        """What Salesforce holds for the batch's Keyrack ids (lower-cased), to skip no-ops;
        a field the query cannot name (gone, renamed) is left out of the comparison, and
        None means Salesforce would not say (the upsert will then say why per record)."""
        keys = ", ".join(_quote(item.keyrack_id) for item in batch)
        named = [f for f in _distinct([f for body in bodies for f in body]) if _FIELD_NAME.match(f)]
        for fields in (_distinct(["Id", self._external, *named]), ["Id", self._external]):
            columns = ", ".join(fields)
            soql = f"SELECT {columns} FROM {sobject} WHERE {self._external} IN ({keys})"  # noqa: S608 (checked names, quoted values)
            try:
                rows = [row for page in self._query(soql) for row in page]
            except ConnectorError as error:
                if error.failure.http_status != 400:
                    raise
                continue
            compared = len(fields) > 2
            return {
                str(row[self._external]).lower(): row if compared else {"Id": row["Id"]}
                for row in rows
                if row.get(self._external)
            }
        return None

    def _row(self, sobject: str, item: OutboundRecord, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"attributes": {"type": sobject}, **body, self._external: item.keyrack_id}

    def _send(self, sobject: str, writes: Sequence[Write]) -> list[WriteOutcome]:
        rows = [self._row(sobject, item, body) for item, body in writes]
        response = self._session.request(
            "PATCH",
            f"{self._base}{self._data}/composite/sobjects/{sobject}/{self._external}",
            json={"allOrNone": False, "records": rows},
        )
        if response.status_code in (400, 404):
            failure = self._session.failure(response)
            column = _NO_SUCH_COLUMN.search(failure.message)
            everyone = response.status_code == 404 or failure.code == "EXCEEDED_ID_LIMIT"
            raise Refused(
                failure, response, field=column.group(1) if column else None, everyone=everyone
            )
        answer = self._session.json(response)
        if not isinstance(answer, list) or len(answer) != len(writes):
            failure = ProviderFailure(
                "the collection answer does not match the records sent",
                "invalid-answer",
                response.status_code,
            )
            raise ConnectorError(
                f"salesforce: {failure.message}",
                failure=failure,
                exchange=self._session.exchange(response),
            )
        outcomes = []
        for (item, _), row, result in zip(writes, rows, answer, strict=True):
            exchange = self._session.exchange(response, request_body=row, response_body=result)
            if result.get("success"):
                written = WriteResult.CREATED if result.get("created") else WriteResult.UPDATED
                outcomes.append(
                    WriteOutcome(item.keyrack_id, written, str(result["id"]), exchange=exchange)
                )
                continue
            error = (result.get("errors") or [{}])[0]
            failure = self._session.failure_of(
                str(error.get("message", "")), error.get("statusCode"), response.status_code
            )
            outcomes.append(
                WriteOutcome(item.keyrack_id, WriteResult.FAILED, None, failure, exchange)
            )
        return outcomes


def _distinct(names: Sequence[str]) -> list[str]:
    """``names`` without repeats, case-insensitively (SOQL refuses a field twice)."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _points_to(link: RecordType, record_id: str) -> bool:
    """A polymorphic lookup (WhatId, WhoId) is a link only to the object it names."""
    prefix = {RecordType.CLIENTS: "001", RecordType.CONTACTS: "003"}[link]
    return record_id.startswith(prefix)


def _kind(sobject: str, fields: Mapping[str, Any]) -> EngagementKind | None:
    if sobject == "Event":
        return MEETING
    if sobject != "Task":
        return None
    return {"Call": CALL, "Email": EMAIL}.get(str(fields.get("Type")), NOTE)


def _sobject_for(record_type: RecordType, item: OutboundRecord) -> str:
    if record_type is not RecordType.ENGAGEMENTS:
        return SOBJECTS[record_type][0]
    if item.kind is None:
        raise ValueError(f"engagement {item.keyrack_id} has no kind")
    return "Event" if item.kind is MEETING else "Task"
