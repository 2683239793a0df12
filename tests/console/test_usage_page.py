"""Usage on the console: an SVG chart on the key's page, the busiest keys on Settings → API."""

from __future__ import annotations

from datetime import timedelta

from keyrack.domain import usage
from keyrack.domain.tenancy import Scope
from keyrack.domain.usage import Granularity
from keyrack.services import key_usage, keys
from keyrack.services.context import Context
from tests.conftest import OPERATOR
from tests.console.conftest import Browser, People


def test_the_key_page_charts_its_usage_and_settings_api_sums_it_up(
    ctx: Context, browser: Browser, people: People
) -> None:
    view, _ = keys.create_key(ctx, OPERATOR, Scope(people.org_id), name="Busy integration")
    hour = Granularity.HOUR.floor(ctx.clock())
    counts = usage.new_tally()
    for status in (200, 200, 200, 429):
        usage.tally(counts, status, 0.004)
    key_usage.record(ctx, {(view.id, hour - timedelta(hours=2)): counts}, {})
    browser.sign_in(people.admin)

    page = browser.get(f"/console/settings/api/keys/{view.ref}")
    assert page.status_code == 200
    assert "<svg" in page.text and 'role="img"' in page.text
    assert "4 requests, 3 succeeded, 1 rate-limited (429)" in page.text
    assert page.text.count("<rect") == 2  # one bar: its successes and its 429
    assert "p50 5 ms" in page.text

    listing = browser.get("/console/settings/api")
    assert "Usage, last 24 hours" in listing.text
    assert "Busy integration</a></th><td>4</td><td>3</td><td>1</td>" in listing.text
