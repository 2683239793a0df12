"""End to end in headless Chromium: what an admin, a member, staff and a vendor do in the console.

Runs on SQLite only: the services behind these pages are tested on both backends elsewhere.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from keyrack.services import tenancy
from keyrack.services.context import Context
from tests.conftest import MutableClock

from .conftest import PASSWORD, People
from .test_console_http import SECRET, seed_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


@pytest.fixture
def database_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only for browser runs."""
    target = tmp_path / "keyrack.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(chromium: Browser, live_url: str) -> Iterator[BrowserContext]:
    context = chromium.new_context(base_url=live_url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.goto("/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name)


def generate_key(page: Page, name: str, *permissions: str) -> str:
    nav(page, "Settings → API").click()
    page.get_by_role("link", name="Generate key").click()
    page.get_by_label("Name").fill(name)
    for permission in permissions:
        page.get_by_label(permission).check()
    page.get_by_role("button", name="Generate key").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    return page.locator("input.secret").input_value()


def test_first_sign_in_leads_only_to_choosing_a_password_then_opens_settings_api(
    page: Page, ctx: Context, chromium: Browser, live_url: str
) -> None:
    first = tenancy.bootstrap(ctx)
    assert first is not None
    sign_in(page, first.email, first.password)
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_count(1)
    page.goto("/console/settings/api")  # by URL: still the password page
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()

    page.get_by_label("The password you were given").fill(first.password)
    page.get_by_label("New password (at least 12 characters)").fill("my own long passphrase")
    page.get_by_label("New password, again").fill("my own long passphrase")
    page.get_by_role("button", name="Set my password").click()
    expect(page.get_by_text("Your password was changed")).to_be_visible()
    nav(page, "Settings → API").click()
    expect(page.get_by_role("heading", name="Settings → API")).to_be_visible()
    expect(page.get_by_text("No keys yet")).to_be_visible()

    other = chromium.new_context(base_url=live_url)
    try:  # the issued password is void
        again = other.new_page()
        sign_in(again, first.email, first.password)
        expect(again.get_by_role("alert")).to_contain_text("wrong email or password")
    finally:
        other.close()


def test_generate_copy_then_the_reveal_window_ends_and_only_the_mask_remains(
    page: Page, people: People, clock: MutableClock
) -> None:
    sign_in(page, people.admin)
    secret = generate_key(page, "Nexla Integration", "clients:read")
    assert SECRET.fullmatch(secret)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    clock.advance(timedelta(seconds=301))
    nav(page, "Settings → API").click()
    row = page.get_by_role("row", name=re.compile("Nexla Integration"))
    expect(row).to_contain_text(f"kr_test_••••••••{secret[-4:]}")
    expect(row).to_contain_text("2026-01-05 09:00 UTC")  # generated on
    assert secret not in page.content()


def test_regenerate_after_confirming_makes_the_old_key_get_401(
    page: Page, people: People, live_url: str
) -> None:
    sign_in(page, people.admin)
    old = generate_key(page, "Marketing Automation", "keys:manage")
    page.get_by_label("I understand").check()
    page.get_by_role("button", name="Regenerate key").click()
    expect(page.get_by_text("Key regenerated")).to_be_visible()
    new = page.locator("input.secret").input_value()
    assert new != old
    with httpx.Client(base_url=live_url) as api:
        assert api.get("/api/v2/keys", headers={"X-API-Key": old}).status_code == 401
        assert api.get("/api/v2/keys", headers={"X-API-Key": new}).status_code == 200


def test_revoke_with_a_reason(page: Page, people: People, live_url: str) -> None:
    sign_in(page, people.admin)
    secret = generate_key(page, "Old Zapier", "keys:manage")
    page.get_by_label("Reason").fill("integration retired")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("Key revoked")).to_be_visible()
    expect(page.get_by_text("integration retired")).to_be_visible()
    with httpx.Client(base_url=live_url) as api:
        assert api.get("/api/v2/keys", headers={"X-API-Key": secret}).status_code == 401


def test_member_has_no_settings_api_link_and_the_url_says_whom_to_ask(
    page: Page, people: People
) -> None:
    sign_in(page, people.member)
    expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
    expect(nav(page, "Settings → API")).to_have_count(0)
    response = page.goto("/console/settings/api")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("ask an owner or admin of your organization")


def test_staff_approves_a_request_and_the_customer_reveals_the_production_key(
    chromium: Browser,
    context: BrowserContext,
    page: Page,
    people: People,
    ctx: Context,
    live_url: str,
) -> None:
    seed_app(ctx)
    sign_in(page, people.admin)
    nav(page, "Settings → API").click()
    page.get_by_role("link", name="Production keys for apps").click()
    page.get_by_label("App", exact=True).select_option(label="Nexla Sync by Nexla (clients:read)")
    page.get_by_role("button", name="Request production key").click()
    expect(page.get_by_text("Request sent")).to_be_visible()

    staff_context = chromium.new_context(base_url=live_url)
    try:
        staff = staff_context.new_page()
        sign_in(staff, people.staff)
        nav(staff, "Staff: key requests").click()
        expect(staff.get_by_role("heading", name="acme: Nexla Sync")).to_be_visible()
        staff.get_by_role("button", name="Approve").click()
        expect(staff.get_by_text("No pending requests")).to_be_visible()
        assert not SECRET.search(staff.content())
    finally:
        staff_context.close()

    page.reload()
    page.get_by_role("button", name="Reveal key").click()
    expect(page.get_by_text("Your approved production key")).to_be_visible()
    secret = page.locator("input.secret").input_value()
    assert secret.startswith("kr_live_")
    expect(page.locator("dl.facts")).to_contain_text("clients:read")


def test_hand_off_link_opens_once_in_another_browser_then_is_refused(
    chromium: Browser, page: Page, people: People, live_url: str
) -> None:
    sign_in(page, people.admin)
    secret = generate_key(page, "For the vendor", "clients:read")
    page.get_by_role("button", name="Create one-time hand-off link").click()
    url = page.get_by_label("Hand-off link").input_value()
    assert url.startswith(live_url + "/console/handoff/") and secret not in url

    vendor_context = chromium.new_context()
    try:
        vendor = vendor_context.new_page()
        vendor.goto(url)
        vendor.get_by_role("button", name="Show the key").click()
        expect(vendor.get_by_label("API key")).to_have_value(secret)
        vendor.goto(url)
        vendor.get_by_role("button", name="Show the key").click()
        expect(vendor.get_by_role("alert")).to_contain_text("already opened")
        assert secret not in vendor.content()
    finally:
        vendor_context.close()
