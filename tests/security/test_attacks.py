"""An attacker's regression tests: each names the rule a past hole broke.

Every test runs against the real app on a socket, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import Seeded

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _login_form(client: httpx.Client) -> str:
    page = client.get("/console/login")
    found = _CSRF.search(page.text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v2/keys", {"name": "a\x00b"}),
        ("GET", "/api/v2/keys/key_%00x", None),
        ("POST", "/api/v2/webhooks", {"url": "https://hooks.example/\x00"}),
        ("GET", "/api/v2/apps/%00", None),
    ],
)
def test_a_nul_character_anywhere_is_a_validation_problem_not_a_500(
    api: httpx.Client, seeded: Seeded, method: str, path: str, body: object
) -> None:
    response = api.request(method, path, headers=seeded.headers(), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("/validation-error")


def test_a_nul_character_in_the_sign_in_email_is_a_page_not_a_500(api: httpx.Client) -> None:
    token = _login_form(api)
    response = api.post(
        "/console/login", data={"email": "a\x00@x.test", "password": "x", "csrf_token": token}
    )
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]
