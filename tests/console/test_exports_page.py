"""Settings → Exports over HTTP, on SQLite and PostgreSQL: start an export, the list paged
50, its progress once the job ran, the download (the API's bytes), the 409 with the form
kept, cancel, CSRF, roles."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import insert

from keyrack.domain.tenancy import Scope
from keyrack.services import keys
from keyrack.services.context import Context
from keyrack.storage.tables.exports import Export
from tests.conftest import OPERATOR, MutableClock
from tests.crm.conftest import CRM
from tests.exports.conftest import drain

from .conftest import Browser, People

PAGE = "/console/settings/exports"
EXPORT_REF = re.compile(r"exp_[0-9A-Za-z]{26}")


@pytest.fixture
def key(ctx: Context, people: People, api: httpx.Client) -> dict[str, str]:
    """A key of the organization that may export, and three clients made with it."""
    _, secret = keys.create_key(
        ctx,
        OPERATOR,
        Scope(people.org_id),
        name="Exports",
        permissions=(*CRM, "exports:create"),
    )
    headers = {"X-API-Key": secret}
    for name in ("Acme, Inc.", "Zürich Ünits", 'The "Best" Co'):
        made = api.post("/api/v2/clients", json={"name": name}, headers=headers)
        assert made.status_code == 201, made.text
    return headers


def start(browser: Browser, **form: object) -> str:
    """Start an export from the page's form; the ref of the newest export listed."""
    browser.get(PAGE)
    started = browser.post(PAGE, {"resource": "clients", "format": "csv", **form})
    assert (started.status_code, started.headers["location"]) == (303, f"{PAGE}?notice=started")
    listing = browser.get(started.headers["location"])
    assert 'role="status"' in listing.text
    found = EXPORT_REF.search(listing.text)
    assert found is not None
    return found.group(0)


def test_an_export_started_here_shows_its_progress_and_downloads_the_apis_bytes(
    browser: Browser, people: People, ctx: Context, api: httpx.Client, key: dict[str, str]
) -> None:
    browser.sign_in(people.admin)
    assert (
        f'href="{PAGE}"' in browser.get("/console", follow_redirects=True).text
    )  # in the navigation
    ref = start(browser, gzip="true")
    waiting = browser.get(PAGE).text
    assert "queued" in waiting and "Cancel<" in waiting and "/download" not in waiting
    assert api.get(f"/api/v2/exports/{ref}", headers=key).json()["gzip"] is True

    drain(ctx)
    done = browser.get(PAGE)
    assert done.status_code == 200
    assert "succeeded" in done.text and "3 of 3 rows" in done.text and "Cancel<" not in done.text
    assert f'href="{PAGE}/{ref}/download"' in done.text

    file = browser.get(f"{PAGE}/{ref}/download")
    assert file.status_code == 200
    assert file.headers["content-type"] == "application/gzip"
    assert file.headers["content-disposition"].startswith('attachment; filename="')
    assert file.headers["content-length"] == str(len(file.content))
    from_api = api.get(f"/api/v2/exports/{ref}/download", headers=key)
    assert from_api.status_code == 200 and file.content == from_api.content
    assert f"{len(file.content)} Bytes" in done.text


def test_a_second_export_while_one_waits_is_refused_with_its_id_and_the_form_kept(
    browser: Browser, people: People, key: dict[str, str]
) -> None:
    browser.sign_in(people.admin)
    first = start(browser)
    refused = browser.post(
        PAGE,
        {
            "resource": "clients",
            "format": "ndjson",
            "gzip": "true",
            "updated_since": "2026-01-01T00:00:00Z",
        },
    )
    assert refused.status_code == 409
    alert = re.search(r'role="alert">([^<]+)<', refused.text)
    assert alert is not None and first in alert.group(1)
    assert '<option value="clients" selected>' in refused.text
    assert '<option value="ndjson" selected>' in refused.text
    assert 'value="true" checked' in refused.text
    assert 'value="2026-01-01T00:00:00Z"' in refused.text

    bad_time = browser.post(
        PAGE, {"resource": "contacts", "format": "csv", "updated_since": "last tuesday"}
    )
    assert bad_time.status_code == 400 and 'role="alert"' in bad_time.text
    assert '<option value="contacts" selected>' in bad_time.text
    assert 'value="last tuesday"' in bad_time.text
    naive = browser.post(
        PAGE, {"resource": "contacts", "format": "csv", "updated_since": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 400 and "UTC offset" in naive.text
    assert set(EXPORT_REF.findall(browser.get(PAGE).text)) == {first}  # nothing else began


def test_canceling_stops_a_queued_export(
    browser: Browser, people: People, ctx: Context, api: httpx.Client, key: dict[str, str]
) -> None:
    browser.sign_in(people.admin)
    ref = start(browser)
    canceled = browser.post(f"{PAGE}/{ref}/cancel", {})
    assert (canceled.status_code, canceled.headers["location"]) == (303, f"{PAGE}?notice=canceled")
    listing = browser.get(canceled.headers["location"]).text
    assert "canceled" in listing and "Cancel<" not in listing and "/download" not in listing
    drain(ctx)
    assert api.get(f"/api/v2/exports/{ref}", headers=key).json()["status"] == "canceled"
    assert browser.post(f"{PAGE}/{ref}/cancel", {}).status_code == 409  # ended already
    assert browser.get(f"{PAGE}/{ref}/download").status_code == 409
    assert browser.get(f"{PAGE}/exp_nosuchexport/download").status_code == 404
    assert start(browser) != ref  # the slot is free again


def test_every_export_form_needs_the_csrf_token_and_an_admin(
    browser: Browser, people: People, api: httpx.Client, key: dict[str, str]
) -> None:
    browser.sign_in(people.owner)
    ref = start(browser)
    for url in (PAGE, f"{PAGE}/{ref}/cancel"):
        refused = browser.post(url, {"resource": "contacts", "format": "csv"}, csrf=False)
        assert refused.status_code == 403, url
    shown = api.get("/api/v2/exports", headers=key).json()["data"]
    assert [(e["id"], e["status"]) for e in shown] == [(ref, "queued")]

    browser.sign_in(people.member)
    assert f'href="{PAGE}"' not in browser.get("/console", follow_redirects=True).text
    assert browser.get(PAGE).status_code == 403
    assert browser.get(f"{PAGE}/{ref}/download").status_code == 403
    assert browser.post(PAGE, {"resource": "contacts", "format": "csv"}).status_code == 403
    assert browser.post(f"{PAGE}/{ref}/cancel", {}).status_code == 403
    assert len(api.get("/api/v2/exports", headers=key).json()["data"]) == 1


def test_the_list_is_paged_fifty_newest_first(
    browser: Browser, people: People, ctx: Context, clock: MutableClock
) -> None:
    with ctx.db.transaction() as session:  # 55 old failed exports
        session.execute(
            insert(Export),
            [
                {
                    "ref": f"exp_{n:026}",
                    "org_id": people.org_id,
                    "created_by": "test",
                    "resource": "contacts",
                    "format": "csv",
                    "gzip": False,
                    "filters": {},
                    "status": "failed",
                    "error": "disk on fire",
                    "rows_done": 0,
                    "bytes": 0,
                    "created_at": clock() - timedelta(days=1),
                }
                for n in range(55)
            ],
        )
    browser.sign_in(people.admin)
    newest = start(browser)
    first = browser.get(PAGE)
    assert first.text.count('<th scope="row">') == 50
    assert newest in first.text and "disk on fire" in first.text
    more = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert more is not None
    second = browser.get(more.group(1).replace("&amp;", "&"))
    assert second.text.count('<th scope="row">') == 6
    assert f"exp_{0:026}" in second.text and newest not in second.text
