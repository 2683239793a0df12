"""keys:manage is not a way to more: an API key hands out no more than it holds.

Without this rule a key holding only ``keys:manage`` could mint a key with any
permission, raise its own throttle by minting a faster key, or roll a stronger key
and so read that key's new secret. The rule is ``keyrack.domain.authority.check``;
``test_key_authority.py`` tries the rest of it (owners above the actor, networks,
expiry, environment, scope, revoking, claims).
"""

from __future__ import annotations

import httpx
import pytest

from keyrack.services import audit
from tests.conftest import Seeded
from tests.gateway.conftest import problem_code as code


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Escalation", "permissions": ["keys:manage", "clients:write"]},
        {"name": "Faster", "permissions": ["keys:manage"], "rate_per_second": 100},
        {"name": "Wider", "permissions": ["keys:manage"], "concurrency": 5},
    ],
    ids=["permission", "rate", "concurrency"],
)
def test_a_key_cannot_mint_a_stronger_key(
    api: httpx.Client, seeded: Seeded, body: dict[str, object]
) -> None:
    before = api.get("/api/v2/keys", headers=seeded.headers()).json()["data"]
    refused = api.post("/api/v2/keys", headers=seeded.headers(), json=body)
    assert refused.status_code == 403 and code(refused) == "insufficient-permission"
    assert api.get("/api/v2/keys", headers=seeded.headers()).json()["data"] == before


def test_a_key_cannot_raise_a_key_above_itself(api: httpx.Client, seeded: Seeded) -> None:
    weaker, _ = seeded.new_key(permissions=[])
    refused = api.patch(
        f"/api/v2/keys/{weaker.ref}",
        headers=seeded.headers(),
        json={"permissions": ["clients:read"]},
    )
    assert refused.status_code == 403 and code(refused) == "insufficient-permission"
    fetched = api.get(f"/api/v2/keys/{weaker.ref}", headers=seeded.headers()).json()
    assert fetched["permissions"] == []


def test_a_key_cannot_roll_or_change_a_stronger_key(api: httpx.Client, seeded: Seeded) -> None:
    stronger, secret = seeded.new_key(permissions=["keys:manage", "contracts:write"])
    rolled = api.post(f"/api/v2/keys/{stronger.ref}/roll", headers=seeded.headers())
    renamed = api.patch(
        f"/api/v2/keys/{stronger.ref}", headers=seeded.headers(), json={"name": "Mine now"}
    )
    assert rolled.status_code == renamed.status_code == 403
    assert api.get("/api/v2/health", headers=seeded.headers(secret)).status_code == 200
    actions = {event.action for event in audit.list_events(seeded.ctx, seeded.org_id).data}
    assert not actions & {"key.rolled", "key.updated"}


def test_a_key_hands_out_what_it_holds(api: httpx.Client, seeded: Seeded) -> None:
    _, manager = seeded.new_key(permissions=["keys:manage", "usage:write"], rate_per_second=5)
    created = api.post(
        "/api/v2/keys",
        headers=seeded.headers(manager),
        json={"name": "Usage pusher", "permissions": ["usage:write"], "rate_per_second": 5},
    )
    assert created.status_code == 201, created.text
    assert created.json()["permissions"] == ["usage:write"]
