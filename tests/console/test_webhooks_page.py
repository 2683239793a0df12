"""Settings → API → Webhooks over HTTP, on SQLite and PostgreSQL: register (the secret
shown once), refused input kept, deliveries paged, redelivery, delete, CSRF, roles."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import insert, select

from keyrack.domain.tenancy import Scope
from keyrack.services import keys
from keyrack.services.context import Context
from keyrack.storage.tables.webhooks import WebhookDelivery
from tests.conftest import OPERATOR, MutableClock

from .conftest import Browser, People

PAGE = "/console/settings/api/webhooks"
SIGNING_SECRET = re.compile(r"whsec_[0-9A-Za-z_-]{20,}")


def register(browser: Browser, **form: object) -> str:
    browser.get(PAGE)
    added = browser.post(PAGE, {"url": "https://hooks.example.test/keyrack", **form})
    assert added.status_code == 201, added.text
    found = re.search(r'href="/console/settings/api/webhooks/(\d+)"', added.text)
    assert found is not None
    return found.group(1)


def test_registering_shows_the_signing_secret_once(browser: Browser, people: People) -> None:
    browser.sign_in(people.admin)
    assert 'href="/console/settings/api/webhooks"' in browser.get("/console/settings/api").text
    browser.get(PAGE)
    added = browser.post(
        PAGE,
        {"url": "https://hooks.example.test/keyrack", "events": ["key.revoked", "key.leaked"]},
    )
    assert added.status_code == 201
    secrets = set(SIGNING_SECRET.findall(added.text))
    assert len(secrets) == 1
    listing = browser.get(PAGE)
    assert "https://hooks.example.test/keyrack" in listing.text
    assert "key.leaked, key.revoked" in listing.text
    assert secrets.pop() not in listing.text and not SIGNING_SECRET.search(listing.text)


def test_a_refused_webhook_keeps_what_was_typed(browser: Browser, people: People) -> None:
    browser.sign_in(people.admin)
    browser.get(PAGE)
    refused = browser.post(
        PAGE,
        {"url": "ftp://files.example.test/x", "description": "Ops pager", "events": ["key.leaked"]},
    )
    assert refused.status_code == 400
    assert 'role="alert"' in refused.text
    assert 'value="ftp://files.example.test/x"' in refused.text
    assert 'value="Ops pager"' in refused.text
    assert 'value="key.leaked" checked' in refused.text
    assert 'value="*" checked' not in refused.text


def test_deliveries_are_paged_and_one_can_be_sent_again(
    browser: Browser, people: People, ctx: Context, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    endpoint = int(register(browser))
    with ctx.db.transaction() as session:  # an older backlog of 55 failed deliveries
        session.execute(
            insert(WebhookDelivery),
            [
                {
                    "endpoint_id": endpoint,
                    "event_id": f"evt_old_{n:02}",
                    "event_type": "key.expiring",
                    "payload": {},
                    "status": "failed",
                    "attempts": 8,
                    "last_status_code": 502,
                    "created_at": clock() - timedelta(days=1),
                }
                for n in range(55)
            ],
        )
    # then a key made and revoked: two deliveries (key.created, key.revoked), the newest
    revoked, _ = keys.create_key(ctx, OPERATOR, Scope(people.org_id), name="Gone soon")
    keys.revoke_key(ctx, OPERATOR, Scope(people.org_id), revoked.ref, reason="retired")
    first = browser.get(f"{PAGE}/{endpoint}")
    assert first.status_code == 200
    assert first.text.count("Redeliver<") == 50
    assert "key.revoked" in first.text  # newest first
    assert "HTTP 502" in first.text
    more = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert more is not None
    second = browser.get(more.group(1).replace("&amp;", "&"))
    assert second.text.count("Redeliver<") == 7 and "evt_old_00" in second.text

    oldest = re.search(
        r'action="(/console/settings/api/webhooks/deliveries/(\d+)/redeliver)"', second.text
    )
    assert oldest is not None
    sent = browser.post(oldest.group(1), {})
    assert (sent.status_code, sent.headers["location"]) == (
        303,
        f"{PAGE}/{endpoint}?notice=redelivered",
    )
    with ctx.db.session() as session:
        again = session.get(WebhookDelivery, int(oldest.group(2)))
        assert again is not None and (again.status, again.attempts) == ("pending", 0)


def test_deleting_stops_the_endpoint(browser: Browser, people: People, ctx: Context) -> None:
    browser.sign_in(people.admin)
    endpoint = register(browser)
    deleted = browser.post(f"{PAGE}/{endpoint}/delete", {})
    assert (deleted.status_code, deleted.headers["location"]) == (303, f"{PAGE}?notice=deleted")
    assert "hooks.example.test" not in browser.get(PAGE).text
    assert browser.get(f"{PAGE}/{endpoint}").status_code == 404


def test_every_webhook_form_needs_the_csrf_token_and_an_admin(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    endpoint = register(browser)
    with ctx.db.session() as session:
        assert session.scalars(select(WebhookDelivery)).first() is None
    for url in (PAGE, f"{PAGE}/{endpoint}/delete", f"{PAGE}/deliveries/1/redeliver"):
        refused = browser.post(url, {"url": "https://x.example.test/"}, csrf=False)
        assert refused.status_code == 403, url
    assert "hooks.example.test" in browser.get(PAGE).text  # nothing was deleted

    browser.sign_in(people.member)
    assert browser.get(PAGE).status_code == 403
