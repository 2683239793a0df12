"""Check the HubSpot fake against HubSpot's published OpenAPI documents, by hand.

    .venv/bin/python -m tests.fakes.check_against_spec [MIRROR]

MIRROR is a git clone of ``HubSpot/HubSpot-public-api-spec-collection`` (default: the
``HUBSPOT_SPEC_MIRROR`` environment variable). It is read with ``git show``; nothing of
it is copied. The script

1. asserts that every method and path the fake serves is declared in those documents
   (for each object type, under its name or its type id, as the Deals document does);
2. serves the fake, sends one representative request per route (bodies built as the
   request schemas say), and walks each answer against the response schema of its
   status (``default`` → ``Error`` for refusals): every field the fake sends must be
   declared, every required field present, recursively through ``$ref``, arrays,
   ``additionalProperties`` and ``oneOf``.

It exits 1 on a mismatch. A few fields HubSpot really sends but does not declare are
printed as notes, not failures (``status`` in error bodies, the OAuth errors' own
shape). It is not part of the test suite because the mirror is not part of the
repository; the suite's evidence is the official client's tests in ``test_hubspot.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.hubspot import OBJECT_TYPES, HubSpotFake, hubspot_fake

DOCUMENTS = [
    *(f"CRM/{name.capitalize()}/*/v3/{name}.json" for name in OBJECT_TYPES),
    "CRM/Properties/*/v3/properties.json",
    "CRM/Associations/*/v4/associations.json",
    "Auth/Oauth/*/v1/oauth.json",
]
# Fields HubSpot's answers carry that its documents do not declare (seen in real answers).
UNDECLARED = {
    ("Error", "status"): "HubSpot's error bodies carry status: error (its docs' example)",
}
OAUTH_ERRORS = "HubSpot's OAuth refusals are {status, message, error, error_description, …}"


@dataclass
class Operation:
    document: dict[str, Any]
    spec: dict[str, Any]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    def fail(self, message: str) -> None:
        self.failures.append(message)


def load(mirror: Path) -> dict[tuple[str, str], list[Operation]]:
    listing = subprocess.run(
        ["git", "-C", str(mirror), "ls-tree", "-r", "--name-only", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    operations: dict[tuple[str, str], list[Operation]] = {}
    for pattern in DOCUMENTS:
        regex = re.compile(
            "PublicApiSpecs/" + re.escape(pattern).replace(r"\*", "Rollouts/[0-9]+") + "$"
        )
        paths = sorted(p for p in listing if regex.match(p))
        if not paths:
            raise SystemExit(f"no document matches {pattern} in {mirror}")
        for path in paths:
            text = subprocess.run(
                ["git", "-C", str(mirror), "show", f"HEAD:{path}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            document = json.loads(text)
            for route, methods in document["paths"].items():
                for method, spec in methods.items():
                    if isinstance(spec, dict) and "responses" in spec:
                        key = (method.upper(), _shape(route))
                        operations.setdefault(key, []).append(Operation(document, spec))
    return operations


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _concrete(template: str) -> list[list[str]]:
    """The fake's route as the documents could spell it: one list of spellings per type."""
    if "{objectType}" not in template and "{fromObjectType}" not in template:
        return [[_shape(template)]]
    spellings = []
    for object_type in OBJECT_TYPES.values():
        names = [object_type.name, object_type.type_id]
        spellings.append(
            [
                _shape(template.replace("{objectType}", n).replace("{fromObjectType}", n))
                for n in names
            ]
        )
    return spellings


def check_routes(
    fake: HubSpotFake, operations: dict[tuple[str, str], list[Operation]], report: Report
):
    generic = {key for key in operations if "/crm/v3/objects/{}" in key[1]}
    for route in fake.app.routes:
        for method in sorted(route.methods - {"HEAD"}):  # type: ignore[attr-defined]
            for spellings in _concrete(route.path):  # type: ignore[attr-defined]
                declared = any((method, s) in operations for s in spellings)
                v4_generic = (method, _shape(route.path)) in operations  # type: ignore[attr-defined]
                if not declared and not v4_generic and (method, spellings[0]) not in generic:
                    report.fail(f"not declared: {method} {spellings[0]}")


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def walk(
    document: dict[str, Any],
    schema: dict[str, Any],
    value: Any,
    where: str,
    report: Report,
    name: str = "",
) -> list[str]:
    """Mismatches of ``value`` against ``schema`` (field names, required fields)."""
    ref = schema.get("$ref", "")
    name = ref.rsplit("/", 1)[-1] if ref else name
    schema = resolve(document, schema)
    if "oneOf" in schema:
        attempts = [walk(document, s, value, where, Report()) for s in schema["oneOf"]]
        return [] if any(not a for a in attempts) else attempts[0]
    problems: list[str] = []
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            problems += walk(document, schema["items"], item, f"{where}[{n}]", report)
    elif isinstance(value, dict) and schema.get("type", "object") == "object":
        declared = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in declared:
                problems += walk(document, declared[key], item, f"{where}.{key}", report)
            elif isinstance(extra, dict):
                problems += walk(document, extra, item, f"{where}.{key}", report)
            elif (name, key) in UNDECLARED:
                report.notes.add(UNDECLARED[(name, key)])
            elif not declared and extra is None:
                continue  # a free-form object
            else:
                problems.append(f"{where}.{key} is not declared in {name or 'the schema'}")
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}.{key} is required by {name or 'the schema'}")
    return problems


def exchange(
    http: httpx.Client,
    operations: dict[tuple[str, str], list[Operation]],
    report: Report,
    method: str,
    path: str,
    shape: str,
    **request: Any,
) -> Any:
    """Send one request; it passes if one document declaring the operation accepts both
    the request and the answer (Contacts has two rollouts, for one)."""
    answer = http.request(method, path, **request)
    body = answer.json() if answer.content else None
    attempts = [_problems(op, request, answer, body, report) for op in operations[(method, shape)]]
    if all(attempts):
        for problem in attempts[0]:
            report.fail(f"{method} {path}: {problem}")
    return body


def _problems(
    operation: Operation,
    request: dict[str, Any],
    answer: httpx.Response,
    body: Any,
    report: Report,
) -> list[str]:
    document = operation.document
    problems: list[str] = []
    content = operation.spec.get("requestBody", {}).get("content", {})
    if "json" in request and "application/json" in content:
        schema = content["application/json"]["schema"]
        problems += walk(document, schema, request["json"], "request", report)
    responses = operation.spec["responses"]
    declared = responses.get(str(answer.status_code)) or responses.get("default")
    if declared is None:
        return [*problems, f"status {answer.status_code} is not declared"]
    declared = resolve(document, declared)
    schema = next(iter(declared.get("content", {}).values()), {}).get("schema")
    if body is None:
        return problems
    if schema is None:
        return [*problems, f"{answer.status_code} has a body the spec does not declare"]
    if answer.url.path.startswith("/oauth/") and answer.status_code >= 400:
        report.notes.add(OAUTH_ERRORS)
        return problems
    return problems + walk(document, schema, body, str(answer.status_code), report)


def check_answers(
    fake: HubSpotFake, operations: dict[tuple[str, str], list[Operation]], report: Report
) -> None:
    token = fake.private_app_token()
    http = httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {token}"})
    fake.add_property("companies", "ext_id", unique=True)

    patterns = [
        (key, re.compile("^" + re.escape(key[1]).replace(r"\{\}", "[^/]+") + "$"))
        for key in operations
    ]

    def call(method: str, path: str, **request: Any) -> Any:
        """Send the request, checked against the most literal documented path it matches."""
        aliases = [path] + [
            path.replace(f"/objects/{t.name}", f"/objects/{t.type_id}")
            for t in OBJECT_TYPES.values()
            if f"/objects/{t.name}" in path
        ]
        matches = [
            key
            for key, pattern in patterns
            if key[0] == method and any(pattern.match(a) for a in aliases)
        ]
        if not matches:
            report.fail(f"no operation for {method} {path}")
            return http.request(method, path, **request).json()
        shape = min(matches, key=lambda key: key[1].count("{}"))[1]
        return exchange(http, operations, report, method, path, shape, **request)

    for name, object_type in OBJECT_TYPES.items():
        prop = object_type.props[0].name if name != "companies" else "name"
        base = f"/crm/v3/objects/{name}"
        value = "spec@example.com" if prop == "email" else "Spec"
        made = call("POST", base, json={"properties": {prop: value}, "associations": []})
        record = made["id"]
        call("GET", base, params={"limit": 1, "properties": prop})
        call("GET", f"{base}/{record}", params={"properties": prop})
        call("PATCH", f"{base}/{record}", json={"properties": {prop: value}})
        call(
            "POST",
            f"{base}/search",
            json={
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}
                        ]
                    }
                ],
                "sorts": ["hs_lastmodifieddate"],
                "limit": 1,
                "after": "0",
                "properties": [prop],
            },
        )
        trace = {"objectWriteTraceId": "t"}
        call(
            "POST",
            f"{base}/batch/create",
            json={
                "inputs": [
                    {
                        "properties": {prop: "x@example.com" if prop == "email" else "x"},
                        "associations": [],
                    },
                    {"properties": {"nope": "1"}, "associations": [], **trace},
                ]
            },
        )
        call(
            "POST",
            f"{base}/batch/read",
            json={
                "inputs": [{"id": record}, {"id": "1"}],
                "properties": [prop],
                "propertiesWithHistory": [],
            },
        )
        call(
            "POST",
            f"{base}/batch/update",
            json={"inputs": [{"id": record, "properties": {prop: value}}]},
        )
        unique = "email" if name == "contacts" else "ext_id" if name == "companies" else None
        if unique:
            call(
                "POST",
                f"{base}/batch/upsert",
                json={"inputs": [{"id": "u@example.com", "idProperty": unique, "properties": {}}]},
            )
        call("POST", f"{base}/batch/archive", json={"inputs": [{"id": "1"}]})
        call("GET", f"/crm/v3/properties/{name}")
        call("GET", f"/crm/v3/properties/{name}/{prop}")
        call("POST", base, json={"properties": {"nope": "1"}, "associations": []})
        call("DELETE", f"{base}/{record}")

    (company,) = fake.seed("companies", [{"name": "A"}])
    (contact,) = fake.seed("contacts", [{"email": "assoc@example.com"}])
    v4 = f"/crm/v4/objects/contacts/{contact}/associations"
    call("PUT", f"{v4}/default/companies/{company}")
    call(
        "PUT",
        f"{v4}/companies/{company}",
        json=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}],
    )
    call("GET", f"{v4}/companies")
    call("DELETE", f"{v4}/companies/{company}")
    pair = {"from": {"id": contact}, "to": {"id": company}}
    batch = "/crm/v4/associations/contacts/companies/batch"
    call(
        "POST",
        f"{batch}/create",
        json={
            "inputs": [
                pair
                | {"types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
            ]
        },
    )
    call("POST", f"{batch}/associate/default", json={"inputs": [pair]})
    call("POST", f"{batch}/read", json={"inputs": [{"id": contact}]})

    app = fake.oauth_app()
    refresh = fake.refresh_token(app.client_id)
    form = {
        "grant_type": "refresh_token",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "refresh_token": refresh,
    }
    tokens = call("POST", "/oauth/v1/token", data=form)
    call("GET", f"/oauth/v1/access-tokens/{tokens['access_token']}")
    call("GET", f"/oauth/v1/refresh-tokens/{refresh}")
    call("DELETE", f"/oauth/v1/refresh-tokens/{refresh}")
    call("POST", "/oauth/v1/token", data=form)


def main(argv: list[str]) -> int:
    raw = argv[1] if len(argv) > 1 else os.environ.get("HUBSPOT_SPEC_MIRROR", "")
    mirror = Path(raw)
    if not raw or not ((mirror / "HEAD").exists() or (mirror / ".git").exists()):
        sys.stderr.write(
            "usage: python -m tests.fakes.check_against_spec MIRROR "
            "(a clone of HubSpot/HubSpot-public-api-spec-collection)\n"
        )
        return 2
    operations = load(mirror)
    report = Report()
    with hubspot_fake(rate_limit=(10_000, 10.0), search_rate_limit=(1000, 1.0)) as fake:
        check_routes(fake, operations, report)
        check_answers(fake, operations, report)
        served = sum(fake.calls.values())
    for note in sorted(report.notes):
        sys.stdout.write(f"note: {note}\n")
    for failure in report.failures:
        sys.stdout.write(f"MISMATCH {failure}\n")
    sys.stdout.write(
        f"{len(operations)} documented operations read; {served} requests checked; "
        f"{len(report.failures)} mismatches\n"
    )
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
