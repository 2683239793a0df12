"""The API's OpenAPI document as code generators and fuzzers read it: one rule for every
operation, so a route added later needs nothing more than its router's tag.

* **id**: the camelCase of the route's name, which is its endpoint function's
  (``roll_key`` → ``rollKey``); ids must be unique.
* **tag**: its router's one tag, one of ``TAGS``.
* **security**: the three ways to present a key (``X-API-Key``, Bearer, Basic with the
  key as user name), unless the gateway lets the path through without one (outside
  ``/api/v2/``, or declared ``keyrack.routing.public``).
* **errors**: a problem document (``application/problem+json``) for each status the
  gateway and the route can refuse with (``refusals``); never FastAPI's ``422``, which
  Keyrack does not send. A 429 carries ``Retry-After`` (and, from the limiter,
  ``RateLimit`` / ``RateLimit-Policy``); every answer to a keyed request carries
  ``RateLimit`` and ``RateLimit-Policy``. A route declares what only its service knows
  (409 conflict, say) with FastAPI's ``responses={409: {"description": …}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute

from keyrack.http.deps import get_context
from keyrack.http.schemas.common import Problem
from keyrack.problems import MEDIA_TYPE
from keyrack.routing import takes_key

TAGS: dict[str, str] = {
    "health": "Liveness and readiness",
    "introspection": "Check a key and read what it may do",
    "keys": "Issue, change, roll, revoke and verify API keys",
    "apps": "The catalog of apps that ask for production keys",
    "key-requests": "Ask platform staff for a production key",
    "handoffs": "One-time reveals: approved keys (claims) and hand-off links",
    "leaks": "Report leaked keys (secret-scanning partners)",
    "staff": "Platform staff: decide key requests, API access",
    "clients": "CRM clients (customer accounts)",
    "contacts": "Contacts of a client",
    "contracts": "Contracts of a client",
    "engagements": "Emails, calls, meetings and notes logged against a client",
    "usage": "Product usage events and their totals",
    "pulse": "NPS responses and summaries",
    "exports": "Bulk exports of CRM records as CSV or NDJSON files",
    "imports": "Bulk uploads of CRM records from CSV or NDJSON files",
    "notifications": "In-app notifications",
    "webhooks": "Webhook endpoints and their deliveries",
    "integrations": "Connections to other systems, their syncs, runs and per-record outcomes",
}
"""Every tag, in the order the docs show them; a new router's tag is added here."""

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "the API key as token"},
    "BasicAuth": {
        "type": "http",
        "scheme": "basic",
        "description": "the API key as user name, any password",
    },
}
KEYED: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
"""Any one of the schemes: an operation's ``security`` when it needs a key."""

HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit": {
        "description": 'The limit that decides this request, as it stands: "key";r=4;t=1 '
        '(4 requests left, full again in 1 s) or "inflight";r=0;t=1 (no slot free)',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The key\'s limits: "key";q=5;w=1, "inflight";q=1 '
        "(5 requests a second, 1 in flight)",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Whole seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
        "required": True,
    },
    "WWW-Authenticate": {"schema": {"type": "string"}, "required": True},
}

DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request (validation-error), or an API key in the URL (key-in-url)",
    401: "No usable API key: missing-key, malformed-key, invalid-key, revoked-key, expired-key",
    403: "Refused for this key: insufficient-permission, api-disabled, wrong-tenant, "
    "browser-origin, ip-not-allowed, tls-required",
    404: "Nothing by this id within the key's reach (not-found)",
    409: "In conflict with the current state (conflict)",
    410: "Already used or expired (gone)",
    413: "The request body is too large (payload-too-large)",
    429: "Over a limit (rate-limited, concurrency-limited): retry after Retry-After",
    503: "The database or key verification is unavailable (unavailable): retry",
}


def operation_id(route: APIRoute) -> str:
    """``generate_unique_id_function`` of the API: ``list_clients`` → ``listClients``."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def install(app: FastAPI, public_paths: frozenset[str]) -> None:
    """Serve ``app``'s document as ``document`` rewrites it (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                tags=[{"name": name, "description": text} for name, text in TAGS.items()],
            )
            app.openapi_schema = document(schema, app.routes, public_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def refusals(route: RouteContext, keyed: bool, names: set[str]) -> set[int]:
    """The error statuses an operation can answer with.

    Every path: 400 (an invalid parameter; a key-shaped value in the URL). A keyed one:
    the gateway's 401, 403, 429 and 503. A body: 413. A path parameter, or a query or
    body field naming another record (``names``): 404, nothing by that id. The database
    (the route takes the context): 503. And what the route declares in ``responses``.
    """
    statuses = {400}
    if keyed:
        statuses |= {401, 403, 429, 503}
    dependants = list(_dependants(route.dependant))
    if route.body_field is not None:
        statuses.add(413)
    if any(dependant.path_params for dependant in dependants) or any(
        _is_reference(name) for name in names
    ):
        statuses.add(404)
    if any(dependant.call is get_context for dependant in dependants):
        statuses.add(503)
    statuses |= {int(status) for status in route.responses if int(status) >= 400}
    return statuses


def _is_reference(name: str) -> bool:
    """Whether a field or parameter named ``name`` names another record (``client_id``,
    ``owner_id``, a request's ``app``)."""
    return name.endswith("_id") or name == "app"


def _field_names(operation: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The names of an operation's query parameters and of every field of its body."""
    names = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"}
    body = operation.get("requestBody", {}).get("content", {})
    pending = [media["schema"] for media in body.values()]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if (ref := node.get("$ref")) is not None:
                if ref not in seen:
                    seen.add(ref)
                    pending.append(schemas[ref.rsplit("/", 1)[1]])
                continue
            names |= set(node.get("properties", {}))
            pending.extend(node.get("properties", {}).values())
            pending.extend(node[key] for key in ("items", "anyOf", "oneOf", "allOf") if key in node)
    return names


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    """``dependant`` and every dependency below it."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def document(
    schema: dict[str, Any], routes: Iterable[BaseRoute], public_paths: frozenset[str]
) -> dict[str, Any]:
    """``schema`` (FastAPI's) with the ids, tags, security and answers of the rule above."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    components["headers"] = HEADERS
    seen: dict[str, str] = {}
    for route in iter_route_contexts(list(routes)):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        path = str(route.path_format)
        for method in sorted(route.methods or ()):
            operation = schema["paths"][path][method.lower()]
            where = f"{method} {path}"
            if (other := seen.setdefault(operation["operationId"], where)) != where:
                raise ValueError(f"operation id {operation['operationId']} of {where} and {other}")
            if len(route.tags) != 1 or route.tags[0] not in TAGS:
                raise ValueError(f"{where} must have one tag of openapi.TAGS, not {route.tags}")
            keyed = takes_key(path, public_paths)
            if keyed:
                operation["security"] = KEYED
            statuses = refusals(route, keyed, _field_names(operation, schemas))
            _answers(operation, route, statuses, keyed)
    return schema


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _answers(
    operation: dict[str, Any], route: RouteContext, statuses: set[int], keyed: bool
) -> None:
    """Replace the operation's error answers with problem documents, one per refusal."""
    declared = {int(status): answer for status, answer in route.responses.items()}
    responses: dict[str, Any] = operation["responses"]
    limits = {name: _ref("headers", name) for name in ("RateLimit", "RateLimit-Policy")}
    for code in [code for code in responses if int(code) >= 400 and int(code) not in statuses]:
        del responses[code]  # FastAPI's 422
    if keyed:
        for code, success in responses.items():
            if int(code) < 400:
                success["headers"] = limits
    for status in sorted(statuses):
        answer: dict[str, Any] = {
            "description": declared.get(status, {}).get("description") or DESCRIPTIONS[status],
            "content": {MEDIA_TYPE: {"schema": _ref("schemas", "Problem")}},
        }
        if status == 429:
            answer["headers"] = {"Retry-After": _ref("headers", "Retry-After"), **limits}
        elif status == 401:
            answer["headers"] = {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")}
        elif keyed:
            answer["headers"] = limits
        responses[str(status)] = answer
    operation["responses"] = dict(sorted(responses.items()))
