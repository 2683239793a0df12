"""The served OpenAPI document as code generators read it: ids, tags, security, answers.

The rules are ``keyrack.http.openapi``'s; these tests read the document a client gets.
A new operation adds its id to ``OPERATION_IDS`` (ids are the generated methods' names,
so a change breaks clients).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from keyrack.http.api import create_api
from keyrack.http.openapi import TAGS

OPERATION_IDS = {
    "GET /healthz": "getLiveness",
    "GET /readyz": "getReadiness",
    "GET /api/v2/health": "getHealth",
    "GET /api/v2/keys/self": "getKeySelf",
    "POST /api/v2/keys/verify": "verifyKey",
    "POST /api/v2/keys/import": "importKeys",
    "GET /api/v2/keys": "listKeys",
    "POST /api/v2/keys": "createKey",
    "GET /api/v2/keys/{ref}": "getKey",
    "GET /api/v2/keys/{ref}/usage": "getKeyUsage",
    "PATCH /api/v2/keys/{ref}": "updateKey",
    "DELETE /api/v2/keys/{ref}": "deleteKey",
    "POST /api/v2/keys/{ref}/roll": "rollKey",
    "POST /api/v2/keys/{ref}/revoke": "revokeKey",
    "GET /api/v2/apps": "listApps",
    "POST /api/v2/apps": "registerApp",
    "GET /api/v2/apps/{ref}": "getApp",
    "GET /api/v2/key-requests": "listKeyRequests",
    "POST /api/v2/key-requests": "createKeyRequest",
    "GET /api/v2/key-requests/{ref}": "getKeyRequest",
    "GET /api/v2/handoffs": "listHandoffs",
    "POST /api/v2/claims/{ref}/open": "openClaim",
    "POST /api/v2/keys/{ref}/handoff": "createHandoffLink",
    "POST /api/v2/handoffs/open": "openHandoffLink",
    "POST /api/v2/leaks": "reportLeaks",
    "GET /api/v2/staff/requests": "listAllKeyRequests",
    "POST /api/v2/staff/requests/{ref}/approve": "approveKeyRequest",
    "POST /api/v2/staff/requests/{ref}/reject": "rejectKeyRequest",
    "PATCH /api/v2/staff/orgs/{slug}": "setApiAccess",
    "GET /api/v2/clients": "listClients",
    "POST /api/v2/clients": "createClient",
    "GET /api/v2/clients/{client_id}": "getClient",
    "PATCH /api/v2/clients/{client_id}": "updateClient",
    "DELETE /api/v2/clients/{client_id}": "deleteClient",
    "GET /api/v2/contacts": "listContacts",
    "POST /api/v2/contacts": "createContact",
    "GET /api/v2/contacts/{contact_id}": "getContact",
    "PATCH /api/v2/contacts/{contact_id}": "updateContact",
    "DELETE /api/v2/contacts/{contact_id}": "deleteContact",
    "GET /api/v2/contracts": "listContracts",
    "POST /api/v2/contracts": "createContract",
    "GET /api/v2/contracts/{contract_id}": "getContract",
    "PATCH /api/v2/contracts/{contract_id}": "updateContract",
    "DELETE /api/v2/contracts/{contract_id}": "deleteContract",
    "GET /api/v2/engagements": "listEngagements",
    "POST /api/v2/engagements": "createEngagement",
    "GET /api/v2/engagements/{engagement_id}": "getEngagement",
    "PATCH /api/v2/engagements/{engagement_id}": "updateEngagement",
    "DELETE /api/v2/engagements/{engagement_id}": "deleteEngagement",
    "POST /api/v2/usage": "pushUsage",
    "GET /api/v2/usage": "listUsage",
    "POST /api/v2/pulse": "createPulseResponse",
    "GET /api/v2/pulse": "listPulseResponses",
    "GET /api/v2/pulse/summary": "getNpsSummary",
    "GET /api/v2/pulse/{response_id}": "getPulseResponse",
    "POST /api/v2/exports": "createExport",
    "GET /api/v2/exports": "listExports",
    "GET /api/v2/exports/{export_id}": "getExport",
    "POST /api/v2/exports/{export_id}/cancel": "cancelExport",
    "GET /api/v2/exports/{export_id}/download": "downloadExport",
    "POST /api/v2/imports": "createImport",
    "GET /api/v2/imports": "listImports",
    "GET /api/v2/imports/{import_id}": "getImport",
    "GET /api/v2/imports/{import_id}/rows": "listImportRows",
    "GET /api/v2/notifications": "listNotifications",
    "POST /api/v2/notifications/{notification_id}/read": "markNotificationRead",
    "GET /api/v2/webhooks": "listWebhooks",
    "POST /api/v2/webhooks": "createWebhook",
    "DELETE /api/v2/webhooks/{webhook_id}": "deleteWebhook",
    "GET /api/v2/webhooks/{webhook_id}/deliveries": "listWebhookDeliveries",
    "POST /api/v2/webhooks/deliveries/{delivery_id}/redeliver": "redeliverWebhookDelivery",
    "GET /api/v2/integrations": "listIntegrations",
    "POST /api/v2/integrations": "createIntegration",
    "GET /api/v2/integrations/{integration_id}": "getIntegration",
    "PATCH /api/v2/integrations/{integration_id}": "updateIntegration",
    "DELETE /api/v2/integrations/{integration_id}": "deleteIntegration",
    "PUT /api/v2/integrations/{integration_id}/credential": "putIntegrationCredential",
    "GET /api/v2/integrations/{integration_id}/syncs/{record_type}/{direction}": (
        "getIntegrationSync"
    ),
    "PUT /api/v2/integrations/{integration_id}/syncs/{record_type}/{direction}": (
        "putIntegrationSync"
    ),
    "GET /api/v2/integrations/{integration_id}/changes": "listIntegrationChanges",
    "POST /api/v2/integrations/{integration_id}/runs": "createIntegrationRun",
    "GET /api/v2/integrations/{integration_id}/runs": "listIntegrationRuns",
    "GET /api/v2/integrations/{integration_id}/runs/{run_id}": "getIntegrationRun",
    "GET /api/v2/integrations/{integration_id}/runs/{run_id}/records": (
        "listIntegrationRunRecords"
    ),
    "POST /api/v2/integrations/{integration_id}/runs/{run_id}/retry": "retryIntegrationRun",
    "POST /api/v2/integrations/{integration_id}/test-record": "testIntegrationRecord",
    "POST /api/v2/integrations/{integration_id}/diagnose": "diagnoseIntegration",
    "GET /api/v2/integrations/{integration_id}/issues": "listIntegrationIssues",
    "POST /api/v2/integrations/{integration_id}/inbound": "receiveIntegrationInbound",
}
SIGNED = {"POST /api/v2/integrations/{integration_id}/inbound"}
PUBLIC = {
    *SIGNED,
    "GET /healthz",
    "GET /readyz",
    "POST /api/v2/leaks",
    "POST /api/v2/handoffs/open",
}
CAMEL_CASE = re.compile(r"[a-z]+(?:[A-Z][a-z0-9]*)*")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document the API serves (the snapshot test reads it over a socket)."""
    served: dict[str, Any] = json.loads(json.dumps(create_api(None).openapi()))
    return served


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_id_is_camel_case_unique_and_the_committed_one(
    document: dict[str, Any],
) -> None:
    ids = {where: operation["operationId"] for where, operation in operations(document)}
    assert [i for i in ids.values() if not CAMEL_CASE.fullmatch(i)] == []
    assert len(set(ids.values())) == len(ids)
    assert ids == OPERATION_IDS


def test_every_operation_has_one_declared_tag(document: dict[str, Any]) -> None:
    assert [tag["name"] for tag in document["tags"]] == list(TAGS)
    for where, operation in operations(document):
        assert len(operation["tags"]) == 1 and operation["tags"][0] in TAGS, where


def test_keyed_operations_take_any_of_the_three_schemes_and_public_ones_none(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"] == {
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "BearerAuth": {"type": "http", "scheme": "bearer", "description": "the API key as token"},
        "BasicAuth": {
            "type": "http",
            "scheme": "basic",
            "description": "the API key as user name, any password",
        },
    }
    assert "security" not in document  # no global default: each operation says
    for where, operation in operations(document):
        if where in PUBLIC:
            assert "security" not in operation, where
            if where not in SIGNED:  # a signed body's bad signature is its own 401
                assert "401" not in operation["responses"], where
        else:
            assert operation["security"] == [
                {"ApiKeyHeader": []},
                {"BearerAuth": []},
                {"BasicAuth": []},
            ], where


def test_errors_are_problem_documents_never_fastapi_422(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for where, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, where
        assert "400" in responses, where
        for status, answer in responses.items():
            if int(status) >= 400:
                assert answer["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (where, status)


def test_throttled_and_successful_keyed_answers_document_their_headers(
    document: dict[str, Any],
) -> None:
    limits = {
        "RateLimit": {"$ref": "#/components/headers/RateLimit"},
        "RateLimit-Policy": {"$ref": "#/components/headers/RateLimit-Policy"},
    }
    for where, operation in operations(document):
        responses = operation["responses"]
        if where in PUBLIC:
            continue
        assert responses["429"]["headers"] == {
            "Retry-After": {"$ref": "#/components/headers/Retry-After"},
            **limits,
        }, where
        for status, answer in responses.items():
            if int(status) < 400:
                assert answer["headers"] == limits, (where, status)
    assert document["components"]["headers"]["Retry-After"]["required"] is True


def test_statuses_come_from_what_the_operation_can_refuse(document: dict[str, Any]) -> None:
    def statuses(where: str) -> list[str]:
        return sorted(dict(operations(document))[where]["responses"])

    assert statuses("GET /healthz") == ["200", "400"]  # no key, no database
    assert statuses("GET /api/v2/keys") == ["200", "400", "401", "403", "429", "503"]
    # a body (413), a path parameter (404), a conflict its service raises (409)
    assert statuses("POST /api/v2/keys/{ref}/roll") == [
        *("200", "400", "401", "403", "404", "409", "413", "429", "503")
    ]
    # public, its own limiter, and a body naming nothing else
    assert statuses("POST /api/v2/leaks") == ["202", "400", "413", "429", "503"]
    # a body field naming another record (client_id) may find nothing
    assert "404" in statuses("POST /api/v2/contacts")
