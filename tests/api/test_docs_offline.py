"""``/docs`` in headless Chromium with nothing but this machine: Swagger UI renders every
operation from files Keyrack serves, under its strict CSP, and no request leaves the
server's origin (any that tried would be aborted and fail the test)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Route, expect, sync_playwright

from tests.console.test_browser import ARGS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


@pytest.fixture
def database_url(_sqlite_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "keyrack.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def test_docs_render_every_operation_offline_within_the_csp(
    chromium: Browser, live_url: str
) -> None:
    document = httpx.get(f"{live_url}/api/v2/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    context = chromium.new_context(base_url=live_url)
    elsewhere: list[str] = []
    violations: list[str] = []

    def only_here(route: Route) -> None:
        if route.request.url.startswith(live_url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    try:
        context.route("**/*", only_here)
        page = context.new_page()
        page.on("console", on_console)
        response = page.goto("/docs")
        assert response is not None and response.status == 200
        assert "script-src 'self';" in response.headers["content-security-policy"]
        expect(page.locator(".opblock").first).to_be_visible()
        expect(page.locator(".opblock")).to_have_count(operations)
        expect(page.get_by_text("listClients", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    finally:
        context.close()
    assert elsewhere == []
    assert violations == []


def test_docs_assets_are_only_the_ones_the_page_names(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200 and "<script>" not in page.text
    assert (
        api.get("/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    )
    assert api.get("/docs/../pyproject.toml").status_code == 404
    assert api.get("/docs/redoc.standalone.js").status_code == 404
