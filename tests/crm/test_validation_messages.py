"""CRM input errors read as plain English, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from tests.crm.conftest import Crm


def _first_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    message: str = response.json()["errors"][0]["message"]
    return message


def test_an_empty_client_name_is_reported_in_characters_not_items(
    api: httpx.Client, crm: Crm
) -> None:
    response = api.post("/api/v2/clients", json={"name": ""}, headers=crm.agency)
    assert _first_error(response) == "String should have at least 1 character"


def test_an_overlong_contact_email_is_reported_in_characters(api: httpx.Client, crm: Crm) -> None:
    client = api.post("/api/v2/clients", json={"name": "Globex"}, headers=crm.agency).json()
    response = api.post(
        "/api/v2/contacts",
        json={"client_id": client["id"], "name": "Hank", "email": "e" * 321},
        headers=crm.agency,
    )
    assert _first_error(response) == "String should have at most 320 characters"


def test_a_nul_character_is_still_refused(api: httpx.Client, crm: Crm) -> None:
    response = api.post("/api/v2/clients", json={"name": "a\u0000b"}, headers=crm.agency)
    assert "without NUL characters" in _first_error(response)
