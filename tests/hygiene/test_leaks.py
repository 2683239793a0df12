"""Leak reports: anyone may report; a valid key is revoked; the answer never tells."""

from __future__ import annotations

import httpx
import pytest

from keyrack.domain.keys import Environment, generate
from keyrack.domain.verification import KeyStatus
from keyrack.services import audit, keys
from tests.conftest import Seeded

LEAKS = "/api/v2/leaks"


def report(token: str, url: str = "https://gist.github.com/someone/abc") -> dict[str, object]:
    return {"tokens": [{"token": token, "url": url, "source": "gist"}]}


def test_a_reported_valid_key_is_revoked_at_once_and_audited(
    api: httpx.Client, seeded: Seeded
) -> None:
    response = api.post(LEAKS, json=report(seeded.secret))
    assert response.status_code == 202
    assert response.json() == {"received": 1}
    key = keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref)
    assert key.status is KeyStatus.REVOKED
    assert key.revoked_reason and "gist.github.com" in key.revoked_reason
    event = audit.list_events(seeded.ctx, seeded.org_id).data[0]
    assert (event.action, event.target_ref) == ("key.leaked", seeded.key.ref)
    assert seeded.secret not in repr((event.before, event.after))
    assert api.get("/api/v2/keys", headers=seeded.headers()).status_code == 401


def test_the_answer_is_the_same_for_valid_and_unknown_tokens(
    api: httpx.Client, seeded: Seeded
) -> None:
    valid = api.post(LEAKS, json=report(seeded.secret))
    unknown = api.post(LEAKS, json=report(generate(Environment.PRODUCTION).secret))
    assert (valid.status_code, valid.json()) == (unknown.status_code, unknown.json())
    assert valid.headers.get("content-length") == unknown.headers.get("content-length")


def test_garbage_tokens_are_counted_but_not_looked_up(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post(
        LEAKS,
        json={
            "tokens": [
                {"token": "kr_live_not-a-real-key"},
                {"token": "ghp_someone_elses_token"},
                {"token": seeded.secret[:-1] + ("a" if seeded.secret[-1] != "a" else "b")},
            ]
        },
    )
    assert (response.status_code, response.json()) == (202, {"received": 3})
    assert keys.get_key(seeded.ctx, seeded.scope, seeded.key.ref).status is KeyStatus.ACTIVE


def test_the_secret_scanning_partner_format_is_accepted(api: httpx.Client, seeded: Seeded) -> None:
    _, other = seeded.new_key(name="Second")
    response = api.post(
        LEAKS,
        json=[
            {
                "token": seeded.secret,
                "type": "keyrack_api_key",
                "url": "https://github.com/x/y",
                "source": "content",
            },
            {
                "token": other,
                "type": "keyrack_api_key",
                "url": "https://github.com/x/z",
                "source": "commit",
            },
        ],
    )
    assert (response.status_code, response.json()) == (202, {"received": 2})
    assert [k.status for k in keys.list_keys(seeded.ctx, seeded.scope).data] == [
        KeyStatus.REVOKED,
        KeyStatus.REVOKED,
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        {"tokens": []},
        {"tokens": [{"url": "x"}]},
        {"tokens": [{"token": "x" * 501}]},
        {"tokens": [{"token": "x"}], "extra": True},
        "just a string",
    ],
)
def test_malformed_reports_are_validation_problems(
    api: httpx.Client, seeded: Seeded, body: object
) -> None:
    response = api.post(LEAKS, json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


def test_invalid_json_is_a_problem_not_a_500(api: httpx.Client, seeded: Seeded) -> None:
    response = api.post(LEAKS, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_reports_are_rate_limited_per_client_ip(api: httpx.Client, seeded: Seeded) -> None:
    """2 reports a second with a burst of 2: ten back-to-back reports cannot all pass."""
    unknown = generate(Environment.SANDBOX).secret
    statuses = []
    for _ in range(10):
        response = api.post(LEAKS, json=report(unknown))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["status"] == 429
            break
    assert statuses[:2] == [202, 202] and statuses[-1] == 429
