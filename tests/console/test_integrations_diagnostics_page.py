"""Diagnostics in Settings → Integrations over HTTP, on SQLite and PostgreSQL, against the
HubSpot fake: the connection's open issues with their bundles, test with one record (every
step, the filter and the values it tested), diagnose (the four checks and the bundle, shown
and downloadable, no secret), a refused form keeps what was typed, CSRF, roles."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from keyrack.domain.tenancy import Scope
from keyrack.services.context import Actor, Context
from keyrack.services.crm import clients, contacts
from keyrack.services.integrations import syncs
from tests.conftest import MutableClock
from tests.integrations.peers import HubSpotPeer

from .conftest import Browser, People
from .integrations_setup import PAGE, hub, hubspot_stage
from .test_integrations_page import add, run_now, turn

__all__ = ["hub", "hubspot_stage"]

ISSUE_BUNDLE = r"/issues/(iss_[0-9A-Za-z]+)/bundle\.json"


def test_a_revoked_key_opens_an_issue_and_diagnose_names_the_credential(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    token = hub.credential["api_key"]
    hub.fake.seed("companies", [{"name": "Acme"}])
    turn(browser, ref, "clients", "inbound", True)
    run_now(browser, ctx, ref)
    assert "Open issues" not in browser.get(f"{PAGE}/{ref}").text

    hub.refuse()
    run_now(browser, ctx, ref)
    page = browser.get(f"{PAGE}/{ref}")
    assert "Open issues" in page.text and "since " in page.text
    found = re.search(ISSUE_BUNDLE, page.text)
    assert found is not None, page.text
    stored = browser.get(f"{PAGE}/{ref}/issues/{found.group(1)}/bundle.json")
    assert stored.status_code == 200 and "attachment" in stored.headers["content-disposition"]
    assert json.loads(stored.text)["integration"]["id"] == ref
    as_md = browser.get(f"{PAGE}/{ref}/issues/{found.group(1)}/bundle.md")
    assert as_md.status_code == 200 and ref in as_md.text
    assert browser.get(f"{PAGE}/{ref}/issues/iss_nothere/bundle.json").status_code == 404

    diagnosed = browser.post(f"{PAGE}/{ref}/diagnose", {"record_type": "", "direction": ""})
    assert diagnosed.status_code == 200, diagnosed.text
    text = diagnosed.text
    for name in ("credentials", "direction-and-filters", "recent-changes", "single-record"):
        assert f"<strong>{name}</strong>" in text
    assert 'status-problem">problem<' in text and "the credential is unauthorized" in text
    assert '<pre class="bundle">' in text
    assert f'href="{PAGE}/{ref}/diagnose/bundle.json" download' in text
    for fmt, kind in (("json", "application/json"), ("md", "text/markdown")):
        got = browser.get(f"{PAGE}/{ref}/diagnose/bundle.{fmt}")
        assert got.status_code == 200 and got.headers["content-type"].startswith(kind)
        assert f'filename="keyrack-diagnosis-{ref}.{fmt}"' in got.headers["content-disposition"]
        assert "unauthorized" in got.text and token not in got.text
    for shown in (page.text, text, stored.text, as_md.text):
        assert token not in shown

    browser.get(f"{PAGE}/{ref}")
    browser.post(f"{PAGE}/{ref}/credential", {"api_key": hub.fake.private_app_token()})
    run_now(browser, ctx, ref)
    assert "Open issues" not in browser.get(f"{PAGE}/{ref}").text


def test_test_with_one_record_shows_the_filter_that_skips_and_the_values(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    [small] = hub.fake.seed("companies", [{"name": "Small Co", "annualrevenue": "500"}])
    browser.get(f"{PAGE}/{ref}/syncs/clients/inbound")
    filters = [{"field": "annualrevenue", "op": "gte", "value": 1000}]
    saved = browser.post(
        f"{PAGE}/{ref}/syncs/clients/inbound",
        {"enabled": "yes", "schedule_seconds": "0", "filters": json.dumps(filters)},
    )
    assert saved.status_code == 303, saved.text
    page = browser.get(f"{PAGE}/{ref}")
    assert 'name="dry_run" value="yes" checked' in page.text  # a dry run by default
    form = {"record_type": "clients", "direction": "inbound", "record_id": small, "dry_run": "yes"}
    tested = browser.post(f"{PAGE}/{ref}/test-record", form)
    assert tested.status_code == 200, tested.text
    assert 'status-skipped">skipped<' in tested.text and "A dry run" in tested.text
    assert "filters[0] annualrevenue gte 1000: the record holds &#39;500&#39;" in tested.text
    assert "&#34;tested&#34;: &#34;500&#34;" in tested.text
    for step in ("sync", "credential", "load", "filter"):
        assert f'<th scope="row">{step}</th>' in tested.text
    assert hub.credential["api_key"] not in tested.text
    assert clients.list_clients(ctx, Scope(people.org_id)).data == []  # a dry run wrote nothing

    browser.get(f"{PAGE}/{ref}/syncs/clients/inbound")
    browser.post(
        f"{PAGE}/{ref}/syncs/clients/inbound",
        {"enabled": "yes", "schedule_seconds": "0", "filters": "[]"},
    )
    browser.get(f"{PAGE}/{ref}")
    passed = browser.post(f"{PAGE}/{ref}/test-record", form)
    assert 'status-would-sync">would-sync<' in passed.text
    assert "&#34;before&#34;" in passed.text and "&#34;after&#34;" in passed.text


def test_a_refused_test_or_diagnosis_keeps_what_was_typed(
    browser: Browser, people: People, hub: HubSpotPeer
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    browser.get(f"{PAGE}/{ref}")
    empty = browser.post(
        f"{PAGE}/{ref}/test-record",
        {"record_type": "contacts", "direction": "outbound", "record_id": " "},
    )
    assert empty.status_code == 400 and 'role="alert">record_id' in empty.text
    assert '<option value="contacts" selected>' in empty.text
    assert '<option value="outbound" selected>' in empty.text
    assert 'name="dry_run" value="yes">' in empty.text  # unticked stays unticked
    wrong = browser.post(
        f"{PAGE}/{ref}/test-record",
        {"record_type": "invoices", "direction": "inbound", "record_id": "x", "dry_run": "yes"},
    )
    assert wrong.status_code == 400 and 'value="x"' in wrong.text
    bad = browser.post(f"{PAGE}/{ref}/diagnose", {"record_type": "invoices", "direction": ""})
    assert bad.status_code == 400 and "record_type must be one of" in bad.text
    assert browser.get(f"{PAGE}/{ref}/diagnose/bundle.json?record_type=x").status_code == 400
    assert browser.get(f"{PAGE}/{ref}/diagnose/bundle.txt").status_code in (400, 404)


def test_a_direction_turned_off_is_named_with_who_and_when(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    scope = Scope(people.org_id)
    admin = Actor(label=f"user:{people.admin}")
    client = clients.create_client(ctx, admin, scope, name="Acme Corp")
    contacts.create_contact(ctx, admin, scope, client_ref=client.ref, name="Ada", email="a@x.test")
    for record_type in ("clients", "contacts"):
        syncs.put_sync(ctx, admin, scope, ref, record_type, "outbound", enabled=True)
    run_now(browser, ctx, ref)
    clock.advance(timedelta(hours=3))
    browser.sign_in(people.admin)  # the session has idled out meanwhile
    turn(browser, ref, "contacts", "outbound", False)
    clock.advance(timedelta(hours=1))
    contacts.create_contact(
        ctx, admin, scope, client_ref=client.ref, name="Grace", email="g@x.test"
    )
    browser.sign_in(people.admin)
    run_now(browser, ctx, ref)
    page = browser.get(f"{PAGE}/{ref}")
    assert "Open issues" in page.text and "direction-off" in page.text
    found = browser.post(f"{PAGE}/{ref}/diagnose", {"record_type": "", "direction": ""})
    assert found.status_code == 200
    assert "changed sync:contacts:outbound at" in found.text and people.admin in found.text
    assert "Grace" in found.text


def test_the_diagnostics_forms_need_csrf_and_members_get_403(
    browser: Browser, people: People, hub: HubSpotPeer
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    for url in (f"{PAGE}/{ref}/test-record", f"{PAGE}/{ref}/diagnose"):
        assert browser.post(url, {"record_id": "x"}, csrf=False).status_code == 403, url
    browser.sign_in(people.member)
    for url in (f"{PAGE}/{ref}/diagnose/bundle.json", f"{PAGE}/{ref}/issues/iss_x/bundle.md"):
        assert browser.get(url).status_code == 403, url
    for url in (f"{PAGE}/{ref}/test-record", f"{PAGE}/{ref}/diagnose"):
        assert browser.post(url, {"record_id": "x"}).status_code == 403, url
