"""Settings → Integrations over HTTP, on SQLite and PostgreSQL, against the HubSpot fake:
add a connection (the credential never shown again), a revoked key at a glance,
reauthorize, the enabled switch, filters and mappings saved into the change history,
runs as a chart, a run's records by outcome and search, retry failed, CSRF, roles."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import insert, select

from keyrack.domain.tenancy import Role, Scope
from keyrack.services import tenancy
from keyrack.services.context import Context
from keyrack.services.integrations import connections, syncs
from keyrack.storage.tables.integrations import Integration, SyncRun, SyncRunRecord
from tests.conftest import OPERATOR, MutableClock
from tests.fakes.hubspot import INVALID_AUTHENTICATION
from tests.integrations.peers import HubSpotPeer

from .conftest import PASSWORD, Browser, People
from .integrations_setup import PAGE, REF, RUN, drain, hub, hubspot_stage

__all__ = ["hub", "hubspot_stage"]


def add(browser: Browser, hub: HubSpotPeer, name: str = "Our HubSpot") -> str:
    browser.get(PAGE)
    added = browser.post(
        PAGE,
        {
            "provider": "hubspot",
            "name": name,
            "base_url": hub.base_url,
            "api_key": hub.credential["api_key"],
        },
    )
    assert added.status_code == 303, added.text
    found = REF.search(added.headers["location"])
    assert found is not None
    return found.group(0)


def run_now(browser: Browser, ctx: Context, ref: str) -> str:
    browser.get(f"{PAGE}/{ref}")
    queued = browser.post(f"{PAGE}/{ref}/runs", {})
    assert queued.status_code == 303, queued.text
    found = RUN.search(queued.headers["location"])
    assert found is not None
    drain(ctx)
    return found.group(0)


def turn(browser: Browser, ref: str, record_type: str, direction: str, on: bool) -> None:
    browser.get(f"{PAGE}/{ref}")
    switched = browser.post(
        f"{PAGE}/{ref}/syncs/{record_type}/{direction}/enabled", {"enabled": "on" if on else "off"}
    )
    assert switched.status_code == 303, switched.text


def test_adding_a_connection_probes_it_and_never_shows_the_credential(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    assert 'href="/console/settings/integrations"' in browser.get("/console/settings/api").text
    token = hub.credential["api_key"]
    ref = add(browser, hub)
    page = browser.get(f"{PAGE}/{ref}?notice=created")
    assert page.status_code == 200
    assert "Our HubSpot" in page.text and 'status-active">active<' in page.text
    for name in ("clients", "contacts"):
        for direction in ("inbound", "outbound"):
            assert f"/syncs/{name}/{direction}/enabled" in page.text
    listing = browser.get(PAGE)
    assert f'href="{PAGE}/{ref}"' in listing.text and "<small>nothing</small>" in listing.text
    changes = browser.get(f"{PAGE}/{ref}/syncs/clients/inbound")
    for shown in (page, listing, changes):
        assert token not in shown.text
    with ctx.db.session() as session:
        row = session.scalars(select(Integration)).one()
        assert row.credential_sealed is not None and token not in row.credential_sealed


def test_a_refused_connection_keeps_what_was_typed_but_not_the_credential(
    browser: Browser, people: People, hub: HubSpotPeer
) -> None:
    browser.sign_in(people.admin)
    browser.get(PAGE)
    refused = browser.post(
        PAGE,
        {
            "provider": "hubspot",
            "name": "Marketing CRM",
            "base_url": "ftp://crm.example.test/",
            "api_key": "pat-na1-typed-secret-0001",
        },
    )
    assert refused.status_code == 400
    assert 'role="alert"' in refused.text and "base_url" in refused.text
    assert 'value="Marketing CRM"' in refused.text
    assert 'value="ftp://crm.example.test/"' in refused.text
    assert 'value="hubspot" selected' in refused.text
    assert "pat-na1-typed-secret-0001" not in refused.text
    both = browser.post(
        PAGE,
        {"provider": "hubspot", "name": "X", "api_key": "a", "access_token": "b"},
    )
    assert both.status_code == 400 and "not both" in both.text


def test_a_revoked_key_shows_at_a_glance_and_reauthorizing_recovers(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    hub.fake.seed("companies", [{"name": "Acme"}, {"name": "Globex"}])
    turn(browser, ref, "clients", "inbound", True)
    first = run_now(browser, ctx, ref)
    ran = browser.get(f"{PAGE}/{ref}/runs/{first}")
    assert (
        'status-succeeded">succeeded<' in ran.text and "2 synced, 0 skipped, 0 failed" in ran.text
    )

    hub.refuse()  # the far side revokes the private-app token
    hub.fake.seed("companies", [{"name": "Initech"}])
    broken = run_now(browser, ctx, ref)
    listing = browser.get(PAGE)
    assert 'status-unauthorized">unauthorized<' in listing.text
    assert f"unauthorized: {INVALID_AUTHENTICATION}" in listing.text
    page = browser.get(f"{PAGE}/{ref}")
    assert 'class="flash error problem" role="alert">unauthorized: Authentication' in page.text
    assert 'status-failed">failed<' in page.text and broken in page.text

    empty = browser.post(f"{PAGE}/{ref}/credential", {})
    assert empty.status_code == 400 and "type the new API key" in empty.text
    fresh = hub.fake.private_app_token()
    browser.get(f"{PAGE}/{ref}")
    again = browser.post(f"{PAGE}/{ref}/credential", {"api_key": fresh})
    assert (again.status_code, again.headers["location"]) == (
        303,
        f"{PAGE}/{ref}?notice=reauthorized",
    )
    page = browser.get(again.headers["location"])
    assert 'status-active">active<' in page.text and fresh not in page.text
    assert 'class="flash error problem"' not in page.text
    assert "<strong>credential</strong>" in page.text  # the change history says it changed
    last = run_now(browser, ctx, ref)
    finished = browser.get(f"{PAGE}/{ref}/runs/{last}")
    assert 'status-succeeded">succeeded<' in finished.text and "Initech" in finished.text
    assert "<small>nothing</small>" in browser.get(PAGE).text


def test_the_switch_turns_one_direction_and_every_save_is_in_the_history(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    for direction in ("inbound", "outbound"):
        turn(browser, ref, "clients", direction, True)
    turn(browser, ref, "clients", "outbound", False)
    scope = Scope(people.org_id)
    assert syncs.get_sync(
        ctx,
        scope,
        ref,
        "clients",
        "inbound",
    ).enabled
    assert not syncs.get_sync(ctx, scope, ref, "clients", "outbound").enabled

    sync = f"{PAGE}/{ref}/syncs/clients/inbound"
    form = browser.get(sync)
    assert form.status_code == 200 and 'name="enabled" value="yes" checked' in form.text
    bad = '[{"field": "annualrevenue", "op": "bigger", "value": 10}]'
    refused = browser.post(
        sync,
        {"enabled": "yes", "schedule_seconds": "600", "filters": bad, "field_mappings": ""},
    )
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    assert "bigger" in refused.text and 'value="600"' in refused.text
    broken = browser.post(
        sync, {"enabled": "yes", "schedule_seconds": "600", "filters": "[{", "field_mappings": ""}
    )
    assert (
        broken.status_code == 400
        and "not valid JSON" in broken.text
        and ">[{</textarea>" in broken.text
    )

    good = '[{"field": "annualrevenue", "op": "gte", "value": 10}]'
    mappings = '[{"local": "name", "remote": "name", "transform": "trim"}]'
    saved = browser.post(
        sync,
        {"enabled": "yes", "schedule_seconds": "600", "filters": good, "field_mappings": mappings},
    )
    assert (saved.status_code, saved.headers["location"]) == (303, f"{sync}?notice=saved")
    view = syncs.get_sync(ctx, scope, ref, "clients", "inbound")
    assert view.schedule_seconds == 600 and [f.as_dict() for f in view.filters] == [
        {"field": "annualrevenue", "op": "gte", "value": 10}
    ]
    assert [m.as_dict() for m in view.field_mappings] == [
        {"local": "name", "remote": "name", "transform": "trim"}
    ]
    shown = browser.get(f"{sync}?notice=saved")
    assert 'class="this"' in shown.text and "annualrevenue" in shown.text
    history = connections.list_changes(ctx, scope, ref).data
    assert history[0].what == "sync:clients:inbound" and history[0].actor == f"user:{people.admin}"
    assert history[0].after is not None and set(history[0].after) == {
        "filters",
        "field_mappings",
        "schedule_seconds",
    }
    assert sum(c.what == "sync:clients:outbound" for c in history) == 2  # on, then off


def test_a_runs_records_filter_search_page_and_retry(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    with ctx.db.transaction() as session:
        integration = session.scalars(select(Integration)).one()
        runs_made = []
        for n in range(3):
            run = SyncRun(
                ref=f"run_0000000000000{n}",
                integration_id=integration.id,
                status="partial",
                trigger="schedule",
                requested_by="schedule",
                counts={"clients": {"inbound": {"synced": 40 + n, "skipped": 5, "failed": 15}}},
                api_calls=3,
                rate_limit_wait_seconds=0.0,
                watermark_before={},
                watermark_after={},
                done={},
                created_at=clock() - timedelta(hours=3 - n),
            )
            session.add(run)
            runs_made.append(run)
        session.flush()
        last = runs_made[-1]
        session.execute(
            insert(SyncRunRecord),
            [
                {
                    "run_id": last.id,
                    "record_type": "clients",
                    "direction": "inbound",
                    "local_id": f"cli_{n:04}" if n % 3 else None,
                    "remote_id": str(9000 + n),
                    "name": f"Company {n}",
                    "outcome": ("synced", "skipped", "failed")[n % 3],
                    "result": "created" if n % 3 == 0 else None,
                    "skip": {
                        "index": 0,
                        "filter": {"field": "annualrevenue", "op": "gte", "value": 10},
                        "field": "annualrevenue",
                        "tested": "5",
                        "present": True,
                    }
                    if n % 3 == 1
                    else None,
                    "error_message": "Property values were not valid: annual_revenue"
                    if n % 3 == 2
                    else None,
                    "http_status": 400 if n % 3 == 2 else None,
                    "created_at": clock(),
                }
                for n in range(165)
            ],
        )
    page = browser.get(f"{PAGE}/{ref}")
    assert page.text.count('<g class="bar">') == 3
    assert (
        page.text.count('class="series-failed"') == 3
        and "42 synced, 5 skipped, 15 failed" in page.text
    )
    run = f"{PAGE}/{ref}/runs/{last.ref}"
    first = browser.get(run)
    assert first.status_code == 200 and first.text.count("Keyrack <code>") == 50
    failed = browser.get(f"{run}?outcome=failed")
    assert failed.text.count("Property values were not valid: annual_revenue") == 50
    assert "HTTP 400" in failed.text and 'value="failed" selected' in failed.text
    more = re.search(r'rel="next" href="([^"]+)"', failed.text)
    assert more is not None and "outcome=failed" in more.group(1)
    second = browser.get(more.group(1).replace("&amp;", "&"))
    assert second.text.count("Property values were not valid") == 5
    skipped = browser.get(f"{run}?outcome=skipped&q=Company+10")
    assert "Company 10<" in skipped.text and "Company 100<" in skipped.text
    assert 'annualrevenue gte 10</code>, tested <code>"5"' in skipped.text
    assert "Company 11<" not in skipped.text
    by_remote = browser.get(f"{run}?q=9004")
    assert by_remote.text.count("Company 4<") == 1 and "Company 5<" not in by_remote.text
    by_local = browser.get(f"{run}?q=cli_0007")
    assert "Company 7<" in by_local.text and "Company 8<" not in by_local.text
    assert "No record of this run matches" in browser.get(f"{run}?q=nobody").text

    retried = browser.post(f"{run}/retry", {})
    assert retried.status_code == 303
    new = RUN.search(retried.headers["location"])
    assert new is not None and new.group(0) != last.ref
    shown = browser.get(retried.headers["location"])
    assert "retrying" in shown.text and last.ref in shown.text
    busy = browser.post(f"{run}/retry", {})
    assert busy.status_code == 409 and new.group(0) in busy.text


def test_every_integrations_form_needs_the_csrf_token_and_members_get_403(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    posts = (
        PAGE,
        f"{PAGE}/{ref}/credential",
        f"{PAGE}/{ref}/runs",
        f"{PAGE}/{ref}/syncs/clients/inbound",
        f"{PAGE}/{ref}/syncs/clients/inbound/enabled",
        f"{PAGE}/{ref}/runs/run_x/retry",
    )
    for url in posts:
        refused = browser.post(url, {"name": "Sneaky", "enabled": "on"}, csrf=False)
        assert refused.status_code == 403, url
    with ctx.db.session() as session:
        assert session.scalars(select(SyncRun)).first() is None
        assert len(list(session.scalars(select(Integration)))) == 1
    browser.sign_in(people.member)
    for url in (PAGE, f"{PAGE}/{ref}", f"{PAGE}/{ref}/syncs/clients/inbound"):
        assert browser.get(url).status_code == 403, url
    assert browser.post(f"{PAGE}/{ref}/runs", {}).status_code == 403
    assert 'href="/console/settings/integrations"' not in browser.get("/console/notifications").text


def test_another_organizations_connection_is_not_found(
    browser: Browser, people: People, ctx: Context
) -> None:
    other = tenancy.create_org(ctx, OPERATOR, name="Globex", slug="globex")
    tenancy.create_user(
        ctx,
        OPERATOR,
        org_slug="globex",
        email="admin@globex.test",
        role=Role.ADMIN,
        password=PASSWORD,
    )
    theirs = connections.create(ctx, OPERATOR, Scope(other.id), provider="hubspot", name="Theirs")
    browser.sign_in(people.admin)
    assert browser.get(f"{PAGE}/{theirs.id}").status_code == 404
    listing = browser.get(PAGE)
    assert "Theirs" not in listing.text and "No connections yet" in listing.text
    browser.sign_in("admin@globex.test")
    listing = browser.get(PAGE)
    assert "Theirs" in listing.text and "no credential yet: reauthorize to connect" in listing.text


def test_a_run_whose_records_failed_is_what_is_wrong_until_a_clean_one(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    with ctx.db.transaction() as session:
        integration = session.scalars(select(Integration)).one()
        for n, (status, failed) in enumerate((("succeeded", 0), ("partial", 30))):
            session.add(
                SyncRun(
                    ref=f"run_1000000000000{n}",
                    integration_id=integration.id,
                    status=status,
                    trigger="schedule",
                    requested_by="schedule",
                    counts={"clients": {"outbound": {"synced": 30 - failed, "failed": failed}}},
                    watermark_before={},
                    watermark_after={},
                    done={},
                    created_at=clock(),
                    finished_at=clock(),
                )
            )
    line = "last run: 30 of 30 records failed"
    assert line in browser.get(PAGE).text
    assert f'role="alert">{line}</p>' in browser.get(f"{PAGE}/{ref}").text
    clock.advance(timedelta(minutes=5))
    with ctx.db.transaction() as session:
        session.add(
            SyncRun(
                ref="run_10000000000009",
                integration_id=integration.id,
                status="failed",
                trigger="schedule",
                requested_by="schedule",
                counts={},
                watermark_before={},
                watermark_after={},
                done={},
                error="HubSpot answered 502 Bad Gateway",
                created_at=clock(),
                finished_at=clock(),
            )
        )
    assert "last run failed: HubSpot answered 502 Bad Gateway" in browser.get(PAGE).text
    chart = browser.get(f"{PAGE}/{ref}").text
    assert chart.count('<g class="bar">') == 3 and chart.count('class="run-failed"') == 1
    with ctx.db.transaction() as session:
        session.add(
            SyncRun(
                ref="run_1000000000000A",
                integration_id=integration.id,
                status="succeeded",
                trigger="manual",
                requested_by="schedule",
                counts={"clients": {"outbound": {"synced": 30}}},
                watermark_before={},
                watermark_after={},
                done={},
                created_at=clock(),
                finished_at=clock(),
            )
        )
    assert "<small>nothing</small>" in browser.get(PAGE).text


def test_runs_are_paged_50_and_the_chart_holds_the_newest_50(
    browser: Browser, people: People, hub: HubSpotPeer, ctx: Context, clock: MutableClock
) -> None:
    browser.sign_in(people.admin)
    ref = add(browser, hub)
    with ctx.db.transaction() as session:
        integration = session.scalars(select(Integration)).one()
        session.execute(
            insert(SyncRun),
            [
                {
                    "ref": f"run_2000000000{n:04}",
                    "integration_id": integration.id,
                    "status": "succeeded",
                    "trigger": "schedule",
                    "requested_by": "schedule",
                    "counts": {"clients": {"inbound": {"synced": n}}},
                    "api_calls": 1,
                    "rate_limit_wait_seconds": 0.0,
                    "watermark_before": {},
                    "watermark_after": {},
                    "done": {},
                    "created_at": clock(),
                }
                for n in range(55)
            ],
        )
    page = browser.get(f"{PAGE}/{ref}")
    assert page.text.count('<g class="bar">') == 50
    assert page.text.count(f'href="{PAGE}/{ref}/runs/run_2000000000') == 50
    assert "run_20000000000054" in page.text and "run_20000000000004<" not in page.text
    older = re.search(r'rel="next" href="([^"]+)">Older runs', page.text)
    assert older is not None
    second = browser.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count(f'href="{PAGE}/{ref}/runs/run_2000000000') == 5
    assert "run_20000000000000<" in second.text and "<td>4</td>" in second.text
