"""The console over HTTP, on SQLite and PostgreSQL: sign-in, CSRF, roles, reveal window, paging."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, insert, select

from keyrack.domain.ids import new_ref
from keyrack.domain.tenancy import OrgKind, Scope
from keyrack.errors import AuthenticationFailed, Throttled
from keyrack.services import apps, keys, sessions, tenancy
from keyrack.services.context import Context
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.console import ConsoleReveal, ConsoleSession
from keyrack.storage.tables.keys import ApiKey
from tests.conftest import OPERATOR, MutableClock

from .conftest import PASSWORD, Browser, People

SECRET = re.compile(r"kr_(?:test|live)_[0-9A-Za-z]{38}")


def generate(browser: Browser, name: str = "Nexla Integration", **extra: object) -> httpx.Response:
    browser.get("/console/settings/api/new")
    data = {"name": name, "environment": "sandbox", "scope": "agency", **extra}
    created = browser.post("/console/settings/api", data)
    assert created.status_code == 303, created.text
    return browser.get(created.headers["location"])


def test_sign_in_sets_an_httponly_samesite_lax_session_cookie(
    browser: Browser, people: People
) -> None:
    response = browser.sign_in(people.owner)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "keyrack_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http on loopback; https adds it


def test_session_token_is_stored_only_as_a_digest(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.owner)
    token = browser.client.cookies["keyrack_session"]
    with ctx.db.session() as session:
        digests = list(session.scalars(select(ConsoleSession.token_digest)))
    assert len(digests) == 1 and token not in digests[0]


def test_wrong_password_is_refused_with_the_form_again(browser: Browser, people: People) -> None:
    response = browser.sign_in(people.owner, "not the password")
    assert response.status_code == 401
    assert "wrong email or password" in response.text
    assert "keyrack_session" not in browser.client.cookies


def test_five_failed_sign_ins_throttle_the_sixth_even_with_the_right_password(
    browser: Browser, people: People, clock: MutableClock
) -> None:
    for _ in range(5):
        assert browser.sign_in(people.owner, "guess").status_code == 401
    refused = browser.sign_in(people.owner)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    clock.advance(timedelta(minutes=16))
    assert browser.sign_in(people.owner).status_code == 303


def test_a_form_post_without_the_csrf_token_is_refused(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.owner)
    refused = browser.post("/console/settings/api", {"name": "Sneaky"}, csrf=False)
    assert refused.status_code == 403
    wrong = browser.client.post(
        "/console/settings/api", data={"name": "Sneaky", "csrf_token": "forged"}
    )
    assert wrong.status_code == 403
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_sign_in_form_without_its_csrf_token_is_refused(browser: Browser, people: People) -> None:
    refused = browser.client.post(
        "/console/login", data={"email": people.owner, "password": PASSWORD}
    )
    assert refused.status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(browser: Browser) -> None:
    response = browser.client.get("/console/settings/api")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login?next=")
    assert browser.client.get("/").headers["location"] == "/console"


def test_member_sees_no_settings_link_and_is_told_whom_to_ask_on_its_urls(
    browser: Browser, people: People
) -> None:
    browser.sign_in(people.member)
    home = browser.get("/console")
    assert home.status_code == 200
    assert "/console/settings/api" not in home.text
    for url in ("/console/settings/api", "/console/settings/api/new", "/console/settings/team"):
        refused = browser.get(url)
        assert refused.status_code == 403, url
        assert "ask an owner or admin of your organization" in refused.text
    assert browser.post("/console/settings/api", {"name": "x"}).status_code == 403


def test_staff_pages_are_404_for_an_org_owner(browser: Browser, people: People) -> None:
    browser.sign_in(people.owner)
    assert browser.get("/console/staff/orgs").status_code == 404


def test_generated_key_is_shown_in_full_only_during_the_reveal_window(
    browser: Browser, people: People, clock: MutableClock, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser, permissions=["clients:read", "keys:manage"])
    secrets = set(SECRET.findall(page.text))
    assert len(secrets) == 1
    secret = secrets.pop()
    assert "clients:read, keys:manage" in page.text
    listing = browser.get("/console/settings/api")
    assert secret in listing.text
    with ctx.db.session() as session:
        sealed = list(session.scalars(select(ConsoleReveal.sealed_secret)))
    assert sealed and all(secret not in value for value in sealed)

    clock.advance(timedelta(seconds=301))
    after = browser.get("/console/settings/api")
    assert secret not in after.text
    assert f"kr_test_••••••••{secret[-4:]}" in after.text
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ConsoleReveal)) == 0
        actions = list(session.scalars(select(AuditEvent.action)))
    assert "key.revealed" in actions


def test_the_copy_it_now_banner_ends_with_the_reveal_window(
    browser: Browser, people: People, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser)
    assert "Copy it now" in page.text and SECRET.search(page.text)
    url = str(page.url)
    assert url.endswith("?notice=created")
    clock.advance(timedelta(seconds=301))
    later = browser.get(url)
    assert later.status_code == 200
    assert "Copy it now" not in later.text and not SECRET.search(later.text)


def test_favicon_is_served(browser: Browser) -> None:
    icon = browser.client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg")


def test_the_reveal_belongs_to_the_session_that_generated_the_key(
    live_url: str, browser: Browser, people: People
) -> None:
    browser.sign_in(people.admin)
    secret = SECRET.findall(generate(browser).text)[0]
    with httpx.Client(base_url=live_url) as other_client:
        other = Browser(other_client)
        other.sign_in(people.owner)
        assert secret not in other.get("/console/settings/api").text


def test_sign_out_ends_the_session_and_erases_pending_reveals(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    generate(browser)
    out = browser.post("/console/logout", {})
    assert out.status_code == 303
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(ConsoleReveal)) == 0
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0
    assert browser.client.get("/console/settings/api").status_code == 303


def test_a_key_needs_a_name(browser: Browser, people: People) -> None:
    browser.sign_in(people.admin)
    browser.get("/console/settings/api/new")
    response = browser.post("/console/settings/api", {"name": "  ", "environment": "sandbox"})
    assert response.status_code == 400
    assert "name is required" in response.text


def test_regenerate_needs_confirmation_and_voids_the_old_secret(
    browser: Browser, people: People
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser, permissions=["keys:manage"])
    old = SECRET.findall(page.text)[0]
    ref = re.search(r"key_[0-9A-Z]{26}", page.text).group(0)  # type: ignore[union-attr]
    unconfirmed = browser.post(f"/console/settings/api/keys/{ref}/regenerate", {})
    assert unconfirmed.status_code == 400
    done = browser.post(f"/console/settings/api/keys/{ref}/regenerate", {"confirm": "yes"})
    new = SECRET.findall(browser.get(done.headers["location"]).text)[0]
    assert new != old
    assert browser.client.get("/api/v2/keys", headers={"X-API-Key": old}).status_code == 401
    assert browser.client.get("/api/v2/keys", headers={"X-API-Key": new}).status_code == 200


def test_revoke_needs_a_reason_and_refuses_the_key_at_once(
    browser: Browser, people: People
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser, permissions=["keys:manage"])
    secret = SECRET.findall(page.text)[0]
    ref = re.search(r"key_[0-9A-Z]{26}", page.text).group(0)  # type: ignore[union-attr]
    assert browser.post(f"/console/settings/api/keys/{ref}/revoke", {}).status_code == 400
    done = browser.post(f"/console/settings/api/keys/{ref}/revoke", {"reason": "retired"})
    detail = browser.get(done.headers["location"])
    assert "revoked" in detail.text and "retired" in detail.text
    assert secret not in detail.text
    refused = browser.client.get("/api/v2/keys", headers={"X-API-Key": secret})
    assert refused.json()["type"].endswith("/revoked-key")


def test_the_key_list_is_paged_at_a_thousand_keys(
    browser: Browser, people: People, ctx: Context, clock: MutableClock
) -> None:
    rows = [
        {
            "ref": new_ref("key"),
            "org_id": people.org_id,
            "name": f"Integration {i}",
            "environment": "sandbox",
            "prefix": "kr_test_",
            "last4": f"{i:04d}",
            "permissions": ["clients:read"],
            "allowed_cidrs": [],
            "status": "active",
            "created_at": clock(),
            "created_by_label": "test",
            "inactivity_days": 90,
        }
        for i in range(1000)
    ]
    with ctx.db.transaction() as session:
        session.execute(insert(ApiKey), rows)
    browser.sign_in(people.admin)
    first = browser.get("/console/settings/api")
    assert first.status_code == 200
    assert first.text.count("kr_test_••••••••") == 50
    assert "Integration 999" in first.text and "Integration 949" not in first.text
    next_url = re.search(r'rel="next" href="([^"]+)"', first.text).group(1)  # type: ignore[union-attr]
    second = browser.get(next_url.replace("&amp;", "&"))
    assert second.text.count("kr_test_••••••••") == 50
    assert "Integration 949" in second.text


def test_team_shows_seats_without_service_users(browser: Browser, people: People) -> None:
    browser.sign_in(people.owner)
    team = browser.get("/console/settings/team")
    assert "<strong>3</strong> billable seats" in team.text
    created = browser.post(
        "/console/settings/team/users",
        {"email": "bot@acme.test", "role": "member", "service": "true"},
    )
    assert created.status_code == 201
    assert "Service user (API Access)" in created.text
    assert "<strong>3</strong> billable seats" in created.text
    person = browser.post(
        "/console/settings/team/users", {"email": "new@acme.test", "role": "admin"}
    )
    assert "they choose their own at the first sign-in" in person.text
    assert "<strong>4</strong> billable seats" in person.text


def test_deactivated_member_can_no_longer_sign_in(
    live_url: str, browser: Browser, people: People
) -> None:
    browser.sign_in(people.owner)
    browser.get("/console/settings/team")
    done = browser.post(
        f"/console/settings/team/users/{people.member_id}/active", {"active": "false"}
    )
    assert done.status_code == 303
    with httpx.Client(base_url=live_url) as other_client:
        assert Browser(other_client).sign_in(people.member).status_code == 401


def test_audit_log_filters_by_event_type_and_key(browser: Browser, people: People) -> None:
    browser.sign_in(people.admin)
    page = generate(browser)
    ref = re.search(r"key_[0-9A-Z]{26}", page.text).group(0)  # type: ignore[union-attr]
    log = browser.get("/console/audit", params={"action": "key.created"})
    assert ref in log.text and "<code>console.signed_in</code>" not in log.text
    by_key = browser.get("/console/audit", params={"key": ref})
    assert "<code>key.revealed</code>" in by_key.text
    assert browser.get("/console/audit", params={"since": "yesterday"}).status_code == 400


def test_staff_switch_api_access_off_and_keys_are_refused(
    browser: Browser, people: People, ctx: Context
) -> None:
    _, secret = keys.create_key(
        ctx, OPERATOR, Scope(people.org_id), name="k", permissions=["keys:manage"]
    )
    browser.sign_in(people.staff)
    orgs = browser.get("/console/staff/orgs")
    assert "acme" in orgs.text
    done = browser.post(f"/console/staff/orgs/{people.org_slug}/api-access", {"enabled": "false"})
    assert done.status_code == 303
    refused = browser.client.get("/api/v2/keys", headers={"X-API-Key": secret})
    assert refused.status_code == 403
    assert "disabled" in browser.get("/console/staff/orgs").text


def test_console_pages_send_security_headers_and_stay_out_of_openapi(
    browser: Browser, people: People
) -> None:
    page = browser.get("/console/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    spec = browser.client.get("/api/v2/openapi.json").json()
    assert not [path for path in spec["paths"] if path.startswith("/console")]


def seed_app(ctx: Context) -> str:
    vendor = tenancy.create_org(ctx, OPERATOR, name="Nexla", slug="nexla", kind=OrgKind.VENDOR)
    sandbox, _ = keys.create_key(
        ctx, OPERATOR, Scope(vendor.id), name="Nexla sandbox", permissions=["clients:read"]
    )
    return apps.register_app(
        ctx, OPERATOR, vendor_org_id=vendor.id, name="Nexla Sync", sandbox_key_ref=sandbox.ref
    ).ref


def test_production_key_request_approved_by_staff_is_revealed_once_to_the_customer(
    live_url: str, browser: Browser, people: People, ctx: Context
) -> None:
    app_ref = seed_app(ctx)
    browser.sign_in(people.admin)
    browser.get("/console/settings/api/production")
    asked = browser.post("/console/settings/api/production", {"app": app_ref})
    assert asked.status_code == 303
    assert "pending" in browser.get("/console/settings/api/production").text

    with httpx.Client(base_url=live_url) as staff_client:
        staff = Browser(staff_client)
        staff.sign_in(people.staff)
        queue = staff.get("/console/staff/requests")
        # the form shows what approving gives: the sandbox key's permissions, ticked
        assert 'value="clients:read" checked disabled' in queue.text
        assert 'value="clients:write" disabled' in queue.text
        ref = re.search(
            r"/console/staff/requests/(kreq_[0-9A-Z]+|[a-z]+_[0-9A-Z]{26})/approve", queue.text
        )
        assert ref is not None
        approved = staff.post(f"/console/staff/requests/{ref.group(1)}/approve", {})
        assert approved.status_code == 303
        assert not SECRET.search(staff.get("/console/staff/requests").text)

    waiting = browser.get("/console/settings/api/production")
    claim = re.search(r'action="(/console/settings/api/claims/[^"]+)"', waiting.text)
    assert claim is not None
    opened = browser.post(claim.group(1), {})
    key_page = browser.get(opened.headers["location"])
    secret = SECRET.findall(key_page.text)[0]
    assert secret.startswith("kr_live_") and "clients:read" in key_page.text
    assert "Nexla Sync — Acme (production)" in key_page.text  # the app and who asked
    assert browser.post(claim.group(1), {}).status_code == 410


def test_hand_off_link_opens_once_then_is_gone(
    live_url: str, browser: Browser, people: People
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser)
    secret = SECRET.findall(page.text)[0]
    ref = re.search(r"key_[0-9A-Z]{26}", page.text).group(0)  # type: ignore[union-attr]
    made = browser.post(f"/console/settings/api/keys/{ref}/handoff", {})
    assert made.status_code == 201
    url = re.search(r'id="handoff-url"[^>]*value="([^"]+)"', made.text).group(1)  # type: ignore[union-attr]
    assert secret not in made.text
    with httpx.Client() as vendor_client:
        vendor = Browser(vendor_client)
        landing = vendor.get(url)
        assert secret not in landing.text  # a link preview does not burn it
        shown = vendor.post(url, {})
        assert secret in shown.text
        again = vendor.post(url, {})
        assert again.status_code == 410 and secret not in again.text


def test_hand_off_link_needs_the_secret_still_in_the_reveal_window(
    browser: Browser, people: People, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    page = generate(browser)
    ref = re.search(r"key_[0-9A-Z]{26}", page.text).group(0)  # type: ignore[union-attr]
    clock.advance(timedelta(minutes=6))
    assert browser.post(f"/console/settings/api/keys/{ref}/handoff", {}).status_code == 400


def test_notifications_inbox_lists_and_marks_read(browser: Browser, people: People) -> None:
    browser.sign_in(people.member)
    inbox = browser.get("/console/notifications")
    assert inbox.status_code == 200 and "Nothing new" in inbox.text


def test_session_cookie_is_secure_when_served_over_https(browser: Browser, people: People) -> None:
    """Behind a TLS-terminating proxy on loopback, uvicorn reports the https scheme."""
    https = {"X-Forwarded-Proto": "https"}
    page = browser.client.get("/console/login", headers=https)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert "Secure" in page.headers["set-cookie"]
    browser.client.cookies.set("keyrack_login_csrf", token)
    signed = browser.client.post(
        "/console/login",
        data={"email": people.owner, "password": PASSWORD, "csrf_token": token},
        headers=https,
    )
    assert signed.status_code == 303
    assert "keyrack_session=" in signed.headers["set-cookie"]
    assert "Secure" in signed.headers["set-cookie"]


def test_a_password_change_needs_the_current_one_and_ends_other_sessions(
    browser: Browser, people: People, live_url: str
) -> None:
    with httpx.Client(base_url=live_url, timeout=10) as other_client:
        elsewhere = Browser(other_client)
        elsewhere.sign_in(people.member)
        browser.sign_in(people.member)
        assert browser.get("/console/account").status_code == 200
        new = "a much longer new passphrase"

        wrong = browser.post(
            "/console/account/password",
            {"current_password": "not it at all", "new_password": new, "confirm_password": new},
        )
        assert wrong.status_code == 400 and "current password is wrong" in wrong.text
        short = browser.post(
            "/console/account/password",
            {"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"},
        )
        assert short.status_code == 400 and "at least 12" in short.text
        assert PASSWORD not in short.text  # passwords are never echoed into the form

        changed = browser.post(
            "/console/account/password",
            {"current_password": PASSWORD, "new_password": new, "confirm_password": new},
        )
        assert changed.status_code == 200 and "password was changed" in changed.text
        assert browser.get("/console").status_code == 200  # this session goes on
        ended = elsewhere.get("/console")  # the other session is over
        assert ended.status_code == 303 and ended.headers["location"].startswith("/console/login")

    with httpx.Client(base_url=live_url, timeout=10) as fresh_client:
        fresh = Browser(fresh_client)
        assert fresh.sign_in(people.member, PASSWORD).status_code == 401
        assert fresh.sign_in(people.member, new).status_code == 303


def test_guesses_spread_over_addresses_or_accounts_are_throttled_too(
    ctx: Context, people: People, clock: MutableClock
) -> None:
    for n in range(sessions.MAX_FAILURES_PER_EMAIL):  # one account, many addresses
        with pytest.raises(AuthenticationFailed):
            sessions.sign_in(ctx, people.owner, "guess", f"198.51.100.{n}")
    with pytest.raises(Throttled):
        sessions.sign_in(ctx, people.owner, PASSWORD, "203.0.113.200")

    for n in range(sessions.MAX_FAILURES_PER_ADDRESS):  # one address, many accounts
        with pytest.raises(AuthenticationFailed):
            sessions.sign_in(ctx, f"nobody{n}@acme.test", "Winter2026!", "192.0.2.9")
    with pytest.raises(Throttled):
        sessions.sign_in(ctx, people.member, PASSWORD, "192.0.2.9")
    assert sessions.sign_in(ctx, people.member, PASSWORD, "192.0.2.10").token

    clock.advance(sessions.FAILURE_WINDOW + timedelta(seconds=1))
    assert sessions.sign_in(ctx, people.owner, PASSWORD, "203.0.113.200").token
