"""Console layout in headless Chromium, on the screenshots' realistic data: at a phone's
width no page scrolls sideways, and at a laptop's the key table shows every column.

Every page of the navigation (and the pages under Settings → API), as an organization
admin and as platform staff. SQLite only, like the other browser tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page

from keyrack.services.context import Context
from tests.conftest import MutableClock

from .screenshots import seed
from .screenshots import sign_in as sign_in_as
from .test_browser import CHROMIUM, chromium, database_url  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]

ADMIN = "ann@acme.test"
STAFF = "ops@keyrack.test"
UNDER_SETTINGS_API = (
    "/console/settings/api/new",
    "/console/settings/api/production",
    "/console/settings/api/webhooks",
)
WIDER_THAN_THE_WINDOW = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .filter((el) => !el.closest(".tablewrap") || el.matches(".tablewrap"))
    .map((el) => el.tagName.toLowerCase() + (el.className ? "." + el.className : ""))
    .slice(0, 5);
}"""
"""Elements reaching past the window (inside a table's scrolling wrapper, only the
wrapper counts: scrolling a wide table within it is the point of it)."""


@pytest.fixture
def seeded(ctx: Context, clock: MutableClock) -> Context:
    seed(ctx, clock)
    return ctx


@contextmanager
def page_at(browser: Browser, live_url: str, width: int, email: str) -> Iterator[Page]:
    context = browser.new_context(base_url=live_url, viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        sign_in_as(page, email)
        page.wait_for_url("**/console**")
        yield page
    finally:
        context.close()


def pages_of(page: Page) -> list[str]:
    """The navigation's pages, and those under Settings → API when it is there."""
    links = page.get_by_role("navigation", name="Main").get_by_role("link")
    hrefs = [str(links.nth(i).get_attribute("href")) for i in range(links.count())]
    if "/console/settings/api" in hrefs:
        page.goto("/console/settings/api")
        key = page.locator("table.keys tbody th a").first.get_attribute("href")
        hrefs += [*UNDER_SETTINGS_API, str(key)]
    return hrefs


@pytest.mark.parametrize("email", [ADMIN, STAFF])
def test_no_page_scrolls_sideways_at_390_px(
    chromium: Browser,  # noqa: F811
    live_url: str,
    seeded: Context,
    email: str,
) -> None:
    with page_at(chromium, live_url, 390, email) as page:
        hrefs = pages_of(page)
        assert len(hrefs) >= 4
        overflowing = {}
        for href in hrefs:
            page.goto(href)
            scroll = page.evaluate("document.documentElement.scrollWidth")
            wide = page.evaluate(WIDER_THAN_THE_WINDOW)
            if scroll > 390 or wide:
                overflowing[href] = (scroll, wide)
        assert overflowing == {}


def test_the_key_table_shows_its_last_column_at_1280_px(
    chromium: Browser,  # noqa: F811
    live_url: str,
    seeded: Context,
) -> None:
    with page_at(chromium, live_url, 1280, ADMIN) as page:
        page.goto("/console/settings/api")
        wrapper = page.locator(".tablewrap").first
        scroll, client = wrapper.evaluate("(el) => [el.scrollWidth, el.clientWidth]")
        assert scroll <= client, "the key table scrolls within its wrapper"
        last = page.locator("table.keys thead th").last
        assert last.inner_text().strip().lower() == "expires"
        box, frame = last.bounding_box(), wrapper.bounding_box()
        assert box is not None and frame is not None
        assert box["x"] + box["width"] <= frame["x"] + frame["width"] + 0.5
