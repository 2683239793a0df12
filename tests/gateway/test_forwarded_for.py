"""X-Forwarded-For is believed only when the operator says a proxy sets it."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from keyrack.server import create_app
from keyrack.services import tenancy
from keyrack.storage.tables.audit import AuditEvent
from tests.conftest import OPERATOR, Seeded
from tests.console.conftest import PASSWORD, Browser
from tests.live import serve_in_thread


@pytest.mark.parametrize(("trusted", "status"), [(False, 403), (True, 200)])
def test_a_forwarded_address_counts_for_the_ip_allow_list_only_when_trusted(
    seeded: Seeded, trusted: bool, status: int
) -> None:
    _, secret = seeded.new_key(permissions=["keys:manage"], allowed_cidrs=["203.0.113.0/24"])
    seeded.ctx.settings.trust_forwarded_for = trusted
    with serve_in_thread(create_app(ctx=seeded.ctx), proxy_headers=False) as url:
        response = httpx.get(
            f"{url}/api/v2/health",
            headers={"X-API-Key": secret, "X-Forwarded-For": "10.0.0.1, 203.0.113.5"},
        )
    assert response.status_code == status


def test_a_forwarded_entry_that_is_no_address_is_ignored(seeded: Seeded) -> None:
    seeded.ctx.settings.trust_forwarded_for = True
    with serve_in_thread(create_app(ctx=seeded.ctx), proxy_headers=False) as url:
        me = httpx.get(
            f"{url}/api/v2/keys/self",
            headers={**seeded.headers(), "X-Forwarded-For": '203.0.113.5, x"' + "y" * 80},
        )
    assert me.status_code == 200 and me.json()["last_used_ip"] == "127.0.0.1"


def test_the_console_sees_the_address_the_gateway_determined(seeded: Seeded) -> None:
    """One client address for the API and the console: behind a trusted proxy, a sign-in
    is recorded (and throttled) under the client's address, not the proxy's."""
    tenancy.create_user(
        seeded.ctx, OPERATOR, org_slug="acme", email="ann@acme.test", password=PASSWORD
    )
    seeded.ctx.settings.trust_forwarded_for = True
    with (
        serve_in_thread(create_app(ctx=seeded.ctx), proxy_headers=False) as url,
        httpx.Client(base_url=url, headers={"X-Forwarded-For": "203.0.113.5"}) as client,
    ):
        browser = Browser(client)
        assert browser.sign_in("ann@acme.test").status_code == 303
    with seeded.ctx.db.session() as session:
        ips = session.scalars(
            select(AuditEvent.ip).where(AuditEvent.action == "console.signed_in")
        ).all()
    assert ips == ["203.0.113.5"]
