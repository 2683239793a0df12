"""A stateful fake of HubSpot's CRM v3 API, built from HubSpot's published OpenAPI documents
(``HubSpot/HubSpot-public-api-spec-collection``: CRM Companies, Contacts, Deals, Notes,
Calls, Meetings, Emails, Tasks and Properties v3, Associations v4, Auth OAuth v1).

Served (paths, parameters and field names as those documents declare them; ``{objectType}``
is ``companies``/``contacts``/``deals``/``notes``/``calls``/``meetings``/``emails``/``tasks``,
their singular, or their type id such as ``0-3``):

- ``GET/POST /crm/v3/objects/{objectType}``: list (``limit`` ≤ 100, ``after`` cursor,
  ``properties``, ``associations``) and create (with ``associations``).
- ``GET/PATCH/DELETE /crm/v3/objects/{objectType}/{objectId}`` (``idProperty`` for a
  unique property such as a contact's ``email``). A missing numeric id answers 404 with an
  empty body, as HubSpot does; a non-numeric one its ``OBJECT_NOT_FOUND`` body.
- ``POST /crm/v3/objects/{objectType}/search``: ``filterGroups`` (OR of ANDed filters, ≤ 5
  groups, ≤ 10 filters a group, ≤ 25 in all; every operator of the ``Filter`` schema),
  ``query``, one sort (``{"propertyName","direction"}`` or ``"-prop"``), ``limit`` ≤ 200 and
  the offset cursor ``after``. HubSpot's 10,000-result cap is real here: ``total`` counts
  every match, ``paging.next.after`` happily says ``"10000"``, and asking for it answers 400.
  To read past it, page on ``hs_lastmodifieddate`` (``lastmodifieddate`` for contacts):
  sort ascending by it, and when ``after`` would reach 10,000 start a new search with
  ``GTE`` the last modification time seen (records sharing that millisecond repeat, so
  dedupe by id). A filter on ``hs_lastmodifieddate`` sorted by it pages in O(page).
- ``POST /crm/v3/objects/{objectType}/batch/{create,read,update,upsert,archive}``: ≤ 100
  inputs; ``idProperty`` for read/update/upsert. A bad input fails the whole batch (400 or
  409, nothing written) unless every bad input carries an ``objectWriteTraceId``: then the
  answer is 207 Multi-Status with ``results``, ``errors`` (``StandardError``s whose
  ``context`` names the ``objectWriteTraceId``) and ``numErrors`` — HubSpot's documented
  multi-status behaviour. ``batch/read`` with unknown ids answers 207 ``OBJECT_NOT_FOUND``.
- ``GET /crm/v3/properties/{objectType}[/{propertyName}]``: the schema per object type.
  Writing an unknown property answers 400 ``VALIDATION_ERROR`` "Property values were not
  valid" with ``PROPERTY_DOESNT_EXIST`` (reads ignore unknown requested properties, as
  HubSpot does). A contact with an email that exists answers 409 ``CONFLICT``
  "Contact already exists. Existing ID: …".
- Associations v4: ``PUT …/associations/default/{toObjectType}/{toObjectId}``, labelled
  ``PUT/DELETE …/associations/{toObjectType}/{toObjectId}``, ``GET
  /crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}``, and
  ``POST /crm/v4/associations/{from}/{to}/batch/{create,associate/default,read}``; the
  HUBSPOT_DEFINED type ids (279/280 contact↔company, 341/342 deal↔company, 3/4
  deal↔contact, 202/190/214 note→contact/company/deal, and so on for calls, emails,
  meetings, tasks); v3 reads show them under ``associations``.
- ``POST /oauth/v1/token`` (``authorization_code`` and ``refresh_token`` grants, form
  encoded), ``GET /oauth/v1/access-tokens/{token}``, ``GET/DELETE
  /oauth/v1/refresh-tokens/{token}``.

Auth: a private-app token (``Bearer pat-na1-…``) or an OAuth access token, each with
scopes (``crm.objects.companies.read`` and so on; engagements need the contacts scopes).
Unknown or revoked → 401 ``INVALID_AUTHENTICATION``; an expired OAuth token → 401
``EXPIRED_AUTHENTICATION`` "The OAuth token used to make this call expired N second(s)
ago." with ``context["expire time"]``; a missing scope → 403 ``MISSING_SCOPES``. A revoked
or unknown refresh token → 400 ``{"status":"BAD_REFRESH_TOKEN", "error":"invalid_grant",
…}``. Refresh tokens do not rotate (HubSpot answers the same one back).

Rate limits, per token: a rolling window (``rate_limit=(max, seconds)``, HubSpot's default
for a private app on Free is 100 per 10 s), ``X-HubSpot-RateLimit-Max``, ``-Remaining``,
``-Interval-Milliseconds``, ``-Secondly``, ``-Secondly-Remaining`` on every answer (plus
``-Daily``/``-Daily-Remaining`` for private apps), and past it 429 ``{"status":"error",
"message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT",
"policyName":"TEN_SECONDLY_ROLLING",…}`` (``SECONDLY`` for a one-second window). Search
has its own per-token limit (``search_rate_limit``, 5 a second) and, as HubSpot documents,
sends no rate-limit headers. HubSpot does not document ``Retry-After``; the fake sends it
on 429 unless ``retry_after=False`` — a connector must cope without it (wait out
``X-HubSpot-RateLimit-Interval-Milliseconds``).

Exact texts known from HubSpot's answers: the 401/429 bodies, ``BAD_REFRESH_TOKEN``, the
"Property values were not valid" and "Contact already exists" messages, "Unable to infer
object type from: …". Texts of rarer refusals (batch over 100, more than one sort, the
10,000 cap) keep HubSpot's shape and category with a message of the fake's own.

Not modelled: merge, GDPR delete, property history, custom objects, association labels
beyond the defined types, restoring archived records.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    Answer,
    Clock,
    Controls,
    Record,
    SlidingWindow,
    Table,
    correlation_id,
    from_ms,
    serve,
    to_ms,
)

SEARCH_CAP = 10_000
BATCH_MAX = 100
SEARCH_LIMIT_MAX = 200
LIST_LIMIT_MAX = 100
HUB_ID = 4_242_424


@dataclass(frozen=True)
class Prop:
    name: str
    type: str = "string"  # string | number | datetime | enumeration | bool
    unique: bool = False
    label: str = ""


@dataclass(frozen=True)
class ObjectType:
    name: str  # the plural in paths: "companies"
    type_id: str  # "0-2"
    singular: str  # "company"
    scope: str  # the scope family: "crm.objects.companies"
    defaults: tuple[str, ...]  # properties a read returns when none are asked for
    searchable: tuple[str, ...]  # what a search ``query`` matches
    computed: tuple[str, ...]  # read-only properties the fake derives
    props: tuple[Prop, ...]

    @property
    def modstamp(self) -> str:
        return "lastmodifieddate" if self.name == "contacts" else "hs_lastmodifieddate"


def _strings(*names: str) -> tuple[Prop, ...]:
    return tuple(Prop(name) for name in names)


def _engagement(name: str, type_id: str, singular: str, *props: Prop) -> ObjectType:
    return ObjectType(
        name,
        type_id,
        singular,
        "crm.objects.contacts",
        ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
        (),
        ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
        (Prop("hs_timestamp", "datetime"), Prop("hubspot_owner_id"), *props),
    )


OBJECT_TYPES: dict[str, ObjectType] = {
    t.name: t
    for t in (
        ObjectType(
            "companies",
            "0-2",
            "company",
            "crm.objects.companies",
            ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
            ("name", "domain", "website", "phone"),
            ("createdate", "hs_lastmodifieddate", "hs_object_id"),
            (
                *_strings("name", "domain", "website", "phone", "industry", "city", "country"),
                Prop("annualrevenue", "number"),
                Prop("lifecyclestage", "enumeration"),
            ),
        ),
        ObjectType(
            "contacts",
            "0-1",
            "contact",
            "crm.objects.contacts",
            ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
            ("firstname", "lastname", "email", "phone", "company"),
            ("createdate", "hs_lastmodifieddate", "hs_object_id", "lastmodifieddate"),
            (
                Prop("email", unique=True),
                *_strings("firstname", "lastname", "phone", "company", "jobtitle"),
                Prop("lifecyclestage", "enumeration"),
            ),
        ),
        ObjectType(
            "deals",
            "0-3",
            "deal",
            "crm.objects.deals",
            (
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ),
            ("dealname",),
            ("createdate", "hs_lastmodifieddate", "hs_object_id"),
            (
                Prop("dealname"),
                Prop("amount", "number"),
                Prop("closedate", "datetime"),
                Prop("dealstage", "enumeration"),
                Prop("pipeline", "enumeration"),
                Prop("hs_mrr", "number"),
                Prop("description"),
            ),
        ),
        _engagement("notes", "0-46", "note", Prop("hs_note_body")),
        _engagement(
            "calls",
            "0-48",
            "call",
            Prop("hs_call_title"),
            Prop("hs_call_body"),
            Prop("hs_call_duration", "number"),
            Prop("hs_call_direction", "enumeration"),
            Prop("hs_call_status", "enumeration"),
        ),
        _engagement(
            "meetings",
            "0-47",
            "meeting",
            Prop("hs_meeting_title"),
            Prop("hs_meeting_body"),
            Prop("hs_meeting_start_time", "datetime"),
            Prop("hs_meeting_end_time", "datetime"),
            Prop("hs_meeting_outcome", "enumeration"),
        ),
        _engagement(
            "emails",
            "0-49",
            "email",
            Prop("hs_email_subject"),
            Prop("hs_email_text"),
            Prop("hs_email_direction", "enumeration"),
            Prop("hs_email_status", "enumeration"),
        ),
        _engagement(
            "tasks",
            "0-27",
            "task",
            Prop("hs_task_subject"),
            Prop("hs_task_body"),
            Prop("hs_task_status", "enumeration"),
            Prop("hs_task_priority", "enumeration"),
        ),
    )
}

# (from, to) -> [(typeId, name)], the default (unlabelled) type first; REVERSE maps typeIds.
_PAIRS: list[tuple[str, str, int, int, str]] = [
    ("contacts", "companies", 279, 280, "unlabeled"),
    ("contacts", "companies", 1, 2, "primary"),
    ("deals", "companies", 341, 342, "unlabeled"),
    ("deals", "companies", 5, 6, "primary"),
    ("deals", "contacts", 3, 4, ""),
    *(
        (engagement, target, forward, forward - 1, "")
        for engagement, ids in {
            "notes": (202, 190, 214),
            "calls": (194, 182, 206),
            "emails": (198, 186, 210),
            "meetings": (200, 188, 212),
            "tasks": (204, 192, 216),
        }.items()
        for target, forward in zip(("contacts", "companies", "deals"), ids, strict=True)
    ),
]
ASSOCIATION_TYPES: dict[tuple[str, str], list[tuple[int, str]]] = {}
REVERSE: dict[int, int] = {}
for _from, _to, _fwd, _rev, _kind in _PAIRS:
    _suffix = "_unlabeled" if _kind == "unlabeled" else ""
    _f, _t = OBJECT_TYPES[_from].singular, OBJECT_TYPES[_to].singular
    ASSOCIATION_TYPES.setdefault((_from, _to), []).append((_fwd, f"{_f}_to_{_t}{_suffix}"))
    ASSOCIATION_TYPES.setdefault((_to, _from), []).append((_rev, f"{_t}_to_{_f}{_suffix}"))
    REVERSE[_fwd], REVERSE[_rev] = _rev, _fwd

_ALIASES = {
    alias: t.name for t in OBJECT_TYPES.values() for alias in (t.name, t.singular, t.type_id)
}

INVALID_AUTHENTICATION = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
    "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def iso(ms: int) -> str:
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> int:
    """HubSpot takes datetimes as epoch milliseconds or ISO 8601."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return to_ms(moment)


def hubspot_error(
    status: int,
    category: str,
    message: str,
    *,
    context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    links: dict[str, str] | None = None,
) -> Answer:
    """An answer in HubSpot's ``Error`` shape."""
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
    }
    if context is not None:
        body["context"] = context
    if errors is not None:
        body["errors"] = errors
    if links is not None:
        body["links"] = links
    return Answer(status, body)


def validation_error(message: str, **extra: Any) -> Answer:
    return hubspot_error(400, "VALIDATION_ERROR", message, **extra)


def _standard_error(answer: Answer, trace_id: str | None) -> dict[str, Any]:
    """One entry of a 207's ``errors``: HubSpot's ``StandardError`` (all its fields)."""
    body = answer.body
    context = dict(body.get("context") or {})
    if trace_id is not None:
        context["objectWriteTraceId"] = [trace_id]
    return {
        "status": "error",
        "category": body["category"],
        "message": body["message"],
        "context": context,
        "errors": body.get("errors", []),
        "links": body.get("links", {}),
    }


@dataclass
class Token:
    kind: str  # "private_app" | "oauth"
    scopes: frozenset[str]
    expires_at: float | None = None
    client_id: str | None = None
    refresh_token: str | None = None
    revoked: bool = False


@dataclass
class OAuthApp:
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: frozenset[str]


@dataclass
class Grant:
    client_id: str
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class Schema:
    props: dict[str, Prop]
    unique: dict[str, dict[str, int]] = field(default_factory=dict)  # prop -> value -> id


ALL_SCOPES = frozenset(
    f"{t.scope}.{mode}" for t in OBJECT_TYPES.values() for mode in ("read", "write")
) | {"oauth"}


class HubSpotFake:
    """The fake's state and its control surface; ``.app`` is the ASGI app to serve."""

    def __init__(
        self,
        *,
        rate_limit: tuple[int, float] = (100, 10.0),
        search_rate_limit: tuple[int, float] = (5, 1.0),
        daily_limit: int = 250_000,
        access_token_ttl: float = 1800.0,
        retry_after: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self.base_url = ""
        self.controls = Controls()
        self.calls = self.controls.calls
        self.access_token_ttl = access_token_ttl
        self.retry_after = retry_after
        self._clock = clock
        self._daily_limit = daily_limit
        self._daily_used: dict[str, int] = {}
        self.set_rate_limit(*rate_limit)
        self._search_window = SlidingWindow(*search_rate_limit)
        self._tables = {name: Table() for name in OBJECT_TYPES}
        self._schemas = {
            name: Schema({p.name: p for p in t.props}, {p.name: {} for p in t.props if p.unique})
            for name, t in OBJECT_TYPES.items()
        }
        # (type, id) -> to_type -> to_id -> association type ids
        self._assoc: dict[tuple[str, int], dict[str, dict[int, set[int]]]] = {}
        self._tokens: dict[str, Token] = {}
        self._apps: dict[str, OAuthApp] = {}
        self._grants: dict[str, Grant] = {}
        self._codes: dict[str, str] = {}
        self._next_id = 1001
        self.app = Starlette(routes=self._routes())

    # ---- control surface -------------------------------------------------------------

    def fail_next(self, status: int = 503, body: Any = None, **options: Any) -> None:
        """The next request (see ``Controls.fail_next``) answers ``status``."""
        self.controls.fail_next(status, body, **options)

    def set_rate_limit(self, limit: int, window_s: float) -> None:
        self._window = SlidingWindow(limit, window_s)

    def private_app_token(self, scopes: Iterable[str] | None = None) -> str:
        token = f"pat-na1-{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
        self._tokens[token] = Token("private_app", frozenset(scopes or ALL_SCOPES))
        return token

    def oauth_app(
        self,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        redirect_uri: str = "https://keyrack.example/oauth/callback",
        scopes: Iterable[str] | None = None,
    ) -> OAuthApp:
        app = OAuthApp(client_id, client_secret, redirect_uri, frozenset(scopes or ALL_SCOPES))
        self._apps[client_id] = app
        return app

    def authorization_code(self, client_id: str) -> str:
        """The ``code`` HubSpot would hand the redirect URI after a user installs the app."""
        code = secrets.token_urlsafe(18)
        self._codes[code] = client_id
        return code

    def refresh_token(self, client_id: str, scopes: Iterable[str] | None = None) -> str:
        """A refresh token for an installed app (as if the code had been exchanged)."""
        app = self._apps[client_id]
        token = f"na1-{secrets.token_hex(2)}-{secrets.token_hex(8)}"
        self._grants[token] = Grant(client_id, frozenset(scopes or app.scopes))
        return token

    def access_token(self, refresh_token: str) -> str:
        """An OAuth access token for ``refresh_token``, as the token endpoint would issue."""
        grant = self._grants[refresh_token]
        token = "C" + secrets.token_urlsafe(48)
        self._tokens[token] = Token(
            "oauth",
            grant.scopes,
            self._clock() + self.access_token_ttl,
            grant.client_id,
            refresh_token,
        )
        return token

    def revoke(self, token: str) -> None:
        """Revoke a private-app token, an access token or a refresh token (and its tokens)."""
        with self.controls.lock:
            if token in self._grants:
                self._grants[token].revoked = True
                for access in self._tokens.values():
                    if access.refresh_token == token:
                        access.revoked = True
            else:
                self._tokens[token].revoked = True

    def expire(self, access_token: str) -> None:
        self._tokens[access_token].expires_at = self._clock() - 1

    def add_property(
        self, object_type: str, name: str, type: str = "string", *, unique: bool = False
    ) -> None:
        with self.controls.lock:
            schema = self._schemas[object_type]
            schema.props[name] = Prop(name, type, unique)
            if unique:
                schema.unique[name] = {}

    def delete_property(self, object_type: str, name: str) -> None:
        """The property is gone: every write naming it fails with HubSpot's real error."""
        with self.controls.lock:
            schema = self._schemas[object_type]
            del schema.props[name]
            schema.unique.pop(name, None)

    def rename_property(self, object_type: str, old: str, new: str) -> None:
        with self.controls.lock:
            schema = self._schemas[object_type]
            prop = schema.props.pop(old)
            schema.props[new] = Prop(new, prop.type, prop.unique)
            if old in schema.unique:
                schema.unique[new] = schema.unique.pop(old)
            for record in self._tables[object_type].rows.values():
                if old in record.fields:
                    record.fields[new] = record.fields.pop(old)

    def seed(
        self,
        object_type: str,
        rows: Iterable[dict[str, Any]],
        *,
        modified_at: dt.datetime | None = None,
        step: dt.timedelta = dt.timedelta(0),
    ) -> list[str]:
        """Store records directly (no HTTP, no validation of values); returns their ids.

        ``modified_at`` sets the first record's modification time and ``step`` the gap
        between consecutive ones (a zero step gives them all the same millisecond).
        """
        with self.controls.lock:
            table = self._tables[object_type]
            schema = self._schemas[object_type]
            start = to_ms(modified_at) if modified_at else self._now_ms()
            step_ms = int(step.total_seconds() * 1000)
            ids = []
            for n, row in enumerate(rows):
                unknown = set(row) - set(schema.props)
                if unknown:
                    raise ValueError(f"{object_type} has no properties {sorted(unknown)}")
                stamp = start + n * step_ms
                record = Record(self._new_id(), stamp, stamp, _stringify(row))
                table.insert(record)
                self._index_unique(schema, record)
                ids.append(str(record.key))
            return ids

    def touch(self, object_type: str, object_id: str) -> None:
        with self.controls.lock:
            table = self._tables[object_type]
            record = table.rows[int(object_id)]
            table.touch(record, self._now_ms())

    def record(self, object_type: str, object_id: str) -> dict[str, str | None] | None:
        """Every property of a stored record, computed ones included, or None."""
        with self.controls.lock:
            record = self._tables[object_type].get(int(object_id))
            if record is None:
                return None
            names = [*self._schemas[object_type].props, *OBJECT_TYPES[object_type].computed]
            return self._properties(OBJECT_TYPES[object_type], record, names)

    def count(self, object_type: str) -> int:
        return len(self._tables[object_type])

    def associated(self, object_type: str, object_id: str, to_type: str) -> dict[str, set[int]]:
        """The records of ``to_type`` associated to a record, with their type ids."""
        links = self._assoc.get((object_type, int(object_id)), {}).get(to_type, {})
        return {str(k): set(v) for k, v in links.items()}

    # ---- plumbing ----------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _routes(self) -> list[Route]:
        objects = "/crm/v3/objects/{objectType}"
        v4 = "/crm/v4/objects/{objectType}/{objectId}/associations"
        batch = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch"
        table: list[tuple[str, str, Callable[..., tuple[int, Any]], str | None]] = [
            ("GET", objects, self._list, "read"),
            ("POST", objects, self._create, "write"),
            ("POST", objects + "/search", self._search, "read"),
            ("POST", objects + "/batch/create", self._batch_create, "write"),
            ("POST", objects + "/batch/read", self._batch_read, "read"),
            ("POST", objects + "/batch/update", self._batch_update, "write"),
            ("POST", objects + "/batch/upsert", self._batch_upsert, "write"),
            ("POST", objects + "/batch/archive", self._batch_archive, "write"),
            ("GET", objects + "/{objectId}", self._get, "read"),
            ("PATCH", objects + "/{objectId}", self._update, "write"),
            ("DELETE", objects + "/{objectId}", self._archive, "write"),
            ("GET", "/crm/v3/properties/{objectType}", self._properties_list, "read"),
            ("GET", "/crm/v3/properties/{objectType}/{propertyName}", self._property_get, "read"),
            ("PUT", v4 + "/default/{toObjectType}/{toObjectId}", self._associate_default, "write"),
            ("PUT", v4 + "/{toObjectType}/{toObjectId}", self._associate_labelled, "write"),
            ("DELETE", v4 + "/{toObjectType}/{toObjectId}", self._dissociate, "write"),
            ("GET", v4 + "/{toObjectType}", self._associations_list, "read"),
            ("POST", batch + "/create", self._assoc_batch_create, "write"),
            ("POST", batch + "/associate/default", self._assoc_batch_default, "write"),
            ("POST", batch + "/read", self._assoc_batch_read, "read"),
            ("POST", "/oauth/v1/token", self._token, None),
            ("GET", "/oauth/v1/access-tokens/{token}", self._access_token_info, None),
            ("GET", "/oauth/v1/refresh-tokens/{token}", self._refresh_token_info, None),
            ("DELETE", "/oauth/v1/refresh-tokens/{token}", self._refresh_token_delete, None),
        ]
        return [
            Route(path, self._endpoint(path, handler, need), methods=[method])
            for method, path, handler, need in table
        ]

    def _endpoint(
        self, template: str, handler: Callable[..., tuple[int, Any]], need: str | None
    ) -> Callable[[Request], Any]:
        search = template.endswith("/search")

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            with self.controls.lock:
                status, body, headers = self._answer(request, raw, template, handler, need, search)
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
        need: str | None,
        search: bool,
    ) -> tuple[int, Any, dict[str, str]]:
        params = dict(request.path_params)
        key = template
        for name in ("objectType", "fromObjectType", "toObjectType"):
            if name in params and params[name] in _ALIASES:
                key = key.replace("{" + name + "}", _ALIASES[params[name]])
        self.controls.count(request.method, key)
        headers: dict[str, str] = {}
        try:
            fault = self.controls.injected(request.url.path)
            if fault is not None:
                raise Answer(fault.status, fault.body or _server_error(fault.status))
            if need is not None:
                token = self._authenticate(request)
                object_type = self._object_type(
                    params.get("objectType") or params.get("fromObjectType", "")
                )
                self._authorize(token, f"{object_type.scope}.{need}")
                headers = self._rate(request, token, search)
            status, body = handler(request, params, raw)
        except Answer as answer:
            status, body = answer.status, answer.body
            headers |= answer.headers
        return status, body, headers

    def _authenticate(self, request: Request) -> Token:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        token = self._tokens.get(credential.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.revoked:
            raise hubspot_error(401, "INVALID_AUTHENTICATION", INVALID_AUTHENTICATION)
        now = self._clock()
        if token.expires_at is not None and now >= token.expires_at:
            ago = now - token.expires_at
            amount, unit = (
                (int(ago // 86400), "day")
                if ago >= 86400
                else (int(ago // 3600), "hour")
                if ago >= 3600
                else (int(ago // 60), "minute")
                if ago >= 60
                else (int(ago), "second")
            )
            raise hubspot_error(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {amount} {unit}(s) ago.",
                context={"expire time": [iso(int(token.expires_at * 1000))]},
            )
        return token

    def _authorize(self, token: Token, scope: str) -> None:
        if scope not in token.scopes:
            raise hubspot_error(
                403,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call. Read "
                "more about required scopes here: https://developers.hubspot.com/scopes.",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [scope]},
                    }
                ],
                links={"scopes": "https://developers.hubspot.com/scopes"},
            )

    def _rate(self, request: Request, token: Token, search: bool) -> dict[str, str]:
        credential = request.headers["authorization"].partition(" ")[2].strip()
        window = self._search_window if search else self._window
        allowed, remaining, wait = window.take(credential)
        daily_used = self._daily_used.get(credential, 0)
        headers: dict[str, str] = {}
        if not search:
            per_second = max(1, math.floor(window.limit / window.window_s))
            headers = {
                "X-HubSpot-RateLimit-Max": str(window.limit),
                "X-HubSpot-RateLimit-Remaining": str(remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window.window_s * 1000)),
                "X-HubSpot-RateLimit-Secondly": str(per_second),
                "X-HubSpot-RateLimit-Secondly-Remaining": str(min(per_second, remaining)),
            }
            if token.kind == "private_app":
                headers["X-HubSpot-RateLimit-Daily"] = str(self._daily_limit)
                left = max(0, self._daily_limit - daily_used - (1 if allowed else 0))
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(left)
        if allowed and daily_used >= self._daily_limit:
            allowed, wait, policy = False, 0.0, "DAILY"
        else:
            policy = "SECONDLY" if window.window_s <= 1 else "TEN_SECONDLY_ROLLING"
        if not allowed:
            if self.retry_after and wait:
                headers["Retry-After"] = str(max(1, math.ceil(wait)))
            raise Answer(
                429,
                {
                    "status": "error",
                    "message": f"You have reached your {policy.lower()} limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": correlation_id(),
                    "policyName": policy,
                    "groupName": f"publicapi:{token.kind.replace('_', '-')}:{HUB_ID}",
                },
                headers,
            )
        self._daily_used[credential] = daily_used + 1
        return headers

    def _object_type(self, name: str) -> ObjectType:
        canonical = _ALIASES.get(name)
        if canonical is None:
            raise validation_error(f"Unable to infer object type from: {name}")
        return OBJECT_TYPES[canonical]

    def _properties(
        self, object_type: ObjectType, record: Record, names: Iterable[str]
    ) -> dict[str, str | None]:
        """The named properties that exist for the type; unknown names are dropped."""
        schema = self._schemas[object_type.name].props
        out: dict[str, str | None] = {}
        for name in names:
            if name in object_type.computed:
                out[name] = _computed(name, record)
            elif name in schema:
                out[name] = record.fields.get(name)
        return out

    def _public(
        self,
        object_type: ObjectType,
        record: Record,
        names: Iterable[str] | None,
        associations: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A ``SimplePublicObject`` (``…WithAssociations`` when ``associations`` are asked)."""
        body: dict[str, Any] = {
            "id": str(record.key),
            "properties": self._properties(object_type, record, names or object_type.defaults),
            "createdAt": iso(record.created_ms),
            "updatedAt": iso(record.stamp_ms),
            "archived": False,
        }
        found: dict[str, Any] = {}
        for requested in associations:
            to_type = _ALIASES.get(requested)
            links = self._assoc.get((object_type.name, record.key), {}).get(to_type or "", {})
            if to_type and links:
                names_by_id = dict(ASSOCIATION_TYPES[(object_type.name, to_type)])
                found[requested] = {
                    "results": [
                        {"id": str(to_id), "type": names_by_id[type_id]}
                        for to_id, type_ids in links.items()
                        for type_id in sorted(type_ids)
                    ]
                }
        if found:
            body["associations"] = found
        return body

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"{}")
        except ValueError as error:
            raise validation_error(f"Invalid input JSON on line 1, column 1: {error}") from None

    def _record(self, object_type: ObjectType, object_id: str, id_property: str | None) -> Record:
        table = self._tables[object_type.name]
        if id_property and id_property != "hs_object_id":
            schema = self._schemas[object_type.name]
            index = schema.unique.get(id_property)
            if index is None:
                raise validation_error(
                    f"{id_property} is not a unique property of {object_type.singular}",
                    context={"idProperty": [id_property]},
                )
            key = index.get(_unique_value(id_property, object_id))
            record = table.get(key) if key is not None else None
        else:
            record = table.get(int(object_id)) if object_id.isdigit() else None
        if record is None:
            if object_id.isdigit() or id_property:
                raise Answer(404)
            raise hubspot_error(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
                context={"id": [object_id]},
            )
        return record

    def _check_properties(self, object_type: ObjectType, properties: Any) -> dict[str, str]:
        if not isinstance(properties, dict):
            raise validation_error("Invalid input JSON: properties must be an object")
        schema = self._schemas[object_type.name].props
        unknown = [
            name for name in properties if name not in schema and name not in object_type.computed
        ]
        if unknown:
            raise _property_errors(unknown)
        return {k: v for k, v in _stringify(properties).items() if k in schema}

    def _check_unique(
        self, object_type: ObjectType, values: dict[str, str], record_id: int | None
    ) -> None:
        for name, index in self._schemas[object_type.name].unique.items():
            value = values.get(name)
            if value is None:
                continue
            owner = index.get(_unique_value(name, value))
            if owner is not None and owner != record_id:
                message = (
                    f"Contact already exists. Existing ID: {owner}"
                    if name == "email"
                    else f"A {object_type.singular} with {name}={value} already exists. "
                    f"Existing ID: {owner}"
                )
                raise hubspot_error(409, "CONFLICT", message)

    def _index_unique(
        self, schema: Schema, record: Record, before: dict[str, str] | None = None
    ) -> None:
        for name, index in schema.unique.items():
            if before and name in before and before[name] != record.fields.get(name):
                index.pop(_unique_value(name, before[name]), None)
            if name in record.fields:
                index[_unique_value(name, record.fields[name])] = record.key

    def _write(
        self, object_type: ObjectType, values: dict[str, str], record: Record | None
    ) -> Record:
        """Create (``record`` None) or update; validation has been done."""
        table = self._tables[object_type.name]
        schema = self._schemas[object_type.name]
        now = self._now_ms()
        if record is None:
            record = Record(self._new_id(), now, now, dict(values))
            table.insert(record)
            self._index_unique(schema, record)
            return record
        before = dict(record.fields)
        record.fields.update(values)
        table.touch(record, now)
        self._index_unique(schema, record, before)
        return record

    def _check_associations(self, object_type: ObjectType, associations: Any) -> list[Any]:
        checked = []
        for association in associations or []:
            try:
                to_id = int(association["to"]["id"])
                type_ids = [int(t["associationTypeId"]) for t in association["types"]]
            except (KeyError, TypeError, ValueError):
                raise validation_error("Invalid association input") from None
            for type_id in type_ids:
                to_type = next(
                    (
                        to
                        for (frm, to), types in ASSOCIATION_TYPES.items()
                        if frm == object_type.name and any(t == type_id for t, _ in types)
                    ),
                    None,
                )
                if to_type is None:
                    raise validation_error(
                        f"{type_id} is not a valid association type id from {object_type.singular}",
                        context={"associationTypeId": [str(type_id)]},
                    )
                if self._tables[to_type].get(to_id) is None:
                    raise validation_error(
                        f"One or more associations are invalid: {to_type} {to_id} not found",
                        context={"toObjectId": [str(to_id)]},
                    )
                checked.append((to_type, to_id, type_id))
        return checked

    def _link(self, from_type: str, from_id: int, to_type: str, to_id: int, type_id: int) -> None:
        self._assoc.setdefault((from_type, from_id), {}).setdefault(to_type, {}).setdefault(
            to_id, set()
        ).add(type_id)
        self._assoc.setdefault((to_type, to_id), {}).setdefault(from_type, {}).setdefault(
            from_id, set()
        ).add(REVERSE[type_id])

    def _unlink_all(self, object_type: str, record_id: int) -> None:
        for to_type, links in self._assoc.pop((object_type, record_id), {}).items():
            for to_id in links:
                self._assoc.get((to_type, to_id), {}).get(object_type, {}).pop(record_id, None)

    # ---- objects ------------------------------------------------------------------------

    def _list(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        query = request.query_params
        limit = _int(query.get("limit", "10"), "limit")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise validation_error(f"limit must be between 1 and {LIST_LIMIT_MAX}")
        after = query.get("after")
        start = int(after) - 1 if after and after.isdigit() else None
        keys = self._tables[object_type.name].keys_after(start, limit + 1)
        names = _multi(query, "properties")
        associations = _multi(query, "associations")
        table = self._tables[object_type.name]
        body: dict[str, Any] = {
            "results": [
                self._public(object_type, table.rows[k], names, associations) for k in keys[:limit]
            ]
        }
        if len(keys) > limit:
            cursor = str(keys[limit])
            body["paging"] = {
                "next": {
                    "after": cursor,
                    "link": f"{self.base_url}/crm/v3/objects/{object_type.name}?after={cursor}",
                }
            }
        return 200, body

    def _get(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        query = request.query_params
        record = self._record(object_type, params["objectId"], query.get("idProperty"))
        names = _multi(query, "properties")
        return 200, self._public(object_type, record, names, _multi(query, "associations"))

    def _create(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        body = self._json(raw)
        values = self._check_properties(object_type, body.get("properties", {}))
        self._check_unique(object_type, values, None)
        links = self._check_associations(object_type, body.get("associations"))
        record = self._write(object_type, values, None)
        for to_type, to_id, type_id in links:
            self._link(object_type.name, record.key, to_type, to_id, type_id)
        return 201, self._public(object_type, record, [*values, *object_type.computed])

    def _update(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        record = self._record(
            object_type, params["objectId"], request.query_params.get("idProperty")
        )
        values = self._check_properties(object_type, self._json(raw).get("properties", {}))
        self._check_unique(object_type, values, record.key)
        self._write(object_type, values, record)
        return 200, self._public(object_type, record, [*record.fields])

    def _archive(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        record = self._tables[object_type.name].get(_int(params["objectId"], "objectId"))
        if record is not None:
            self._remove(object_type, record)
        return 204, None

    def _remove(self, object_type: ObjectType, record: Record) -> None:
        schema = self._schemas[object_type.name]
        for name, index in schema.unique.items():
            if name in record.fields:
                index.pop(_unique_value(name, record.fields[name]), None)
        self._tables[object_type.name].delete(record)
        self._unlink_all(object_type.name, record.key)

    # ---- search -------------------------------------------------------------------------

    def _search(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        body = self._json(raw)
        limit = _int(body.get("limit", 10), "limit")
        if not 0 <= limit <= SEARCH_LIMIT_MAX:
            raise validation_error(
                f"limit must be between 0 and {SEARCH_LIMIT_MAX}", context={"limit": [str(limit)]}
            )
        after = _int(body.get("after") or 0, "after")
        if after >= SEARCH_CAP:
            raise validation_error(
                f"The search API returns at most {SEARCH_CAP} results for a query: "
                f"after={after} is past the end. Narrow the query (for example by "
                f"{object_type.modstamp}) to read further.",
                context={"after": [str(after)]},
            )
        groups = [self._filters(object_type, g) for g in body.get("filterGroups") or []]
        if len(groups) > 5 or any(len(g) > 10 for g in groups) or sum(map(len, groups)) > 25:
            raise validation_error(
                "A search takes at most 5 filterGroups of at most 10 filters, 25 filters in all"
            )
        sort, descending = self._sort(object_type, body.get("sorts") or [])
        text = str(body.get("query") or "").strip().lower()
        total, page = self._matches(object_type, groups, sort, descending, text, after, limit)
        names = body.get("properties") or object_type.defaults
        answer: dict[str, Any] = {
            "total": total,
            "results": [self._public(object_type, r, names) for r in page],
        }
        if after + limit < total:
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return 200, answer

    def _filters(self, object_type: ObjectType, group: Any) -> list[_FilterCheck]:
        filters = []
        for spec in group.get("filters") or []:
            name, operator = spec.get("propertyName"), spec.get("operator", "EQ")
            prop = self._schemas[object_type.name].props.get(name)
            if prop is None and name in object_type.computed:
                prop = Prop(name, "number" if name == "hs_object_id" else "datetime")
            if prop is None:
                raise _property_errors([name], search=True)
            filters.append(_FilterCheck(object_type, prop, operator, spec))
        return filters

    def _sort(self, object_type: ObjectType, sorts: list[Any]) -> tuple[str | None, bool]:
        if len(sorts) > 1:
            raise validation_error("A search takes at most one sort")
        if not sorts:
            return None, False
        sort = sorts[0]
        if isinstance(sort, str):
            name, descending = sort.lstrip("-"), sort.startswith("-")
        else:
            name, descending = sort.get("propertyName"), sort.get("direction") == "DESCENDING"
        if name not in self._schemas[object_type.name].props and name not in object_type.computed:
            raise _property_errors([name], search=True)
        if name == "hs_lastmodifieddate":
            name = object_type.modstamp
        return name, descending

    def _matches(
        self,
        object_type: ObjectType,
        groups: list[list[_FilterCheck]],
        sort: str | None,
        descending: bool,
        text: str,
        after: int,
        limit: int,
    ) -> tuple[int, list[Record]]:
        """``(total, page)``; O(log n + page) for a modification-time window in its order."""
        table = self._tables[object_type.name]
        stamp_sorted = sort in (None, object_type.modstamp)
        window = _stamp_window(object_type, groups) if stamp_sorted and not text else None
        if window is not None:
            start, stop = table.stamp_bounds(*window)
            if descending:
                rows = table.by_stamp(start, max(start, stop - after), reverse=True)
            else:
                rows = table.by_stamp(start + after, stop)
            return stop - start, list(islice(rows, limit))

        def keep(record: Record) -> bool:
            if text and not any(
                text in (record.fields.get(p) or "").lower() for p in object_type.searchable
            ):
                return False
            return not groups or any(all(check(record) for check in group) for group in groups)

        if stamp_sorted:
            matched = [r for r in table.by_stamp(0, len(table), descending) if keep(r)]
        else:
            matched = sorted(
                (r for r in table.rows.values() if keep(r)),
                key=lambda r: _sort_key(object_type, r, sort),
                reverse=descending,
            )
        return len(matched), matched[after : after + limit]

    # ---- batches ------------------------------------------------------------------------

    def _inputs(self, raw: bytes) -> list[dict[str, Any]]:
        inputs = self._json(raw).get("inputs")
        if not isinstance(inputs, list):
            raise validation_error("Invalid input JSON: inputs is required")
        if len(inputs) > BATCH_MAX:
            raise validation_error(
                f"Batch input limit exceeded: {len(inputs)} inputs, at most {BATCH_MAX}",
                context={"inputs": [str(len(inputs))]},
            )
        return inputs

    def _batch(
        self, inputs: list[dict[str, Any]], prepare: Callable[[dict[str, Any]], Any]
    ) -> tuple[list[tuple[dict[str, Any], Any]], list[dict[str, Any]]]:
        """Validate every input; refuse the batch unless each bad one has a trace id."""
        good, errors = [], []
        for item in inputs:
            try:
                good.append((item, prepare(item)))
            except Answer as answer:
                trace = item.get("objectWriteTraceId")
                if trace is None:
                    raise
                errors.append(_standard_error(answer, str(trace)))
        return good, errors

    def _batch_answer(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok: int, started: int
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso(started),
            "completedAt": iso(self._now_ms()),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return 207, body
        return ok, body

    def _batch_create(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        started = self._now_ms()
        seen: dict[str, set[str]] = {}

        def prepare(item: dict[str, Any]) -> Any:
            values = self._check_properties(object_type, item.get("properties", {}))
            self._check_unique(object_type, values, None)
            _claim_unique(object_type, self._schemas[object_type.name], values, seen)
            return values, self._check_associations(object_type, item.get("associations"))

        good, errors = self._batch(self._inputs(raw), prepare)
        results = []
        for item, (values, links) in good:
            record = self._write(object_type, values, None)
            for to_type, to_id, type_id in links:
                self._link(object_type.name, record.key, to_type, to_id, type_id)
            results.append(_traced(self._public(object_type, record, values), item))
        return self._batch_answer(results, errors, 201, started)

    def _batch_update(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        started = self._now_ms()

        def prepare(item: dict[str, Any]) -> Any:
            record = self._batch_target(object_type, item)
            values = self._check_properties(object_type, item.get("properties", {}))
            self._check_unique(object_type, values, record.key)
            return record, values

        good, errors = self._batch(self._inputs(raw), prepare)
        results = []
        for item, (record, values) in good:
            self._write(object_type, values, record)
            results.append(_traced(self._public(object_type, record, values), item))
        return self._batch_answer(results, errors, 200, started)

    def _batch_target(self, object_type: ObjectType, item: dict[str, Any]) -> Record:
        try:
            return self._record(object_type, str(item.get("id", "")), item.get("idProperty"))
        except Answer as answer:
            if answer.status != 404:
                raise
            raise _not_found(object_type, [str(item.get("id"))]) from None

    def _batch_upsert(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        schema = self._schemas[object_type.name]
        started = self._now_ms()
        seen: dict[str, set[str]] = {}

        def prepare(item: dict[str, Any]) -> Any:
            id_property = item.get("idProperty")
            if id_property not in schema.unique:
                raise validation_error(
                    f"Upsert needs idProperty, a unique property of {object_type.singular}; "
                    f"got {id_property!r}",
                    context={"idProperty": [str(id_property)]},
                )
            value = str(item.get("id", ""))
            key = schema.unique[id_property].get(_unique_value(id_property, value))
            record = self._tables[object_type.name].get(key) if key is not None else None
            values = self._check_properties(object_type, item.get("properties", {}))
            values.setdefault(id_property, value)
            self._check_unique(object_type, values, record.key if record else None)
            _claim_unique(object_type, schema, {id_property: value}, seen)
            return record, values

        good, errors = self._batch(self._inputs(raw), prepare)
        results = []
        for item, (record, values) in good:
            written = self._write(object_type, values, record)
            body = self._public(object_type, written, values) | {"new": record is None}
            results.append(_traced(body, item))
        return self._batch_answer(results, errors, 200, started)

    def _batch_read(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        body = self._json(raw)
        started = self._now_ms()
        inputs = self._inputs(raw)
        names = body.get("properties") or None
        results, missing = [], []
        for item in inputs:
            try:
                record = self._record(object_type, str(item.get("id", "")), body.get("idProperty"))
            except Answer as answer:
                if answer.status != 404:
                    raise
                missing.append(str(item.get("id")))
                continue
            results.append(self._public(object_type, record, names))
        errors = [_standard_error(_not_found(object_type, missing), None)] if missing else []
        return self._batch_answer(results, errors, 200, started)

    def _batch_archive(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        for item in self._inputs(raw):
            record = self._tables[object_type.name].get(_int(item.get("id"), "id"))
            if record is not None:
                self._remove(object_type, record)
        return 204, None

    # ---- properties ---------------------------------------------------------------------

    def _property_body(self, object_type: ObjectType, prop: Prop) -> dict[str, Any]:
        field_type = {
            "string": "text",
            "number": "number",
            "datetime": "date",
            "enumeration": "select",
            "bool": "booleancheckbox",
        }[prop.type]
        return {
            "name": prop.name,
            "label": prop.label or prop.name.replace("_", " ").capitalize(),
            "type": prop.type,
            "fieldType": field_type,
            "description": "",
            "groupName": f"{object_type.singular}information",
            "options": [],
            "hasUniqueValue": prop.unique,
            "hidden": False,
            "formField": True,
            "calculated": False,
            "externalOptions": False,
            "hubspotDefined": True,
            "archived": False,
        }

    def _properties_list(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        props = [
            *self._schemas[object_type.name].props.values(),
            *(
                Prop(n, "number" if n == "hs_object_id" else "datetime")
                for n in object_type.computed
            ),
        ]
        return 200, {"results": [self._property_body(object_type, p) for p in props]}

    def _property_get(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        object_type = self._object_type(params["objectType"])
        prop = self._schemas[object_type.name].props.get(params["propertyName"])
        if prop is None:
            raise hubspot_error(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property {params['propertyName']} for object type "
                f"{object_type.type_id}",
            )
        return 200, self._property_body(object_type, prop)

    # ---- associations v4 ----------------------------------------------------------------

    def _pair(self, from_name: str, to_name: str) -> tuple[ObjectType, ObjectType, list[Any]]:
        from_type, to_type = self._object_type(from_name), self._object_type(to_name)
        types = ASSOCIATION_TYPES.get((from_type.name, to_type.name))
        if types is None:
            raise validation_error(
                f"No association types between {from_type.singular} and {to_type.singular}"
            )
        return from_type, to_type, types

    def _exists(self, object_type: ObjectType, object_id: Any) -> int:
        key = _int(object_id, "id")
        if self._tables[object_type.name].get(key) is None:
            raise _not_found(object_type, [str(object_id)])
        return key

    def _default_links(self, from_type: ObjectType, from_id: Any, to_type: ObjectType, to_id: Any):
        _, _, types = self._pair(from_type.name, to_type.name)
        a, b = self._exists(from_type, from_id), self._exists(to_type, to_id)
        type_id = types[0][0]
        self._link(from_type.name, a, to_type.name, b, type_id)
        spec = {"associationCategory": "HUBSPOT_DEFINED"}
        return [
            {
                "from": {"id": str(a)},
                "to": {"id": str(b)},
                "associationSpec": spec | {"associationTypeId": type_id},
            },
            {
                "from": {"id": str(b)},
                "to": {"id": str(a)},
                "associationSpec": spec | {"associationTypeId": REVERSE[type_id]},
            },
        ]

    def _associate_default(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["objectType"], params["toObjectType"])
        started = self._now_ms()
        results = self._default_links(from_type, params["objectId"], to_type, params["toObjectId"])
        return self._batch_answer(results, [], 200, started)

    def _labelled(
        self, from_type: ObjectType, from_id: Any, to_type: ObjectType, to_id: Any, specs: Any
    ) -> dict[str, Any]:
        _, _, types = self._pair(from_type.name, to_type.name)
        a, b = self._exists(from_type, from_id), self._exists(to_type, to_id)
        valid = {t for t, _ in types}
        for spec in specs if isinstance(specs, list) else []:
            type_id = _int(spec.get("associationTypeId"), "associationTypeId")
            if type_id not in valid:
                raise validation_error(
                    f"{type_id} is not a valid association type id from {from_type.singular} "
                    f"to {to_type.singular}",
                    context={"associationTypeId": [str(type_id)]},
                )
            self._link(from_type.name, a, to_type.name, b, type_id)
        return {
            "fromObjectTypeId": from_type.type_id,
            "fromObjectId": str(a),
            "toObjectTypeId": to_type.type_id,
            "toObjectId": str(b),
            "labels": [],
        }

    def _associate_labelled(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["objectType"], params["toObjectType"])
        body = self._labelled(
            from_type, params["objectId"], to_type, params["toObjectId"], self._json(raw or b"[]")
        )
        return 201, body

    def _dissociate(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["objectType"], params["toObjectType"])
        a, b = _int(params["objectId"], "objectId"), _int(params["toObjectId"], "toObjectId")
        self._assoc.get((from_type.name, a), {}).get(to_type.name, {}).pop(b, None)
        self._assoc.get((to_type.name, b), {}).get(from_type.name, {}).pop(a, None)
        return 204, None

    def _multi_associated(self, from_type: ObjectType, from_id: int, to_type: ObjectType):
        links = self._assoc.get((from_type.name, from_id), {}).get(to_type.name, {})
        labels = dict(ASSOCIATION_TYPES[(from_type.name, to_type.name)])
        return [
            {
                "toObjectId": str(to_id),
                "associationTypes": [
                    {
                        "category": "HUBSPOT_DEFINED",
                        "typeId": type_id,
                        "label": "Primary" if not labels[type_id].endswith("_unlabeled") else None,
                    }
                    for type_id in sorted(type_ids)
                ],
            }
            for to_id, type_ids in sorted(links.items())
        ]

    def _associations_list(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["objectType"], params["toObjectType"])
        from_id = self._exists(from_type, params["objectId"])
        limit = _int(request.query_params.get("limit", "500"), "limit")
        after = _int(request.query_params.get("after", "0"), "after")
        found = self._multi_associated(from_type, from_id, to_type)
        body: dict[str, Any] = {"results": found[after : after + limit]}
        if after + limit < len(found):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return 200, body

    def _assoc_batch_create(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["fromObjectType"], params["toObjectType"])
        started = self._now_ms()
        results = [
            self._labelled(from_type, i["from"]["id"], to_type, i["to"]["id"], i.get("types"))
            for i in self._inputs(raw)
        ]
        return self._batch_answer(results, [], 201, started)

    def _assoc_batch_default(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["fromObjectType"], params["toObjectType"])
        started = self._now_ms()
        results = [
            link
            for i in self._inputs(raw)
            for link in self._default_links(from_type, i["from"]["id"], to_type, i["to"]["id"])
        ]
        return self._batch_answer(results, [], 200, started)

    def _assoc_batch_read(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        from_type, to_type, _ = self._pair(params["fromObjectType"], params["toObjectType"])
        started = self._now_ms()
        results, missing = [], []
        for item in self._inputs(raw):
            key = _int(item.get("id"), "id")
            if self._tables[from_type.name].get(key) is None:
                missing.append(str(key))
                continue
            results.append(
                {"from": {"id": str(key)}, "to": self._multi_associated(from_type, key, to_type)}
            )
        errors = [_standard_error(_not_found(from_type, missing), None)] if missing else []
        return self._batch_answer(results, errors, 200, started)

    # ---- OAuth v1 -----------------------------------------------------------------------

    def _token(self, request: Request, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        form |= {k: v for k, v in request.query_params.items() if k not in form}
        grant_type = form.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise _oauth_error(
                "BAD_GRANT_TYPE", "unsupported_grant_type", "missing or unknown grant type"
            )
        app = self._apps.get(form.get("client_id", ""))
        if app is None:
            raise _oauth_error("BAD_CLIENT_ID", "invalid_client", "missing or unknown client id")
        if not secrets.compare_digest(form.get("client_secret", ""), app.client_secret):
            raise _oauth_error(
                "BAD_CLIENT_SECRET", "invalid_client", "missing or invalid client secret"
            )
        if grant_type == "authorization_code":
            if form.get("redirect_uri") != app.redirect_uri:
                raise _oauth_error(
                    "BAD_REDIRECT_URI", "invalid_grant", "redirect_uri does not match the app's"
                )
            if self._codes.pop(form.get("code", ""), None) != app.client_id:
                raise _oauth_error("BAD_AUTH_CODE", "invalid_grant", "missing or unknown auth code")
            refresh = self.refresh_token(app.client_id)
        else:
            refresh = form.get("refresh_token", "")
            grant = self._grants.get(refresh)
            if grant is None or grant.revoked or grant.client_id != app.client_id:
                raise _oauth_error(
                    "BAD_REFRESH_TOKEN", "invalid_grant", "missing or invalid refresh token"
                )
        access = self.access_token(refresh)
        return 200, {
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": access,
            "expires_in": int(self.access_token_ttl),
            "hub_id": HUB_ID,
            "user_id": 1,
            "scopes": sorted(self._grants[refresh].scopes),
            "token_use": "access_token",
        }

    def _access_token_info(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        token = self._tokens.get(params["token"])
        now = self._clock()
        if (
            token is None
            or token.kind != "oauth"
            or token.revoked
            or now >= (token.expires_at or 0)
        ):
            raise hubspot_error(
                404,
                "EXPIRED_AUTHENTICATION" if token else "NOT_FOUND",
                "Token not found or expired",
            )
        return 200, {
            "token": params["token"],
            "user": "integration@keyrack.example",
            "hub_domain": "keyrack.example",
            "scopes": sorted(token.scopes),
            "hub_id": HUB_ID,
            "app_id": 1,
            "expires_in": int((token.expires_at or now) - now),
            "user_id": 1,
            "token_type": "access",
        }

    def _refresh_token_info(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        grant = self._grants.get(params["token"])
        if grant is None or grant.revoked:
            raise _oauth_error(
                "BAD_REFRESH_TOKEN", "invalid_grant", "missing or invalid refresh token"
            )
        return 200, {
            "token": params["token"],
            "user": "integration@keyrack.example",
            "hub_domain": "keyrack.example",
            "scopes": sorted(grant.scopes),
            "hub_id": HUB_ID,
            "client_id": grant.client_id,
            "user_id": 1,
            "token_type": "refresh",
        }

    def _refresh_token_delete(
        self, request: Request, params: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        if params["token"] in self._grants:
            self.revoke(params["token"])
        return 204, None


class _FilterCheck:
    """One search filter, compiled; exposes its modification-time window when it has one."""

    def __init__(self, object_type: ObjectType, prop: Prop, operator: str, spec: dict[str, Any]):
        self.name = prop.name
        self.operator = operator
        self.is_stamp = prop.name in (object_type.modstamp, "hs_lastmodifieddate")
        self._type = prop.type
        self._computed = prop.name in object_type.computed
        convert = self._convert
        try:
            self.value = convert(spec["value"]) if "value" in spec else None
            self.high = convert(spec["highValue"]) if "highValue" in spec else None
            self.values = [convert(v) for v in spec.get("values") or []]
        except (ValueError, TypeError):
            raise validation_error(
                f"{spec.get('value')!r} is not a valid value for {prop.name} ({prop.type})"
            ) from None
        known = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN"}
        known |= {"HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"}
        if operator not in known:
            raise validation_error(f"Unknown filter operator {operator}")

    def _convert(self, value: Any) -> Any:
        if self._type == "datetime":
            return parse_time(value)
        if self._type == "number":
            return float(value)
        return str(value).lower()

    def window(self) -> tuple[int | None, int | None] | None:
        """The half-open ``[lo, hi)`` in ms this filter keeps, if it is a range on the stamp."""
        if not self.is_stamp:
            return None
        v = self.value
        return {
            "GT": (v + 1, None) if v is not None else None,
            "GTE": (v, None),
            "LT": (None, v),
            "LTE": (None, v + 1) if v is not None else None,
            "EQ": (v, v + 1) if v is not None else None,
            "BETWEEN": (v, self.high + 1) if self.high is not None else None,
        }.get(self.operator)

    def __call__(self, record: Record) -> bool:
        raw = _computed(self.name, record) if self._computed else record.fields.get(self.name)
        if self.operator == "HAS_PROPERTY":
            return raw not in (None, "")
        if self.operator == "NOT_HAS_PROPERTY":
            return raw in (None, "")
        if raw in (None, ""):
            return self.operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
        try:
            value = self._convert(raw)
        except ValueError:
            return False
        op = self.operator
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = str(self.value).strip("*")
            found = token in str(value).split() or (
                str(self.value).endswith("*") and token in value
            )
            return found == (op == "CONTAINS_TOKEN")
        return {
            "EQ": lambda: value == self.value,
            "NEQ": lambda: value != self.value,
            "LT": lambda: value < self.value,
            "LTE": lambda: value <= self.value,
            "GT": lambda: value > self.value,
            "GTE": lambda: value >= self.value,
            "BETWEEN": lambda: self.value <= value <= self.high,
            "IN": lambda: value in self.values,
            "NOT_IN": lambda: value not in self.values,
        }[op]()


def _stamp_window(
    object_type: ObjectType, groups: list[list[_FilterCheck]]
) -> tuple[int | None, int | None] | None:
    """The window when the search is only a range on the modification time (or nothing)."""
    if not groups:
        return (None, None)
    if len(groups) != 1:
        return None
    lo: int | None = None
    hi: int | None = None
    for check in groups[0]:
        window = check.window()
        if window is None:
            return None
        if window[0] is not None:
            lo = window[0] if lo is None else max(lo, window[0])
        if window[1] is not None:
            hi = window[1] if hi is None else min(hi, window[1])
    return lo, hi


def _computed(name: str, record: Record) -> str:
    if name == "hs_object_id":
        return str(record.key)
    if name in ("createdate", "hs_createdate"):
        return iso(record.created_ms)
    return iso(record.stamp_ms)


def _sort_key(object_type: ObjectType, record: Record, name: str | None) -> tuple[Any, ...]:
    if name == "hs_object_id":
        return (record.key,)
    if name in object_type.computed:
        return (_computed(name, record), record.key)
    value = record.fields.get(name or "")
    return (value is None, value or "", record.key)


def _stringify(values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = str(value)
    return out


def _unique_value(name: str, value: str) -> str:
    return value.lower() if name == "email" else value


def _claim_unique(
    object_type: ObjectType, schema: Schema, values: dict[str, str], seen: dict[str, set[str]]
) -> None:
    """Two inputs of one batch may not claim the same unique value."""
    for name in schema.unique:
        if name in values:
            value = _unique_value(name, values[name])
            if value in seen.setdefault(name, set()):
                raise validation_error(
                    f"Duplicate {name} {values[name]} in the batch's inputs",
                    context={name: [values[name]]},
                )
            seen[name].add(value)


def _traced(body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if "objectWriteTraceId" in item:
        body["objectWriteTraceId"] = item["objectWriteTraceId"]
    return body


def _property_errors(names: list[str], *, search: bool = False) -> Answer:
    if search:
        return validation_error(
            f"There was a problem with the request. Property {names[0]!r} does not exist",
            errors=[
                {
                    "message": f"Property {names[0]!r} does not exist",
                    "code": "PROPERTY_DOESNT_EXIST",
                    "context": {"propertyName": [names[0]]},
                }
            ],
        )
    details = [
        {
            "isValid": False,
            "message": f'Property "{name}" does not exist',
            "error": "PROPERTY_DOESNT_EXIST",
            "name": name,
            "localizedErrorMessage": f'Property "{name}" does not exist',
            "portalId": HUB_ID,
        }
        for name in names
    ]
    return validation_error(
        f"Property values were not valid: {json.dumps(details, separators=(',', ':'))}",
        errors=[
            {
                "message": f'Property "{name}" does not exist',
                "code": "PROPERTY_DOESNT_EXIST",
                "context": {"propertyName": [name]},
            }
            for name in names
        ],
    )


def _not_found(object_type: ObjectType, ids: list[str]) -> Answer:
    return hubspot_error(
        404,
        "OBJECT_NOT_FOUND",
        f"Could not get some {object_type.singular.upper()} objects, they may be deleted or "
        "not exist. Check that ids are valid.",
        context={"ids": ids},
    )


def _oauth_error(status: str, error: str, message: str) -> Answer:
    return Answer(
        400,
        {
            "status": status,
            "message": message,
            "correlationId": correlation_id(),
            "error": error,
            "error_description": message,
        },
    )


def _server_error(status: int) -> dict[str, Any]:
    return {
        "status": "error",
        "message": "internal error",
        "correlationId": correlation_id(),
        "category": "INTERNAL_ERROR" if status == 500 else "SERVICE_UNAVAILABLE",
    }


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise validation_error(
            f"{name} must be an integer, got {value!r}", context={name: [str(value)]}
        ) from None


def _multi(query: Any, name: str) -> list[str]:
    """A multi-valued query parameter: repeated, or comma-separated."""
    return [part for value in query.getlist(name) for part in value.split(",") if part]


@contextmanager
def hubspot_fake(**options: Any) -> Iterator[HubSpotFake]:
    """A HubSpot fake on a real socket; ``fake.base_url`` is what a connector points at."""
    fake = HubSpotFake(**options)
    with serve(fake.app) as url:
        fake.base_url = url
        yield fake
