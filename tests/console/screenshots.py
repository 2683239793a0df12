"""Save PNGs of the main console pages into docs/screenshots/ (``python -m tests.console.screenshots``).

Seeds a throwaway SQLite database with a realistic organization, serves the real
app on a loopback socket and drives headless Chromium through the pages.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from keyrack.domain.exports import Resource
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import OrgKind, Role, Scope
from keyrack.server import create_app
from keyrack.services import (
    apps,
    expiry,
    exports,
    keys,
    leaks,
    requests,
    sessions,
    tenancy,
    webhooks,
)
from keyrack.services.context import Actor, Context
from keyrack.storage.database import Database
from keyrack.storage.migrate import upgrade
from tests.conftest import MutableClock, make_settings
from tests.console.conftest import PASSWORD
from tests.console.test_browser import ARGS, CHROMIUM
from tests.live import serve_in_thread

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
OPERATOR = Actor(label="cli", is_staff=True)


def seed(ctx: Context, clock: MutableClock) -> None:
    org = tenancy.create_org(ctx, OPERATOR, name="Acme CRM", slug="acme")
    tenancy.create_location(ctx, OPERATOR, org_slug="acme", name="Berlin office", slug="berlin")
    for email, role, name in (
        ("dana@acme.test", Role.OWNER, "Dana Owner"),
        ("ann@acme.test", Role.ADMIN, "Ann Admin"),
        ("max@acme.test", Role.MEMBER, "Max Member"),
    ):
        tenancy.create_user(
            ctx, OPERATOR, org_slug="acme", email=email, role=role, name=name, password=PASSWORD
        )
    bot = tenancy.create_user(
        ctx, OPERATOR, org_slug="acme", email="api@acme.test", service=True
    ).user
    tenancy.create_user(
        ctx, OPERATOR, org_slug=None, email="ops@keyrack.test", staff=True, password=PASSWORD
    )
    vendor = tenancy.create_org(ctx, OPERATOR, name="Nexla", slug="nexla", kind=OrgKind.VENDOR)
    sandbox, _ = keys.create_key(
        ctx, OPERATOR, Scope(vendor.id), name="Nexla sandbox", permissions=["clients:read"]
    )
    app = apps.register_app(
        ctx, OPERATOR, vendor_org_id=vendor.id, name="Nexla Sync", sandbox_key_ref=sandbox.ref
    )
    ann = tenancy.actor_for_user(tenancy.authenticate(ctx, "ann@acme.test", PASSWORD))  # type: ignore[arg-type]
    scope = Scope(org.id)
    made = []
    for name, env, perms in (
        ("HubSpot sync", Environment.PRODUCTION, ["clients:read", "contacts:read"]),
        ("Marketing Automation", Environment.SANDBOX, ["usage:write"]),
        ("Data warehouse export", Environment.PRODUCTION, ["exports:create"]),
        ("Old Zapier", Environment.SANDBOX, ["clients:write"]),
    ):
        made.append(
            keys.create_key(
                ctx, ann, scope, name=name, environment=env, permissions=perms, owner_id=bot.id
            )
        )
        clock.advance(timedelta(hours=5))
    keys.record_last_used(ctx, {made[0][0].id: (clock(), "203.0.113.7")})
    keys.revoke_key(ctx, ann, scope, made[3][0].ref, reason="integration retired")
    leaks.revoke_leaked(ctx, made[1][1], "https://github.com/acme/scripts/blob/main/sync.py")
    requests.create_request(ctx, ann, org_id=org.id, app_ref=app.ref)
    webhooks.create_endpoint(
        ctx,
        ann,
        org.id,
        url="https://hooks.acme.test/keyrack",
        events=["key.leaked", "key.expiring"],
    )
    exports.create_export(ctx, ann, scope, resource=Resource.CLIENTS, gzip=True)
    tenancy.create_user(ctx, OPERATOR, org_slug="acme", email="new@acme.test", role=Role.ADMIN)
    clock.advance(timedelta(days=76))
    expiry.run(ctx)
    clock.advance(timedelta(hours=1))


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/shots.db"
        upgrade(url)
        clock = MutableClock()
        settings = make_settings(url)
        ctx = Context(settings=settings, db=Database(url), clock=clock)
        seed(ctx, clock)
        with serve_in_thread(create_app(ctx=ctx)) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            context = browser.new_context(base_url=base, viewport={"width": 1440, "height": 800})
            page = context.new_page()

            def shot(name: str) -> None:
                page.screenshot(path=OUT / f"{name}.png", full_page=True)
                sys.stdout.write(f"{OUT / name}.png\n")

            page.goto("/console/login")
            shot("sign-in")
            sign_in(page, "ann@acme.test")
            shot("settings-api-masked")
            page.get_by_role("link", name="Generate key").click()
            page.get_by_label("Name").fill("Nexla Integration")
            page.get_by_label("clients:read").check()
            page.get_by_label("contacts:read").check()
            shot("generate-key")
            page.get_by_role("button", name="Generate key").click()
            shot("key-revealed")
            page.get_by_role("navigation", name="Main").get_by_role(
                "link", name="Settings → API"
            ).click()
            shot("settings-api-revealed")
            page.goto("/console/settings/team")
            shot("team")
            page.goto("/console/audit")
            shot("audit")
            page.goto("/console/notifications")
            shot("notifications")
            page.goto("/console/settings/api/webhooks")
            shot("webhooks")
            page.locator("table a.url").first.click()
            shot("webhook-deliveries")
            context.close()
            first = browser.new_context(base_url=base, viewport={"width": 1440, "height": 800})
            page = first.new_page()
            sign_in(page, "new@acme.test", sessions.reset_password(ctx, OPERATOR, "new@acme.test"))
            shot("first-sign-in")
            first.close()
            staff = browser.new_context(base_url=base, viewport={"width": 1440, "height": 800})
            page = staff.new_page()
            sign_in(page, "ops@keyrack.test")
            page.goto("/console/staff/requests")
            shot("staff-requests")
            page.goto("/console/staff/orgs")
            shot("staff-orgs")
            mobile = browser.new_context(base_url=base, viewport={"width": 390, "height": 844})
            page = mobile.new_page()
            sign_in(page, "ann@acme.test")
            shot("settings-api-mobile")
            staff.close()
            mobile.close()
            browser.close()
        ctx.db.dispose()


if __name__ == "__main__":
    sys.exit(main())
