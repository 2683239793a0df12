"""HubSpot CRM v3: companies ↔ clients, contacts ↔ contacts, deals ↔ contracts, and
notes, calls, meetings and emails ↔ engagements, both directions.

Changes are read with the search API sorted by the modification time
(``hs_lastmodifieddate``, ``lastmodifieddate`` for contacts) ascending, 200 a page, each
page a new search for what changed after the last complete millisecond seen (keyset
paging: no offsets, so HubSpot's 10,000-result cap never applies and a record edited
while paging shifts nothing). Records sharing a millisecond (a batch write makes many)
are delivered in id order, and a millisecond that fills a whole page is read apart,
``EQ`` that time and ``hs_object_id`` after the last id: so a watermark
(``time:id``) is an exact resume point. Search pages carry no associations: those of a
page are read with the v4 batch API (contacts → company, deals → company, engagements →
company and contact) and given as ``links``. Engagement ids are ``object:id``
(``calls:1042``): HubSpot's four engagement objects do not share one id space.

Writes use ``batch/upsert`` (≤ 100 inputs) keyed by ``id_property``, a property with
unique values (``keyrack_id`` by default) that must exist on each object: HubSpot's
upsert needs one, and answers a missing one per record. Each batch is first read back
(``batch/read`` by that property) so that a record whose values HubSpot already holds is
``unchanged`` and not written (its modification time stays put: a two-way sync does not
echo). Every input carries an ``objectWriteTraceId``, so HubSpot answers per record with
a 207; a batch refused whole is narrowed down (``batching.isolate``). ``links`` are
written with the v4 default associations. New deals get ``pipeline=default`` and
``dealstage=closedwon`` unless mapped (a contract is a won deal).

Auth: a private-app token (``{"api_key": "pat-…"}``) or OAuth2 with refresh
(``token_url`` ``https://api.hubapi.com/oauth/v1/token``; HubSpot answers ``BAD_REFRESH_TOKEN`` /
``invalid_grant`` for a revoked refresh token). Rate limits: a 429 waits ``Retry-After``
when sent, else one second for the search API's ``SECONDLY`` policy, else
``X-HubSpot-RateLimit-Interval-Milliseconds`` (HubSpot documents no ``Retry-After``); a
spent ``DAILY`` quota raises ``ProviderRateLimited``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from itertools import groupby
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from keyrack.integrations.batching import Refused, chunks, isolate, unchanged
from keyrack.integrations.connector import (
    KEYRACK,
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
from keyrack.integrations.watermarks import Mark, across, epoch_ms

BASE_URL = "https://api.hubapi.com"
ID_PROPERTY = "keyrack_id"
SEARCH_LIMIT = 200
BATCH_LIMIT = 100
REFUSED = frozenset({400, 409, 422})

CALL, EMAIL, MEETING, NOTE = (
    EngagementKind.CALL,
    EngagementKind.EMAIL,
    EngagementKind.MEETING,
    EngagementKind.NOTE,
)

OBJECTS: Mapping[RecordType, tuple[str, ...]] = {
    RecordType.CLIENTS: ("companies",),
    RecordType.CONTACTS: ("contacts",),
    RecordType.CONTRACTS: ("deals",),
    RecordType.ENGAGEMENTS: ("notes", "calls", "meetings", "emails"),
}
OBJECT_OF_KIND = {NOTE: "notes", CALL: "calls", MEETING: "meetings", EMAIL: "emails"}
KIND_OF_OBJECT = {name: kind for kind, name in OBJECT_OF_KIND.items()}
NAMES: Mapping[str, tuple[str, ...]] = {
    "companies": ("name",),
    "contacts": ("firstname", "lastname", "email"),
    "deals": ("dealname",),
    "notes": ("hs_note_body",),
    "calls": ("hs_call_title",),
    "meetings": ("hs_meeting_title",),
    "emails": ("hs_email_subject",),
}
_ENGAGEMENT_LINKS = {RecordType.CLIENTS: "companies", RecordType.CONTACTS: "contacts"}
LINKS: Mapping[str, Mapping[RecordType, str]] = {
    "contacts": {RecordType.CLIENTS: "companies"},
    "deals": {RecordType.CLIENTS: "companies"},
    **{name: _ENGAGEMENT_LINKS for name in OBJECT_OF_KIND.values()},
}
CREATE_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "deals": {"pipeline": "default", "dealstage": "closedwon"},
}

MAPPINGS = both_ways(
    {
        RecordType.CLIENTS: (
            FieldMapping("name", "name", "trim"),
            FieldMapping("arr_cents", "annualrevenue", "cents_to_units"),
        ),
        RecordType.CONTACTS: (
            FieldMapping("name", "lastname", "trim"),
            FieldMapping("email", "email", "lower"),
            FieldMapping("phone", "phone"),
            FieldMapping("title", "jobtitle"),
        ),
        RecordType.CONTRACTS: (
            FieldMapping("name", "dealname", "trim"),
            FieldMapping("amount_cents", "amount", "cents_to_units"),
            FieldMapping("start_date", "closedate", "date"),
        ),
        RecordType.ENGAGEMENTS: (
            FieldMapping("occurred_at", "hs_timestamp"),
            FieldMapping("body", "hs_note_body", kind=NOTE),
            FieldMapping("subject", "hs_call_title", kind=CALL),
            FieldMapping("body", "hs_call_body", kind=CALL),
            FieldMapping("subject", "hs_meeting_title", kind=MEETING),
            FieldMapping("body", "hs_meeting_body", kind=MEETING),
            FieldMapping("subject", "hs_email_subject", kind=EMAIL),
            FieldMapping("body", "hs_email_text", kind=EMAIL),
        ),
    }
)


def modstamp(name: str) -> str:
    return "lastmodifieddate" if name == "contacts" else "hs_lastmodifieddate"


class HubSpotDialect:
    provider = "hubspot"

    def failure(self, response: httpx.Response) -> ProviderFailure:
        body = answer_json(response)
        if not isinstance(body, dict):
            return ProviderFailure(
                response.text or response.reason_phrase, None, response.status_code
            )
        status = body.get("status") if body.get("status") != "error" else None
        code = body.get("category") or body.get("errorType") or status or body.get("error")
        message = body.get("message") or body.get("error_description") or response.reason_phrase
        return ProviderFailure(str(message), code and str(code), response.status_code)

    def rate_wait(self, response: httpx.Response, attempt: int) -> float | None:
        if response.status_code != 429:
            return None
        body = answer_json(response)
        policy = body.get("policyName") if isinstance(body, dict) else None
        if policy == "DAILY":
            return math.inf
        waited = retry_after(response)
        if waited is not None:
            return waited
        if policy == "SECONDLY":
            return 1.0
        interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
        return int(interval) / 1000 if interval.isdigit() else 10.0

    def rejected(self, failure: ProviderFailure, http_status: int) -> tuple[ProbeStatus, str]:
        if failure.code == "EXPIRED_AUTHENTICATION":
            return ProbeStatus.EXPIRED, "token-expired"
        if http_status == 403:
            return ProbeStatus.UNAUTHORIZED, "missing-permission"
        return ProbeStatus.UNAUTHORIZED, "credential-refused"


Page = list[tuple[dict[str, Any], Mark]]
Write = tuple[OutboundRecord, dict[str, Any]]


class HubSpotConnector:
    provider = "hubspot"
    directions: ClassVar[Mapping[RecordType, frozenset[Direction]]] = MappingProxyType(
        {t: frozenset(Direction) for t in RecordType}
    )
    mappings: ClassVar[Mappings] = MAPPINGS
    batch_size = BATCH_LIMIT

    def __init__(
        self,
        *,
        credential: Mapping[str, Any],
        http: httpx.Client,
        base_url: str | None = None,
        on_token: TokenCallback | None = None,
        read_fields: Mapping[RecordType, Sequence[str]] | None = None,
        id_property: str = ID_PROPERTY,
        max_wait: float = 60.0,
    ) -> None:
        self._base = (base_url or BASE_URL).rstrip("/")
        self._session = ProviderSession(
            http, HubSpotDialect(), credential=credential, on_token=on_token, max_wait=max_wait
        )
        self.stats = self._session.stats
        self._id_property = id_property
        self._read_fields = read_fields or {}

    def __repr__(self) -> str:
        return f"HubSpotConnector(base_url={self._base!r})"

    def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self._session.request(method, self._base + path, **options)

    def _json(self, method: str, path: str, **options: Any) -> Any:
        return self._session.json(self._call(method, path, **options))

    # ---- probe --------------------------------------------------------------------------

    def probe(self) -> Probe:
        return probe_by(lambda: self._json("GET", "/crm/v3/objects/companies", params={"limit": 1}))

    # ---- reading ------------------------------------------------------------------------

    def _properties(self, record_type: RecordType, name: str) -> list[str]:
        kind = KIND_OF_OBJECT.get(name)
        mapped = [
            m.remote
            for m in MAPPINGS[(record_type, Direction.INBOUND)]
            if m.kind is None or m.kind == kind
        ]
        wanted = [modstamp(name), self._id_property, *NAMES[name], *mapped]
        return list(dict.fromkeys([*wanted, *self._read_fields.get(record_type, ())]))

    def changed_since(
        self, record_type: RecordType, watermark: str | None
    ) -> Iterator[RemoteRecord]:
        require(self, record_type, Direction.INBOUND)

        def read(name: str, position: str | None) -> Iterator[tuple[RemoteRecord, str]]:
            mark = Mark.decode(position) if position else None
            for page in self._sweep(record_type, name, mark):
                links = self._links(name, [result["id"] for result, _ in page])
                for result, at in page:
                    record = self._record(record_type, name, result, "", links.get(result["id"]))
                    yield record, at.encode()

        for record, position in across(OBJECTS[record_type], watermark, read):
            yield replace(record, watermark=position)

    def _sweep(self, record_type: RecordType, name: str, mark: Mark | None) -> Iterator[Page]:
        """Pages of results after ``mark``, in (modification time, id) order."""
        stamp = modstamp(name)
        if mark is not None:
            yield from self._same_time(record_type, name, mark.ms, int(mark.id))
        after = mark.ms if mark is not None else None
        while True:
            filters = [] if after is None else [_filter(stamp, "GT", after)]
            page = self._search(record_type, name, filters, stamp)
            results = page.get("results") or []
            if not results:
                return
            groups = [
                (ms, sorted(group, key=lambda r: int(r["id"])))
                for ms, group in groupby(results, key=lambda r: _stamp(r, stamp))
            ]
            if not _more(page):
                yield [(r, Mark(ms, r["id"])) for ms, group in groups for r in group]
                return
            complete = groups[:-1]  # the last millisecond may go on in the next page
            if not complete:
                ms = groups[0][0]
                yield from self._same_time(record_type, name, ms, None)
                after = ms
                continue
            yield [(r, Mark(ms, r["id"])) for ms, group in complete for r in group]
            after = complete[-1][0]

    def _same_time(
        self, record_type: RecordType, name: str, ms: int, after_id: int | None
    ) -> Iterator[Page]:
        """The records modified at millisecond ``ms``, by id, after ``after_id``."""
        while True:
            filters = [_filter(modstamp(name), "EQ", ms)]
            if after_id is not None:
                filters.append(_filter("hs_object_id", "GT", after_id))
            page = self._search(record_type, name, filters, "hs_object_id")
            results = page.get("results") or []
            if results:
                yield [(r, Mark(ms, r["id"])) for r in results]
                after_id = int(results[-1]["id"])
            if not results or not _more(page):
                return

    def _search(
        self, record_type: RecordType, name: str, filters: list[dict[str, str]], sort: str
    ) -> dict[str, Any]:
        body = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": self._properties(record_type, name),
            "limit": SEARCH_LIMIT,
        }
        answer: dict[str, Any] = self._json("POST", f"/crm/v3/objects/{name}/search", json=body)
        return answer

    def _links(self, name: str, ids: Sequence[str]) -> dict[str, dict[RecordType, str]]:
        """The records of ``ids`` belong to (their primary association, else the first)."""
        found: dict[str, dict[RecordType, str]] = {}
        for link, to_name in LINKS.get(name, {}).items():
            for batch in chunks(ids, BATCH_LIMIT):
                answer = self._json(
                    "POST",
                    f"/crm/v4/associations/{name}/{to_name}/batch/read",
                    json={"inputs": [{"id": i} for i in batch]},
                )
                for result in answer.get("results") or []:
                    target = _primary(result.get("to") or [])
                    if target is not None:
                        found.setdefault(str(result["from"]["id"]), {})[link] = target
        return found

    def _record(
        self,
        record_type: RecordType,
        name: str,
        result: Mapping[str, Any],
        watermark: str,
        links: Mapping[RecordType, str] | None,
    ) -> RemoteRecord:
        properties = dict(result.get("properties") or {})
        parts = [str(properties[p]) for p in NAMES[name] if properties.get(p)]
        if name == "contacts" and len(parts) > 1 and properties.get("email"):
            parts = parts[:-1]  # first and last name; the email only when there is no name
        keyrack_id = properties.get(self._id_property)
        kind = KIND_OF_OBJECT.get(name)
        return RemoteRecord(
            remote_id=f"{name}:{result['id']}" if kind else str(result["id"]),
            watermark=watermark,
            name=" ".join(parts) or str(result["id"]),
            fields=properties,
            external_ids={KEYRACK: str(keyrack_id)} if keyrack_id else {},
            links=dict(links or {}),
            kind=kind,
        )

    def get(self, record_type: RecordType, remote_id: str) -> RemoteRecord | None:
        located = _locate(record_type, remote_id)
        if located is None:
            return None
        name, object_id = located
        response = self._call(
            "GET",
            f"/crm/v3/objects/{name}/{object_id}",
            params={
                "properties": ",".join(self._properties(record_type, name)),
                "associations": ",".join(LINKS.get(name, {}).values()),
            },
        )
        if response.status_code == 404:
            return None
        body = self._session.json(response)
        links = {}
        for link, to_name in LINKS.get(name, {}).items():
            targets = (body.get("associations") or {}).get(to_name, {}).get("results") or []
            if targets:
                links[link] = str(targets[0]["id"])
        mark = Mark(_stamp(body, modstamp(name)), str(body["id"]))
        watermark = f"{name}={mark.encode()}"
        return self._record(record_type, name, body, watermark, links)

    # ---- writing ------------------------------------------------------------------------

    def upsert(
        self, record_type: RecordType, items: Sequence[OutboundRecord]
    ) -> list[WriteOutcome]:
        require(self, record_type, Direction.OUTBOUND)
        by_object: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            by_object.setdefault(_object_for(record_type, item), []).append(position)
        outcomes: list[WriteOutcome | None] = [None] * len(items)
        for name, positions in by_object.items():
            for batch in chunks(positions, BATCH_LIMIT):
                answered = self._upsert_batch(name, [items[p] for p in batch])
                for p, outcome in zip(batch, answered, strict=True):
                    outcomes[p] = outcome
        return [o for o in outcomes if o is not None]

    def _upsert_batch(self, name: str, batch: Sequence[OutboundRecord]) -> list[WriteOutcome]:
        held = self._held(name, batch)
        outcomes: list[WriteOutcome | None] = [None] * len(batch)
        writes: list[tuple[int, Write]] = []
        for position, item in enumerate(batch):
            properties = {k: "" if v is None else v for k, v in item.fields.items()}
            current = held.get(item.keyrack_id.lower()) if held is not None else None
            if current is not None and unchanged(properties, current["properties"]):
                remote_id = _remote_id(name, current["id"])
                outcomes[position] = WriteOutcome(item.keyrack_id, WriteResult.UNCHANGED, remote_id)
                continue
            if held is not None and current is None:  # known to be new
                properties = {**CREATE_DEFAULTS.get(name, {}), **properties}
            writes.append((position, (item, properties)))
        written = isolate(
            [w for _, w in writes],
            lambda sent: self._send_upsert(name, sent),
            self._refused,
            lambda write, field: field in write[1],
        )
        for (position, _), outcome in zip(writes, written, strict=True):
            outcomes[position] = outcome
        done = [o for o in outcomes if o is not None]
        return self._associate(name, batch, done)

    def _held(self, name: str, batch: Sequence[OutboundRecord]) -> dict[str, dict[str, Any]] | None:
        """What HubSpot holds for the batch's Keyrack ids (lower-cased), to skip no-ops;
        None when it would not say (the upsert will then say why for each record)."""
        fields = {f for item in batch for f in item.fields}
        response = self._call(
            "POST",
            f"/crm/v3/objects/{name}/batch/read",
            json={
                "idProperty": self._id_property,
                "inputs": [{"id": item.keyrack_id} for item in batch],
                "properties": [self._id_property, *sorted(fields)],
            },
        )
        if response.status_code in REFUSED:
            return None
        answer = self._session.json(response)
        held = {}
        for result in answer.get("results") or []:
            key = (result.get("properties") or {}).get(self._id_property)
            if key:
                held[str(key).lower()] = result
        return held

    def _input(self, item: OutboundRecord, properties: Mapping[str, Any]) -> dict[str, Any]:
        return {"idProperty": self._id_property, "id": item.keyrack_id, "properties": properties}

    def _send_upsert(self, name: str, writes: Sequence[Write]) -> list[WriteOutcome]:
        inputs = [
            {**self._input(item, properties), "objectWriteTraceId": str(n)}
            for n, (item, properties) in enumerate(writes)
        ]
        response = self._call(
            "POST", f"/crm/v3/objects/{name}/batch/upsert", json={"inputs": inputs}
        )
        if response.status_code in REFUSED:
            raise Refused(
                self._session.failure(response), response, field=_property_named(response)
            )
        answer = self._session.json(response)
        results = {str(r.get("objectWriteTraceId")): r for r in answer.get("results") or []}
        by_key = {
            str((r.get("properties") or {}).get(self._id_property, "")).lower(): r
            for r in answer.get("results") or []
        }
        errors = {
            trace: error
            for error in answer.get("errors") or []
            for trace in (error.get("context") or {}).get("objectWriteTraceId") or []
        }
        outcomes = []
        for n, (item, _) in enumerate(writes):
            trace = str(n)
            result = results.get(trace) or by_key.get(item.keyrack_id.lower())
            exchange = self._session.exchange(
                response, request_body=inputs[n], response_body=result or errors.get(trace)
            )
            if result is not None:
                written = WriteResult.CREATED if result.get("new") else WriteResult.UPDATED
                outcomes.append(
                    WriteOutcome(
                        item.keyrack_id,
                        written,
                        _remote_id(name, result["id"]),
                        exchange=exchange,
                    )
                )
                continue
            error = errors.get(trace) or {
                "message": "HubSpot answered nothing for this input",
                "category": None,
            }
            failure = self._session.failure_of(
                str(error.get("message")), error.get("category"), response.status_code
            )
            outcomes.append(
                WriteOutcome(item.keyrack_id, WriteResult.FAILED, None, failure, exchange)
            )
        return outcomes

    def _refused(self, write: Write, refused: Refused) -> WriteOutcome:
        exchange = self._session.exchange(refused.response, request_body=self._input(*write))
        return WriteOutcome(
            write[0].keyrack_id, WriteResult.FAILED, None, refused.failure, exchange
        )

    def _associate(
        self, name: str, batch: Sequence[OutboundRecord], outcomes: list[WriteOutcome]
    ) -> list[WriteOutcome]:
        """Write the batch's links as default associations; a refused one fails its record."""
        for link, to_name in LINKS.get(name, {}).items():
            pairs = [
                (p, item.links[link])
                for p, item in enumerate(batch)
                if link in item.links and outcomes[p].remote_id is not None
            ]
            if not pairs:
                continue

            def send(sent: Sequence[tuple[int, str]], to_name: str = to_name) -> list[WriteOutcome]:
                inputs = [_association(outcomes[p], target) for p, target in sent]
                self._session.check_refused(
                    self._call(
                        "POST",
                        f"/crm/v4/associations/{name}/{to_name}/batch/associate/default",
                        json={"inputs": inputs},
                    ),
                    REFUSED | {404},
                )
                return [outcomes[p] for p, _ in sent]

            def refuse(pair: tuple[int, str], refused: Refused) -> WriteOutcome:
                p, target = pair
                done = outcomes[p]
                return WriteOutcome(
                    done.keyrack_id,
                    WriteResult.FAILED,
                    done.remote_id,
                    refused.failure,
                    self._session.exchange(
                        refused.response, request_body=_association(done, target)
                    ),
                )

            settled = isolate(pairs, send, refuse, lambda pair, field: False)
            for (p, _), outcome in zip(pairs, settled, strict=True):
                outcomes[p] = outcome
        return outcomes


def _association(outcome: WriteOutcome, target: str) -> dict[str, Any]:
    assert outcome.remote_id is not None
    return {"from": {"id": outcome.remote_id.rpartition(":")[2]}, "to": {"id": target}}


def _filter(name: str, operator: str, value: int) -> dict[str, str]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


def _stamp(result: Mapping[str, Any], stamp: str) -> int:
    value = (result.get("properties") or {}).get(stamp) or result.get("updatedAt")
    text = str(value)
    return int(text) if text.isdigit() else epoch_ms(text)


def _more(page: Mapping[str, Any]) -> bool:
    return bool((page.get("paging") or {}).get("next"))


def _primary(targets: Sequence[Mapping[str, Any]]) -> str | None:
    for target in targets:
        labels = [t.get("label") for t in target.get("associationTypes") or []]
        if "Primary" in labels:
            return str(target["toObjectId"])
    return str(targets[0]["toObjectId"]) if targets else None


def _property_named(response: httpx.Response) -> str | None:
    body = answer_json(response)
    for error in (body.get("errors") or []) if isinstance(body, dict) else []:
        names = (error.get("context") or {}).get("propertyName") or []
        if error.get("code") == "PROPERTY_DOESNT_EXIST" and names:
            return str(names[0])
    return None


def _remote_id(name: str, object_id: Any) -> str:
    return f"{name}:{object_id}" if name in KIND_OF_OBJECT else str(object_id)


def _locate(record_type: RecordType, remote_id: str) -> tuple[str, str] | None:
    names = OBJECTS[record_type]
    if record_type is RecordType.ENGAGEMENTS:
        name, _, object_id = remote_id.partition(":")
        if name not in names:
            return None
    else:
        name, object_id = names[0], remote_id
    return (name, object_id) if object_id.isdigit() else None


def _object_for(record_type: RecordType, item: OutboundRecord) -> str:
    if record_type is not RecordType.ENGAGEMENTS:
        return OBJECTS[record_type][0]
    if item.kind is None:
        raise ValueError(f"engagement {item.keyrack_id} has no kind")
    return OBJECT_OF_KIND[item.kind]
