"""Settings → Integrations end to end in headless Chromium against the HubSpot fake: a
connection whose far side revoked the key shows it at a glance and diagnose names the
credential; reauthorizing with a new key makes it active again; the next run succeeds and
the issue resolves. A filter that skips shows in "test with one record" with the values
it tested; a direction turned off is named by diagnose with who and when. Each step ends with a screenshot,
written to docs/screenshots/integrations-*.png when ``KEYRACK_WRITE_SCREENSHOTS=1`` (so
they stay true without every run rewriting tracked files), else to a temporary folder.

SQLite only, like the other browser tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from keyrack.domain.crm import EngagementKind
from keyrack.domain.tenancy import Scope
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, engagements
from keyrack.services.integrations import connections, syncs
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.peers import HubSpotPeer

from .conftest import People
from .integrations_setup import drain, hub, hubspot_stage
from .test_browser import chromium, context, database_url, nav, page, pytestmark, sign_in
from .test_layout import WIDER_THAN_THE_WINDOW

__all__ = ["chromium", "context", "database_url", "hub", "hubspot_stage", "page", "pytestmark"]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHOTS: list[Path] = []


@pytest.fixture(autouse=True)
def shots(tmp_path: Path) -> None:
    SHOTS[:] = [DOCS if os.environ.get("KEYRACK_WRITE_SCREENSHOTS") == "1" else tmp_path]


def shoot(page: Page, name: str) -> None:
    folder = SHOTS[0]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"integrations-{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def watch_csp(page: Page) -> list[str]:
    """Console messages that say the page broke its Content-Security-Policy."""
    broken: list[str] = []
    page.on(
        "console",
        lambda message: (
            broken.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return broken


def run_now(page: Page, ctx: Context) -> None:
    """Press "Run now", perform the queued run here, and open the run's page afresh."""
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("Run queued")).to_be_visible()
    drain(ctx)
    page.reload()


def test_a_revoked_key_at_a_glance_then_reauthorize_and_the_next_run_succeeds(
    page: Page, ctx: Context, people: People, hub: HubSpotPeer
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    broken = watch_csp(page)
    hub.fake.seed("companies", [{"name": "Acme Dental"}, {"name": "Globex Clinics"}])
    sign_in(page, people.admin)
    nav(page, "Settings → Integrations").click()
    expect(page.get_by_role("heading", name="Settings → Integrations")).to_be_visible()
    expect(page.get_by_text("No connections yet")).to_be_visible()
    page.get_by_label("Provider", exact=True).select_option("hubspot")
    page.get_by_label("Name").fill("Our HubSpot")
    page.get_by_label("Base URL").fill(hub.base_url)
    page.get_by_label("API key or private-app token").fill(hub.credential["api_key"])
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", name="Our HubSpot")).to_contain_text("active")
    expect(page.locator("body")).not_to_contain_text(hub.credential["api_key"])

    page.get_by_role("button", name="Turn on clients inbound").click()
    expect(page.get_by_text("Sync turned on")).to_be_visible()
    run_now(page, ctx)
    expect(page.get_by_role("heading", name="Run")).to_contain_text("succeeded")
    expect(page.get_by_text("2 synced, 0 skipped, 0 failed")).to_be_visible()

    hub.refuse()  # the far side revokes the private-app token
    page.get_by_role("link", name="Our HubSpot").click()
    run_now(page, ctx)
    expect(page.get_by_role("heading", name="Run")).to_contain_text("failed")
    nav(page, "Settings → Integrations").click()
    row = page.get_by_role("row", name="Our HubSpot")
    expect(row.locator(".status")).to_have_text("unauthorized")
    expect(row).to_contain_text(f"unauthorized: {INVALID_AUTHENTICATION}")
    shoot(page, "revoked-at-a-glance")

    row.get_by_role("link", name="Our HubSpot").click()
    expect(page.get_by_role("alert")).to_contain_text("unauthorized: Authentication credentials")
    shoot(page, "connection-unauthorized")
    expect(page.locator(".issues")).to_contain_text("since")
    page.get_by_role("button", name="Diagnose").click()  # the article's four checks
    expect(page.get_by_role("heading", name="Diagnosis of Our HubSpot")).to_be_visible()
    first = page.locator(".checks > li").first
    expect(first).to_contain_text("credentials")
    expect(first.locator(".status")).to_have_text("problem")
    expect(first).to_contain_text("the credential is unauthorized")
    expect(page.locator("pre.bundle").first).to_contain_text("unauthorized")
    expect(page.locator("body")).not_to_contain_text(hub.credential["api_key"])
    with page.expect_download() as fetched:
        page.get_by_role("link", name="Download Markdown").click()
    assert fetched.value.suggested_filename.endswith(".md")
    shoot(page, "diagnose-revoked")
    page.get_by_role("link", name="Our HubSpot").click()
    page.get_by_role("button", name="Reauthorize").click()  # nothing typed: refused, said why
    expect(page.get_by_role("alert").filter(has_text="type the new API key")).to_be_visible()
    fresh = hub.fake.private_app_token()
    page.get_by_label("API key or private-app token").fill(fresh)
    page.get_by_role("button", name="Reauthorize").click()
    expect(page.get_by_text("New credential stored and checked just now")).to_be_visible()
    expect(page.get_by_role("heading", name="Our HubSpot")).to_contain_text("active")
    expect(page.locator(".flash.problem")).to_have_count(0)
    expect(page.locator(".changes")).to_contain_text("credential")
    expect(page.locator("body")).not_to_contain_text(fresh)
    shoot(page, "reauthorized")

    hub.fake.seed("companies", [{"name": "Initech Ortho"}])
    run_now(page, ctx)
    expect(page.get_by_role("heading", name="Run")).to_contain_text("succeeded")
    expect(page.get_by_role("row", name="Initech Ortho")).to_contain_text("synced")
    shoot(page, "run-succeeded")

    page.get_by_role("link", name="Our HubSpot").click()
    expect(page.locator(".issues")).to_have_count(0)  # the clean run resolved it
    expect(page.locator("svg.chart g.bar")).to_have_count(3)
    expect(page.locator("svg.chart .series-synced")).to_have_count(2)
    shoot(page, "connection")
    nav(page, "Settings → Integrations").click()
    expect(page.get_by_role("row", name="Our HubSpot").locator(".status")).to_have_text("active")
    expect(page.get_by_role("row", name="Our HubSpot")).to_contain_text("nothing")
    shoot(page, "list")
    assert broken == []

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing scrolls sideways
    page.get_by_role("link", name="Our HubSpot").click()
    pages = [page.url, page.locator("table a[href*='/runs/']").first.get_attribute("href")]
    pages.append(page.get_by_role("link", name="Edit clients inbound").get_attribute("href"))
    for href in pages:
        page.goto(str(href))
        assert page.evaluate(WIDER_THAN_THE_WINDOW) == [], href
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, href
    page.goto(pages[0])
    page.get_by_role("button", name="Diagnose").click()  # the bundle's <pre> wraps
    expect(page.get_by_role("heading", name="Diagnosis of Our HubSpot")).to_be_visible()
    assert page.evaluate(WIDER_THAN_THE_WINDOW) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_sync_page_saves_filters_beside_its_history(
    page: Page, ctx: Context, people: People, hub: HubSpotPeer
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, people.admin)
    nav(page, "Settings → Integrations").click()
    page.get_by_label("Name").fill("Our HubSpot")
    page.get_by_label("Base URL").fill(hub.base_url)
    page.get_by_label("API key or private-app token").fill(hub.credential["api_key"])
    page.get_by_role("button", name="Add connection").click()
    page.get_by_role("link", name="Edit clients inbound").click()
    page.get_by_label("Enabled").check()
    page.get_by_label("Filters").fill('[{"field": "annualrevenue", "op": "gte", "value": 10}]')
    page.get_by_role("button", name="Save sync").click()
    expect(page.get_by_text("Saved. The change is in the history beside.")).to_be_visible()
    expect(page.locator(".changes li.this").first).to_contain_text("annualrevenue")
    expect(page.get_by_role("heading", name="Clients inbound")).to_contain_text("on")
    shoot(page, "sync")


def test_a_field_renamed_on_the_far_side_shows_the_providers_exact_error_per_record(
    page: Page, ctx: Context, people: People, hub: HubSpotPeer
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    admin = Actor(label=f"user:{people.admin}")
    scope = Scope(people.org_id)
    ref = connections.create(
        ctx,
        admin,
        scope,
        provider="hubspot",
        name="Our HubSpot",
        base_url=hub.base_url,
        credential=hub.credential,
    ).id
    for name, cents in (("Acme Dental", 120_000), ("Globex Clinics", 56_000), ("Initech", 9_900)):
        clients.create_client(ctx, admin, scope, name=name, arr_cents=cents)
    syncs.put_sync(ctx, admin, scope, ref, "clients", "outbound", enabled=True)
    hub.fake.rename_property("companies", "annualrevenue", "annual_revenue")
    sign_in(page, people.admin)
    page.goto(f"/console/settings/integrations/{ref}")
    run_now(page, ctx)
    expect(page.get_by_role("heading", name="Run")).to_contain_text("partial")
    expect(page.get_by_text("0 synced, 0 skipped, 3 failed")).to_be_visible()
    page.get_by_label("Outcome").select_option("failed")
    page.get_by_label("Local id, remote id or name").fill("Globex")
    page.get_by_role("button", name="Show").click()
    row = page.get_by_role("row", name="Globex Clinics")
    expect(row).to_contain_text('Property \\"annualrevenue\\" does not exist')
    expect(row).to_contain_text("VALIDATION_ERROR")
    expect(page.get_by_role("row", name="Initech")).to_have_count(0)
    row.get_by_text("Request and response").click()
    expect(row.locator("pre")).to_contain_text("annualrevenue")
    expect(row.locator("pre")).not_to_contain_text(hub.credential["api_key"])
    shoot(page, "run-failed-records")
    page.get_by_role("link", name="Our HubSpot").click()
    expect(page.locator(".flash.problem")).to_have_text("last run: 3 of 3 records failed")


def connect(ctx: Context, people: People, hub: HubSpotPeer) -> tuple[Actor, Scope, str]:
    admin = Actor(label=f"user:{people.admin}")
    scope = Scope(people.org_id)
    ref = connections.create(
        ctx,
        admin,
        scope,
        provider="hubspot",
        name="Our HubSpot",
        base_url=hub.base_url,
        credential=hub.credential,
    ).id
    return admin, scope, ref


def test_a_filter_that_skips_shows_in_test_with_one_record_with_the_values(
    page: Page, ctx: Context, people: People, hub: HubSpotPeer
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    broken = watch_csp(page)
    admin, scope, ref = connect(ctx, people, hub)
    [small] = hub.fake.seed("companies", [{"name": "Small Co", "annualrevenue": "500"}])
    filters = [
        {"field": "name", "op": "exists"},
        {"field": "annualrevenue", "op": "gte", "value": 1000},
    ]
    syncs.put_sync(ctx, admin, scope, ref, "clients", "inbound", enabled=True, filters=filters)
    sign_in(page, people.admin)
    page.goto(f"/console/settings/integrations/{ref}")
    run_now(page, ctx)
    expect(page.get_by_text("0 synced, 1 skipped, 0 failed")).to_be_visible()
    page.get_by_role("link", name="Our HubSpot").click()
    page.locator("#test-record_type").select_option("clients")
    page.locator("#test-direction").select_option("inbound")
    page.get_by_label("Record id").fill(small)
    expect(page.get_by_label("Dry run (write nothing)")).to_be_checked()
    page.get_by_role("button", name="Test record").click()
    expect(page.get_by_role("heading", name="Test clients inbound")).to_contain_text("skipped")
    rows = page.locator("table.steps tbody tr").filter(has_text="filter")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".status")).to_have_text("passed")
    expect(rows.nth(1).locator(".status")).to_have_text("skipped")
    expect(rows.nth(1)).to_contain_text("filters[1] annualrevenue gte 1000: the record holds '500'")
    rows.nth(1).get_by_text("Data").click()
    expect(rows.nth(1).locator("pre")).to_contain_text('"tested": "500"')
    expect(page.locator("body")).not_to_contain_text(hub.credential["api_key"])
    shoot(page, "test-record-filter")
    assert clients.list_clients(ctx, scope).data == []  # a dry run wrote nothing
    assert broken == []


def test_a_direction_turned_off_is_named_by_diagnose_with_who_and_when(
    page: Page, ctx: Context, people: People, hub: HubSpotPeer
) -> None:
    """Case 2, "my engagements stopped syncing to my CRM": the admin edits clients inbound
    and turns engagements outbound off."""
    page.set_viewport_size({"width": 1280, "height": 900})
    _, scope, ref = connect(ctx, people, hub)
    owner = Actor(label=f"user:{people.owner}")
    client = clients.create_client(ctx, owner, scope, name="Acme Corp")
    engagements.create_engagement(
        ctx, owner, scope, client_ref=client.ref, kind=EngagementKind.CALL, subject="Kickoff call"
    )
    for record_type in ("clients", "engagements"):
        syncs.put_sync(ctx, owner, scope, ref, record_type, "outbound", enabled=True)
    sign_in(page, people.admin)
    page.goto(f"/console/settings/integrations/{ref}")
    run_now(page, ctx)
    expect(page.get_by_role("heading", name="Run")).to_contain_text("succeeded")
    page.get_by_role("link", name="Our HubSpot").click()
    page.get_by_role("link", name="Edit clients inbound").click()
    page.get_by_label("Filters").fill('[{"field": "name", "op": "exists"}]')
    page.get_by_role("button", name="Save sync").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    page.get_by_role("link", name="Our HubSpot").click()
    page.get_by_role("button", name="Turn off engagements outbound").click()
    expect(page.get_by_text("Sync turned off")).to_be_visible()
    engagements.create_engagement(
        ctx, owner, scope, client_ref=client.ref, kind=EngagementKind.NOTE, subject="Renewal notes"
    )
    run_now(page, ctx)
    page.get_by_role("link", name="Our HubSpot").click()
    expect(page.locator(".issues")).to_contain_text("direction-off")
    page.get_by_role("button", name="Diagnose").click()
    direction = page.locator(".checks > li").filter(has_text="direction-and-filters")
    expect(direction).to_contain_text("engagements outbound is turned off")
    changes = page.locator(".checks > li").filter(has_text="recent-changes")
    expect(changes.locator(".status")).to_have_text("problem")
    expect(changes).to_contain_text("changed sync:engagements:outbound at")
    expect(changes).to_contain_text(people.admin)
    expect(changes).to_contain_text("while also editing sync:clients:inbound)")
    expect(page.locator("pre.bundle").first).to_contain_text("Renewal notes")
    shoot(page, "diagnose-direction-off")
