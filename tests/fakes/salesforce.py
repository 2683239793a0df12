"""A stateful fake of the Salesforce REST API (``/services/data/vXX.X``, v59.0 by default),
served over TLS on loopback because Salesforce clients (simple-salesforce among them)
only speak ``https``.

It follows Salesforce's REST API Developer Guide ("Query", "Upsert a Record Using an
External ID", "sObject Collections", "Status Codes and Error Responses", "API Usage" /
``Sforce-Limit-Info``), the SOQL and SOSL Reference (date formats and literals, ORDER
BY, LIMIT) and the OAuth 2.0 refresh token flow of Salesforce Help.

Served:

- ``GET …/query?q=SOQL`` (and ``…/query/``): the subset in ``tests/fakes/soql.py``, e.g.
  ``SELECT Id, Name FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00Z ORDER BY
  SystemModstamp, Id LIMIT 500``; ``totalSize``, ``done``, ``records`` (each with
  ``attributes.type`` and ``.url``) and ``nextRecordsUrl`` (``…/query/01g…-2000``) while
  more remain; ``GET …/query/{locator}-{n}`` pages on. Batches are 2,000 records, or the
  ``Sforce-Query-Options: batchSize=n`` header (200 to 2,000). A WHERE on SystemModstamp
  ordered by it pages in O(page). Unknown columns answer ``INVALID_FIELD`` ("No such
  column 'X' on entity 'Account'…" with Salesforce's caret), unknown objects
  ``INVALID_TYPE``, a quoted datetime ``INVALID_QUERY_FILTER_OPERATOR``, the rest
  ``MALFORMED_QUERY``; an unknown locator ``INVALID_QUERY_LOCATOR``.
- ``POST …/sobjects/{type}`` (201 ``{"id","success","errors"}``), ``GET/PATCH/DELETE
  …/sobjects/{type}/{id}`` (PATCH and DELETE answer 204), ``GET …/sobjects/{type}/describe``.
- Upsert by external id: ``PATCH …/sobjects/{type}/{ExtField__c}/{value}`` answers 201
  ``{"id","success":true,"errors":[],"created":true}`` when it creates and 200 with
  ``"created":false`` when it updates (API v46.0 on; 204 before), 404 ``NOT_FOUND``
  "Provided external ID field does not exist or is not accessible: X" for a field that
  is not an external id; ``GET`` of the same path reads by external id.
- sObject Collections: ``POST …/composite/sobjects`` (create), ``PATCH
  …/composite/sobjects`` (update by Id), ``PATCH …/composite/sobjects/{type}/{ExtField}``
  (upsert): ≤ 200 records (else ``EXCEEDED_ID_LIMIT``), ``allOrNone``; the answer is an
  array, one entry per record in order: ``{"id","success":true,"errors":[]}`` (+
  ``"created"`` on upsert) or ``{"success":false,"errors":[{"statusCode","message",
  "fields"}]}``; with ``allOrNone`` a failure rolls every record back and the others say
  ``ALL_OR_NONE_OPERATION_ROLLED_BACK``. Per-record errors: ``REQUIRED_FIELD_MISSING``
  ("Required fields are missing: [Name]"), ``DUPLICATE_VALUE`` ("duplicate value found:
  F duplicates value on record with id: …"), ``DUPLICATE_EXTERNAL_ID``,
  ``INVALID_FIELD_FOR_INSERT_UPDATE``, ``INVALID_CROSS_REFERENCE_KEY``. An unknown field
  fails the whole request (``INVALID_FIELD`` "No such column 'X' on sobject of type
  Account", 400), as it does on Salesforce, where the body fails to deserialize first.
- ``POST /services/oauth2/token`` with ``grant_type=refresh_token``: ``{"access_token",
  "instance_url","id","token_type":"Bearer","issued_at","signature","scope"}`` — no
  ``expires_in``, no new refresh token — or 400 ``{"error":"invalid_grant",
  "error_description":"expired access/refresh token"}`` once revoked (``invalid_client_id``
  / ``invalid_client`` for a wrong client); ``POST /services/oauth2/revoke``.

Served over TLS with ``Connection: close`` (see ``base.closing_connections``).

Errors are Salesforce's: a JSON array of ``{"message","errorCode"[,"fields"]}``. An
unknown, expired or revoked token → 401 ``INVALID_SESSION_ID`` "Session expired or
invalid"; past the org's daily API limit → 403 ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests
Limit exceeded."; every REST answer carries ``Sforce-Limit-Info: api-usage=n/m``.

SystemModstamp and LastModifiedDate: a write by a user or an integration moves both;
``system_touch()`` moves only SystemModstamp, as Salesforce does for system changes
(automation, roll-ups, sharing recalculation). A sync that watermarks on LastModifiedDate
misses those; watermark on SystemModstamp (indexed, always ≥ LastModifiedDate) and order
by ``SystemModstamp, Id`` so equal stamps page deterministically.

Not modelled: relationship queries, OFFSET, queryAll/deleted rows, Bulk API, field-level
security, reference integrity of lookup fields, query cursors as snapshots (a record
changed while paging can appear again, later).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import soql
from tests.fakes.base import Answer, Clock, Controls, Record, Table, from_ms, serve, to_ms

COMPOSITE_MAX = 200
BATCH_SIZE = 2000
ORG_ID = "00D5g000004ABCDEAA"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_SYSTEM = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


@dataclass(frozen=True)
class SField:
    name: str
    type: str = "string"  # id string email phone url textarea picklist reference double
    #                       currency int boolean date datetime
    required: bool = False
    external_id: bool = False
    unique: bool = False
    system: bool = False


def _sobject(*fields: SField) -> dict[str, SField]:
    system = (
        SField("Id", "id", system=True),
        SField("IsDeleted", "boolean", system=True),
        SField("CreatedDate", "datetime", system=True),
        SField("LastModifiedDate", "datetime", system=True),
        SField("SystemModstamp", "datetime", system=True),
        SField("External_Id__c", external_id=True, unique=True),
    )
    return {f.name: f for f in (*system, *fields)}


SCHEMAS: dict[str, dict[str, SField]] = {
    "Account": _sobject(
        SField("Name", required=True),
        SField("Website", "url"),
        SField("Phone", "phone"),
        SField("Industry", "picklist"),
        SField("AnnualRevenue", "currency"),
        SField("Description", "textarea"),
    ),
    "Contact": _sobject(
        SField("FirstName"),
        SField("LastName", required=True),
        SField("Email", "email"),
        SField("Phone", "phone"),
        SField("Title"),
        SField("AccountId", "reference"),
    ),
    "Opportunity": _sobject(
        SField("Name", required=True),
        SField("StageName", "picklist", required=True),
        SField("CloseDate", "date", required=True),
        SField("Amount", "currency"),
        SField("AccountId", "reference"),
    ),
    "Contract": _sobject(
        SField("AccountId", "reference", required=True),
        SField("Status", "picklist"),
        SField("StartDate", "date"),
        SField("ContractTerm", "int"),
        SField("Description", "textarea"),
    ),
    "Task": _sobject(
        SField("Subject"),
        SField("Status", "picklist"),
        SField("Priority", "picklist"),
        SField("ActivityDate", "date"),
        SField("Description", "textarea"),
        SField("Type", "picklist"),
        SField("WhoId", "reference"),
        SField("WhatId", "reference"),
    ),
    "Event": _sobject(
        SField("Subject"),
        SField("StartDateTime", "datetime"),
        SField("EndDateTime", "datetime"),
        SField("DurationInMinutes", "int"),
        SField("Location"),
        SField("Description", "textarea"),
        SField("WhoId", "reference"),
        SField("WhatId", "reference"),
    ),
}
KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "Contract": "800",
    "Task": "00T",
    "Event": "00U",
}


def sf_errors(status: int, code: str, message: str, fields: list[str] | None = None) -> Answer:
    """An answer in Salesforce's error shape: a JSON array of one error."""
    error: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        error["fields"] = fields
    return Answer(status, [error])


def sf_datetime(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


def with_checksum(id15: str) -> str:
    """The 18-character Salesforce id: three suffix letters encode the case of the 15."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << n for n, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


class RecordError(Exception):
    """A per-record failure: becomes one entry of a collection answer, or a 400 alone."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.entry = {"statusCode": code, "message": message, "fields": fields or []}


@dataclass
class Session:
    client_id: str | None
    refresh_token: str | None
    expires_at: float | None
    revoked: bool = False


@dataclass
class ConnectedApp:
    client_id: str
    client_secret: str


@dataclass
class Cursor:
    sobject: str
    version: str
    fields: list[str]
    remaining: int
    batch_size: int
    offset: int = 0
    # the fast path walks the SystemModstamp window [lo, hi), resuming after (stamp, key);
    # otherwise ``keys`` holds the matched ids still to return
    fast: bool = False
    lo: int | None = None
    hi: int | None = None
    after: tuple[int, str] | None = None
    keys: list[str] = field(default_factory=list)


class SalesforceFake:
    """The fake org's state and its control surface; ``.app`` is the ASGI app to serve."""

    def __init__(
        self,
        *,
        api_limit: int = 15_000,
        session_ttl: float = 7200.0,
        query_batch_size: int = BATCH_SIZE,
        clock: Clock = time.time,
    ) -> None:
        self.base_url = ""
        self.controls = Controls()
        self.calls = self.controls.calls
        self.api_limit = api_limit
        self.api_used = 0
        self.session_ttl = session_ttl
        self.query_batch_size = query_batch_size
        self._clock = clock
        self._schemas = {name: dict(fields) for name, fields in SCHEMAS.items()}
        self._tables = {name: Table() for name in SCHEMAS}
        self._unique: dict[tuple[str, str], dict[str, str]] = {}
        self._sessions: dict[str, Session] = {}
        self._apps: dict[str, ConnectedApp] = {}
        self._refresh: dict[str, tuple[str, bool]] = {}  # token -> (client_id, revoked)
        self._cursors: dict[str, Cursor] = {}
        self._counter = 0
        self.app = Starlette(routes=self._routes())

    # ---- control surface -------------------------------------------------------------

    def fail_next(self, status: int = 503, body: Any = None, **options: Any) -> None:
        """The next request (see ``Controls.fail_next``) answers ``status``."""
        self.controls.fail_next(status, body, **options)

    def connected_app(
        self, client_id: str = "fake-consumer-key", client_secret: str = "fake-consumer-secret"
    ) -> ConnectedApp:
        app = ConnectedApp(client_id, client_secret)
        self._apps[client_id] = app
        return app

    def refresh_token(self, client_id: str) -> str:
        token = "5Aep861" + secrets.token_urlsafe(60)
        self._refresh[token] = (client_id, False)
        return token

    def session(self, refresh_token: str | None = None) -> str:
        """An access token (a session id), as the token endpoint or a login would issue."""
        client_id = self._refresh[refresh_token][0] if refresh_token else None
        token = f"{ORG_ID[:15]}!" + secrets.token_urlsafe(72)
        self._sessions[token] = Session(client_id, refresh_token, self._clock() + self.session_ttl)
        return token

    def expire(self, token: str) -> None:
        self._sessions[token].expires_at = self._clock() - 1

    def revoke(self, token: str) -> None:
        """Revoke a refresh token (and every session it issued) or a single session."""
        with self.controls.lock:
            if token in self._refresh:
                self._refresh[token] = (self._refresh[token][0], True)
                for session in self._sessions.values():
                    if session.refresh_token == token:
                        session.revoked = True
            else:
                self._sessions[token].revoked = True

    def add_field(self, sobject: str, name: str, type: str = "string", **flags: bool) -> None:
        with self.controls.lock:
            self._schemas[sobject][name] = SField(name, type, **flags)

    def delete_field(self, sobject: str, name: str) -> None:
        with self.controls.lock:
            del self._schemas[sobject][name]

    def rename_field(self, sobject: str, old: str, new: str) -> None:
        with self.controls.lock:
            schema = self._schemas[sobject]
            schema[new] = replace(schema.pop(old), name=new)
            for record in self._tables[sobject].rows.values():
                if old in record.fields:
                    record.fields[new] = record.fields.pop(old)
            if (sobject, old) in self._unique:
                self._unique[(sobject, new)] = self._unique.pop((sobject, old))

    def seed(
        self,
        sobject: str,
        rows: Iterable[dict[str, Any]],
        *,
        modified_at: dt.datetime | None = None,
        step: dt.timedelta = dt.timedelta(0),
    ) -> list[str]:
        """Store records directly (no HTTP); returns their ids. See ``HubSpotFake.seed``."""
        with self.controls.lock:
            start = to_ms(modified_at) if modified_at else self._now_ms()
            step_ms = int(step.total_seconds() * 1000)
            ids = []
            for n, row in enumerate(rows):
                values = self._values(sobject, row, seeding=True)
                record = self._insert(sobject, values, start + n * step_ms)
                ids.append(record.key)
            return ids

    def record(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        with self.controls.lock:
            record = self._tables[sobject].get(record_id)
            return None if record is None else self._render(sobject, record, None, "59.0")

    def count(self, sobject: str) -> int:
        return len(self._tables[sobject])

    def system_touch(self, sobject: str, record_id: str) -> None:
        """A system change: SystemModstamp moves, LastModifiedDate does not."""
        with self.controls.lock:
            table = self._tables[sobject]
            table.touch(table.rows[record_id], self._now_ms())

    # ---- plumbing ----------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _new_id(self, sobject: str) -> str:
        self._counter += 1
        n, digits = self._counter, ""
        while n:
            n, rest = divmod(n, 62)
            digits = _BASE62[rest] + digits
        return with_checksum(KEY_PREFIXES[sobject] + "5g00000" + digits.rjust(5, "0"))

    def _routes(self) -> list[Route]:
        data = "/services/data/v{version}"
        sobjects = data + "/sobjects/{sobject}"
        table: list[tuple[str, str, Callable[..., tuple[int, Any]], bool]] = [
            ("GET", data + "/query", self._query, True),
            ("GET", data + "/query/", self._query, True),
            ("GET", data + "/query/{locator}", self._query_more, True),
            ("GET", sobjects + "/describe", self._describe, True),
            ("POST", sobjects, self._create, True),
            ("GET", sobjects + "/{record_id}", self._get, True),
            ("PATCH", sobjects + "/{record_id}", self._update, True),
            ("DELETE", sobjects + "/{record_id}", self._delete, True),
            ("GET", sobjects + "/{field}/{value}", self._get_by_external_id, True),
            ("PATCH", sobjects + "/{field}/{value}", self._upsert_one, True),
            ("POST", data + "/composite/sobjects", self._collection_create, True),
            ("PATCH", data + "/composite/sobjects", self._collection_update, True),
            (
                "PATCH",
                data + "/composite/sobjects/{sobject}/{field}",
                self._collection_upsert,
                True,
            ),
            ("POST", "/services/oauth2/token", self._token, False),
            ("POST", "/services/oauth2/revoke", self._revoke, False),
        ]
        return [
            Route(path, self._endpoint(path, handler, authed), methods=[method])
            for method, path, handler, authed in table
        ]

    def _endpoint(
        self, template: str, handler: Callable[..., tuple[int, Any]], authed: bool
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            with self.controls.lock:
                status, body, headers = self._answer(request, raw, template, handler, authed)
            if body is None:
                return Response(status_code=status, headers=headers)
            return JSONResponse(body, status_code=status, headers=headers)

        return endpoint

    def _answer(
        self,
        request: Request,
        raw: bytes,
        template: str,
        handler: Callable[..., tuple[int, Any]],
        authed: bool,
    ) -> tuple[int, Any, dict[str, str]]:
        params = dict(request.path_params)
        key = template.replace("v{version}", "vXX.X")
        if params.get("sobject") in SCHEMAS:
            key = key.replace("{sobject}", params["sobject"])
        self.controls.count(request.method, key)
        headers: dict[str, str] = {}
        try:
            fault = self.controls.injected(request.url.path)
            if fault is not None:
                raise Answer(fault.status, fault.body or _server_error())
            if authed:
                self._authenticate(request)
                if self.api_used >= self.api_limit:
                    headers = self._usage()
                    raise sf_errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
                self.api_used += 1
                headers = self._usage()
            status, body = handler(request, params, raw)
        except Answer as answer:
            status, body = answer.status, answer.body
            headers |= answer.headers
        return status, body, headers

    def _usage(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_limit}"}

    def _authenticate(self, request: Request) -> Session:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        session = (
            self._sessions.get(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
        )
        if (
            session is None
            or session.revoked
            or (session.expires_at is not None and self._clock() >= session.expires_at)
        ):
            raise sf_errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return session

    def _sobject(self, name: str) -> str:
        for known in self._schemas:
            if known.lower() == name.lower():
                return known
        raise sf_errors(404, "NOT_FOUND", "The requested resource does not exist")

    def _field(self, sobject: str, name: str) -> SField | None:
        schema = self._schemas[sobject]
        found = schema.get(name)
        if found is None:
            found = next((f for f in schema.values() if f.name.lower() == name.lower()), None)
        return found

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"{}")
        except ValueError as error:
            raise sf_errors(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from None

    def _values(self, sobject: str, body: Any, *, seeding: bool = False) -> dict[str, Any]:
        """The body's fields, canonically named and typed; unknown fields fail the request."""
        if not isinstance(body, dict):
            raise sf_errors(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name == "attributes":
                continue
            spec = self._field(sobject, name)
            if spec is None:
                if seeding:
                    raise ValueError(f"{sobject} has no field {name}")
                raise sf_errors(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                )
            values[spec.name] = _convert(spec, value)
        return values

    def _insert(self, sobject: str, values: dict[str, Any], stamp: int) -> Record:
        record = Record(self._new_id(sobject), stamp, stamp, dict(values))
        record.fields["LastModifiedDate"] = stamp
        self._tables[sobject].insert(record)
        self._index(sobject, record, {})
        return record

    def _index(self, sobject: str, record: Record, before: dict[str, Any]) -> None:
        for spec in self._schemas[sobject].values():
            if not spec.unique:
                continue
            index = self._unique.setdefault((sobject, spec.name), {})
            old, new = before.get(spec.name), record.fields.get(spec.name)
            if old is not None and old != new:
                index.pop(str(old).lower(), None)
            if new is not None:
                index[str(new).lower()] = record.key

    def _owner(self, sobject: str, name: str, value: Any) -> str | None:
        return self._unique.get((sobject, name), {}).get(str(value).lower())

    def _check(
        self, sobject: str, values: dict[str, Any], record: Record | None, *, upsert_on: str = ""
    ) -> None:
        """Per-record validation; raises RecordError."""
        schema = self._schemas[sobject]
        system = [n for n in values if schema[n].system and n != "Id"]
        if system:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(system)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                system,
            )
        if record is None:
            missing = [
                f.name for f in schema.values() if f.required and values.get(f.name) in (None, "")
            ]
            if missing:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
        for name, value in values.items():
            if schema[name].unique and value is not None and name != upsert_on:
                owner = self._owner(sobject, name, value)
                if owner is not None and (record is None or owner != record.key):
                    raise RecordError(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {name} duplicates value on record with id: "
                        f"{owner}",
                        [],
                    )

    def _save(self, sobject: str, values: dict[str, Any], record: Record | None) -> Record:
        if record is None:
            return self._insert(sobject, values, self._now_ms())
        before = dict(record.fields)
        now = self._now_ms()
        record.fields.update(values)
        record.fields["LastModifiedDate"] = now
        self._tables[sobject].touch(record, now)
        self._index(sobject, record, before)
        return record

    def _render(
        self, sobject: str, record: Record, names: list[str] | None, version: str
    ) -> dict[str, Any]:
        schema = self._schemas[sobject]
        out: dict[str, Any] = {
            "attributes": {
                "type": sobject,
                "url": f"/services/data/v{version}/sobjects/{sobject}/{record.key}",
            }
        }
        for name in names or list(schema):
            spec = schema.get(name)
            if spec is not None:
                out[name] = _output(spec, _value(record, name))
        return out

    def _record(self, sobject: str, record_id: str) -> Record:
        record = self._tables[sobject].get(record_id)
        if record is None and len(record_id) == 15:
            record = self._tables[sobject].get(with_checksum(record_id))
        if record is None:
            raise sf_errors(404, "NOT_FOUND", "The requested resource does not exist")
        return record

    def _external_field(self, sobject: str, name: str) -> SField:
        spec = self._field(sobject, name)
        if spec is None or not (spec.external_id or spec.name == "Id"):
            raise sf_errors(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {name}",
            )
        return spec

    # ---- query --------------------------------------------------------------------------

    def _query(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        text = request.query_params.get("q")
        if not text:
            raise sf_errors(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            query = soql.parse(text)
        except soql.SoqlError as error:
            raise sf_errors(400, error.code, error.message) from None
        cursor = self._plan(query, params["version"], self._batch_size(request))
        return 200, self._page(cursor, total=cursor.remaining)

    def _batch_size(self, request: Request) -> int:
        options = request.headers.get("sforce-query-options", "")
        for option in options.split(","):
            name, _, value = option.strip().partition("=")
            if name.lower() == "batchsize" and value.isdigit():
                return min(BATCH_SIZE, max(200, int(value)))
        return self.query_batch_size

    def _plan(self, query: soql.Query, version: str, batch_size: int) -> Cursor:
        sobject = next((s for s in self._schemas if s.lower() == query.sobject.text.lower()), None)
        if sobject is None:
            raise sf_errors(
                400,
                "INVALID_TYPE",
                query.pointing_at(
                    query.sobject,
                    f"sObject type '{query.sobject.text}' is not supported. If you are "
                    "attempting to use a custom object, be sure to append the '__c' after "
                    "the entity name. Please reference your WSDL or the describe call for "
                    "the appropriate names.",
                ),
            )

        def column(token: soql.Token) -> SField:
            spec = self._field(sobject, token.text)
            if spec is None:
                raise sf_errors(
                    400,
                    "INVALID_FIELD",
                    query.pointing_at(
                        token,
                        f"No such column '{token.text}' on entity '{sobject}'. If you are "
                        "attempting to use a custom field, be sure to append the '__c' after "
                        "the custom field name. Please reference your WSDL or the describe "
                        "call for the appropriate names.",
                    ),
                )
            return spec

        fields = [column(t).name for t in query.fields]
        checks = [(column(c.field), c) for c in query.where]
        for spec, condition in checks:
            _check_literals(query, spec, condition)
        orders = [(column(o.field).name, o) for o in query.order]
        table = self._tables[sobject]
        limit = query.limit if query.limit is not None else len(table)
        cursor = Cursor(sobject, version, fields, 0, batch_size)
        window = _modstamp_window(checks, [name for name, _ in orders])
        if window is not None:
            start, stop = table.stamp_bounds(*window)
            cursor.remaining = min(limit, stop - start)
            cursor.fast, (cursor.lo, cursor.hi) = True, window
            return cursor

        def keep(record: Record) -> bool:
            return all(_matches(spec, c, _value(record, spec.name)) for spec, c in checks)

        matched = [r for r in table.rows.values() if keep(r)]
        for name, order in reversed(orders):
            spec = self._schemas[sobject][name]
            present = [r for r in matched if _value(r, name) is not None]
            absent = [r for r in matched if _value(r, name) is None]
            present.sort(key=lambda r: _sortable(spec, _value(r, name)), reverse=order.descending)
            matched = present + absent if order.nulls_last else absent + present
        cursor.keys = [r.key for r in matched[:limit]]
        cursor.remaining = len(cursor.keys)
        return cursor

    def _page(self, cursor: Cursor, total: int) -> dict[str, Any]:
        table = self._tables[cursor.sobject]
        count = min(cursor.batch_size, cursor.remaining)
        if cursor.fast:
            if cursor.after is None:
                rows = table.by_stamp(*table.stamp_bounds(cursor.lo, cursor.hi))
            else:
                rows = table.after_stamp(*cursor.after, cursor.hi)
            records = list(islice(rows, count))
            if records:
                cursor.after = (records[-1].stamp_ms, records[-1].key)
        else:
            records = [table.rows[k] for k in cursor.keys[:count] if k in table.rows]
            del cursor.keys[:count]
        cursor.remaining -= count
        cursor.offset += count
        body: dict[str, Any] = {
            "totalSize": total,
            "done": cursor.remaining <= 0,
            "records": [
                self._render(cursor.sobject, r, cursor.fields, cursor.version) for r in records
            ],
        }
        if cursor.remaining > 0:
            locator = "01g" + secrets.token_hex(8)[:15]
            self._cursors[locator] = cursor
            body["nextRecordsUrl"] = (
                f"/services/data/v{cursor.version}/query/{locator}-{cursor.offset}"
            )
        return body

    def _query_more(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        locator, _, offset = params["locator"].partition("-")
        cursor = self._cursors.pop(locator, None)
        if cursor is None or str(cursor.offset) != offset:
            raise sf_errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return 200, self._page(cursor, total=cursor.offset + cursor.remaining)

    # ---- sobjects -----------------------------------------------------------------------

    def _describe(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        return 200, {
            "name": sobject,
            "label": sobject,
            "keyPrefix": KEY_PREFIXES[sobject],
            "createable": True,
            "updateable": True,
            "queryable": True,
            "fields": [
                {
                    "name": f.name,
                    "label": f.name.removesuffix("__c").replace("_", " "),
                    "type": f.type,
                    "nillable": not f.required and not f.system,
                    "createable": not f.system,
                    "updateable": not f.system,
                    "externalId": f.external_id,
                    "unique": f.unique,
                    "custom": f.name.endswith("__c"),
                }
                for f in self._schemas[sobject].values()
            ],
        }

    def _create(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        values = self._values(sobject, self._json(raw))
        try:
            self._check(sobject, values, None)
        except RecordError as error:
            raise _alone(error) from None
        record = self._save(sobject, values, None)
        return 201, {"id": record.key, "success": True, "errors": []}

    def _get(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        record = self._record(sobject, params["record_id"])
        return 200, self._render(sobject, record, _field_list(request), params["version"])

    def _update(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        record = self._record(sobject, params["record_id"])
        values = self._values(sobject, self._json(raw))
        try:
            self._check(sobject, values, record)
        except RecordError as error:
            raise _alone(error) from None
        self._save(sobject, values, record)
        return 204, None

    def _delete(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        record = self._record(sobject, params["record_id"])
        for spec in self._schemas[sobject].values():
            if spec.unique and spec.name in record.fields:
                self._unique.get((sobject, spec.name), {}).pop(
                    str(record.fields[spec.name]).lower(), None
                )
        self._tables[sobject].delete(record)
        return 204, None

    def _get_by_external_id(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        spec = self._external_field(sobject, params["field"])
        key = (
            params["value"]
            if spec.name == "Id"
            else self._owner(sobject, spec.name, params["value"])
        )
        record = self._record(sobject, key or "")
        return 200, self._render(sobject, record, _field_list(request), params["version"])

    def _upsert(
        self, sobject: str, spec: SField, value: str, values: dict[str, Any]
    ) -> tuple[Record | None, dict[str, Any]]:
        """Validate one upsert: the record it updates (None: creates) and its values."""
        given = values.get(spec.name)
        if given is not None and str(given) != value:
            raise RecordError(
                "INVALID_FIELD",
                f"The external ID field {spec.name} in the body does not match the URL",
                [spec.name],
            )
        if spec.name == "Id":
            record = self._tables[sobject].get(value)
            if record is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        else:
            key = self._owner(sobject, spec.name, value)
            record = self._tables[sobject].get(key) if key else None
            values = {**values, spec.name: value}
        self._check(sobject, values, record, upsert_on=spec.name)
        return record, values

    def _upsert_one(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        spec = self._external_field(sobject, params["field"])
        values = self._values(sobject, self._json(raw))
        try:
            record, values = self._upsert(sobject, spec, params["value"], values)
        except RecordError as error:
            raise _alone(error) from None
        saved = self._save(sobject, values, record)
        created = record is None
        return (201 if created else 200), {
            "id": saved.key,
            "success": True,
            "errors": [],
            "created": created,
        }

    # ---- sObject collections ------------------------------------------------------------

    def _collection(self, raw: bytes) -> tuple[bool, list[dict[str, Any]]]:
        body = self._json(raw)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise sf_errors(400, "JSON_PARSER_ERROR", "records is required")
        if len(records) > COMPOSITE_MAX:
            raise sf_errors(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COMPOSITE_MAX} records into "
                "this call",
            )
        return bool(body.get("allOrNone", False)), records

    def _record_type(self, item: dict[str, Any], expected: str | None = None) -> str:
        attributes = item.get("attributes")
        name = attributes.get("type") if isinstance(attributes, dict) else None
        if not name:
            raise sf_errors(400, "INVALID_TYPE", "Must send a concrete entity type.", [])
        sobject = self._sobject(name)
        if expected is not None and sobject != expected:
            raise sf_errors(400, "INVALID_TYPE", f"Entity type {sobject} does not match {expected}")
        return sobject

    def _apply(
        self,
        all_or_none: bool,
        prepared: list[tuple[str, Callable[[], tuple[Record | None, dict[str, Any]]]]],
        *,
        upsert: bool,
    ) -> tuple[int, Any]:
        """Validate each record, then write the valid ones (none, under allOrNone)."""
        planned: list[tuple[str, Record | None, dict[str, Any]] | RecordError] = []
        claimed: set[tuple[str, str]] = set()
        for sobject, prepare in prepared:
            try:
                record, values = prepare()
                for name, value in values.items():
                    spec = self._schemas[sobject][name]
                    if spec.unique and value is not None:
                        claim = (f"{sobject}.{name}", str(value).lower())
                        if claim in claimed:
                            raise RecordError(
                                "DUPLICATE_EXTERNAL_ID" if upsert else "DUPLICATE_VALUE",
                                f"Duplicate external id specified: {value}"
                                if upsert
                                else f"duplicate value found: {name} duplicates value in batch",
                                [name],
                            )
                        claimed.add(claim)
                planned.append((sobject, record, values))
            except RecordError as error:
                planned.append(error)
        failed = any(isinstance(p, RecordError) for p in planned)
        results: list[dict[str, Any]] = []
        for plan in planned:
            if isinstance(plan, RecordError):
                results.append({"success": False, "errors": [plan.entry]})
            elif all_or_none and failed:
                results.append({"success": False, "errors": [_ROLLED_BACK]})
            else:
                sobject, record, values = plan
                saved = self._save(sobject, values, record)
                result: dict[str, Any] = {"id": saved.key, "success": True, "errors": []}
                if upsert:
                    result["created"] = record is None
                results.append(result)
        return 200, results

    def _collection_create(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        all_or_none, records = self._collection(raw)
        prepared = []
        for item in records:
            sobject = self._record_type(item)
            values = self._values(sobject, item)

            def prepare(sobject: str = sobject, values: dict[str, Any] = values) -> Any:
                if "Id" in values:
                    raise RecordError(
                        "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"]
                    )
                self._check(sobject, values, None)
                return None, values

            prepared.append((sobject, prepare))
        return self._apply(all_or_none, prepared, upsert=False)

    def _collection_update(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        all_or_none, records = self._collection(raw)
        prepared = []
        for item in records:
            sobject = self._record_type(item)
            values = self._values(sobject, item)

            def prepare(sobject: str = sobject, values: dict[str, Any] = values) -> Any:
                record = self._tables[sobject].get(str(values.pop("Id", "")))
                if record is None:
                    raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                self._check(sobject, values, record)
                return record, values

            prepared.append((sobject, prepare))
        return self._apply(all_or_none, prepared, upsert=False)

    def _collection_upsert(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        sobject = self._sobject(params["sobject"])
        spec = self._external_field(sobject, params["field"])
        all_or_none, records = self._collection(raw)
        prepared = []
        for item in records:
            self._record_type(item, sobject)
            values = self._values(sobject, item)

            def prepare(values: dict[str, Any] = values) -> Any:
                value = values.get(spec.name)
                if value in (None, ""):
                    raise RecordError("MISSING_ARGUMENT", f"{spec.name} not specified", [spec.name])
                return self._upsert(sobject, spec, str(value), values)

            prepared.append((sobject, prepare))
        return self._apply(all_or_none, prepared, upsert=True)

    # ---- OAuth 2.0 ----------------------------------------------------------------------

    def _token(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if form.get("grant_type") != "refresh_token":
            raise Answer(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
            )
        app = self._apps.get(form.get("client_id", ""))
        if app is None:
            raise Answer(
                400,
                {"error": "invalid_client_id", "error_description": "client identifier invalid"},
            )
        if "client_secret" in form and not secrets.compare_digest(
            form["client_secret"], app.client_secret
        ):
            raise Answer(
                400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            )
        refresh = form.get("refresh_token", "")
        owner, revoked = self._refresh.get(refresh, (None, True))
        if owner != app.client_id or revoked:
            raise Answer(
                400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}
            )
        token = self.session(refresh)
        issued = str(self._now_ms())
        return 200, {
            "access_token": token,
            "signature": secrets.token_urlsafe(32),
            "scope": "refresh_token api",
            "instance_url": self.base_url,
            "id": f"{self.base_url}/id/{ORG_ID}/0055g00000ABCDEAAA",
            "token_type": "Bearer",
            "issued_at": issued,
        }

    def _revoke(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        token = parse_qs(raw.decode()).get("token", [""])[0]
        if token not in self._refresh and token not in self._sessions:
            raise Answer(
                400,
                {"error": "unsupported_token_type", "error_description": "unsupported token type"},
            )
        self.revoke(token)
        return 200, None


_ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was "
    "using AllOrNone header",
    "fields": [],
}


def _alone(error: RecordError) -> Answer:
    """A per-record error answered on its own (single-record calls): Salesforce's array."""
    entry = error.entry
    return sf_errors(400, entry["statusCode"], entry["message"], entry["fields"])


def _server_error() -> list[dict[str, str]]:
    return [{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}]


def _value(record: Record, name: str) -> Any:
    if name == "Id":
        return record.key
    if name == "SystemModstamp":
        return record.stamp_ms
    if name == "CreatedDate":
        return record.created_ms
    if name == "IsDeleted":
        return False
    return record.fields.get(name)


def _convert(spec: SField, value: Any) -> Any:
    """A JSON value as stored for the field's type; JSON_PARSER_ERROR when it cannot be."""
    if value is None:
        return None
    try:
        if spec.type == "datetime":
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return to_ms(moment)
        if spec.type == "date":
            return dt.date.fromisoformat(str(value)).isoformat()
        if spec.type in ("double", "currency"):
            return float(value)
        if spec.type == "int":
            return int(value)
        if spec.type == "boolean":
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        kind = {"datetime": "datetime", "date": "date", "boolean": "boolean"}.get(
            spec.type, "double"
        )
        raise sf_errors(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from VALUE_STRING value {value} or request "
            f"may be missing a required field",
        ) from None
    return str(value)


def _output(spec: SField, value: Any) -> Any:
    if value is None:
        return None
    if spec.type == "datetime":
        return sf_datetime(value)
    return value


def _sortable(spec: SField, value: Any) -> Any:
    return value.lower() if isinstance(value, str) and spec.type != "id" else value


def _literal_value(spec: SField, literal: soql.Literal) -> Any:
    if literal.kind == "number" and spec.type == "int":
        return int(literal.value)
    if literal.kind == "string" and spec.type not in ("id", "reference"):
        return str(literal.value).lower()
    return literal.value


def _check_literals(query: soql.Query, spec: SField, condition: soql.Condition) -> None:
    expected = {
        "datetime": "datetime",
        "date": "date",
        "double": "number",
        "currency": "number",
        "int": "number",
        "boolean": "boolean",
    }.get(spec.type, "string")
    for literal in condition.values:
        if literal.kind not in (expected, "null"):
            shown = {"datetime": "dateTime", "number": "double"}.get(expected, expected)
            quoted = "and should not be enclosed in quotes" if literal.kind == "string" else ""
            raise sf_errors(
                400,
                "INVALID_QUERY_FILTER_OPERATOR",
                query.pointing_at(
                    literal.token,
                    f"value of filter criterion for field '{spec.name}' must be of type "
                    f"{shown} {quoted}".rstrip(),
                ),
            )


def _matches(spec: SField, condition: soql.Condition, value: Any) -> bool:
    wanted = [_literal_value(spec, v) for v in condition.values]
    if isinstance(value, str) and spec.type not in ("id", "reference"):
        value = value.lower()
    op = condition.op
    if op in ("in", "notin"):
        return (value in wanted) == (op == "in")
    target = wanted[0]
    if target is None or value is None:
        return (value is target) == (op == "=") if op in ("=", "!=") else False
    return {
        "=": value == target,
        "!=": value != target,
        "<": value < target,
        "<=": value <= target,
        ">": value > target,
        ">=": value >= target,
    }[op]


def _modstamp_window(
    checks: list[tuple[SField, soql.Condition]], order: list[str]
) -> tuple[int | None, int | None] | None:
    """``[lo, hi)`` when the WHERE is only SystemModstamp ranges, ordered by it (or not)."""
    if order not in ([], ["SystemModstamp"], ["SystemModstamp", "Id"]):
        return None
    lo: int | None = None
    hi: int | None = None
    for spec, condition in checks:
        if spec.name != "SystemModstamp" or condition.op not in ("<", "<=", ">", ">="):
            return None
        value = condition.values[0].value
        if value is None:
            return None
        if condition.op in (">", ">="):
            bound = value + 1 if condition.op == ">" else value
            lo = bound if lo is None else max(lo, bound)
        else:
            bound = value + 1 if condition.op == "<=" else value
            hi = bound if hi is None else min(hi, bound)
    return lo, hi


def _field_list(request: Request) -> list[str] | None:
    fields = request.query_params.get("fields")
    return [f.strip() for f in fields.split(",")] if fields else None


@contextmanager
def salesforce_fake(**options: Any) -> Iterator[SalesforceFake]:
    """A Salesforce fake on a real TLS socket; ``fake.base_url`` is its ``instance_url``.

    Clients verify its certificate with ``tests.fakes.base.loopback_certificate()[0]``
    (httpx: ``verify=``; a requests session: ``verify`` and ``trust_env = False``, or the
    ``REQUESTS_CA_BUNDLE`` of the environment wins over ``session.verify``).
    """
    fake = SalesforceFake(**options)
    with serve(fake.app, tls=True) as url:
        fake.base_url = url
        yield fake
