"""A password Keyrack issued (first run, ``keyrack users create``, "Add user", a reset)
must be changed at the first sign-in, before any other console page; then it is void.
On SQLite and PostgreSQL; the browser walk is in ``test_browser``."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from keyrack.domain.tenancy import Role, Scope
from keyrack.services import keys, sessions, tenancy
from keyrack.services.context import Context
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.tenancy import User
from tests.conftest import OPERATOR

from .conftest import Browser, People

NEW = "a passphrase of my own choosing"


def change(browser: Browser, issued: str) -> httpx.Response:
    browser.get("/console/account")
    return browser.post(
        "/console/account/password",
        {"current_password": issued, "new_password": NEW, "confirm_password": NEW},
    )


def test_an_issued_password_opens_only_the_page_that_changes_it(
    browser: Browser, people: People, ctx: Context, live_url: str
) -> None:
    issued = tenancy.create_user(
        ctx, OPERATOR, org_slug=people.org_slug, email="new@acme.test", role=Role.ADMIN
    )
    assert issued.password is not None and issued.user.password_must_change

    signed = browser.sign_in("new@acme.test", issued.password)
    assert signed.status_code == 303 and signed.headers["location"] == "/console/account"
    for url in ("/console", "/console/settings/api", "/console/settings/team", "/console/audit"):
        sent = browser.client.get(url)
        assert (sent.status_code, sent.headers.get("location")) == (303, "/console/account"), url
    refused = browser.post("/console/settings/api", {"name": "Before changing"})
    assert (refused.status_code, refused.headers["location"]) == (303, "/console/account")
    page = browser.get("/console/account")
    assert page.status_code == 200 and "Choose your password" in page.text
    assert "/console/settings/api" not in page.text  # the navigation offers nothing else

    changed = change(browser, issued.password)
    assert changed.status_code == 200 and "password was changed" in changed.text
    assert "/console/settings/api" in changed.text  # the whole navigation is back
    assert browser.get("/console/settings/api").status_code == 200

    with httpx.Client(base_url=live_url, timeout=10) as other:
        again = Browser(other)
        assert again.sign_in("new@acme.test", issued.password).status_code == 401  # void
        assert again.sign_in("new@acme.test", NEW).headers["location"] == "/console"

    with ctx.db.session() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.password_changed")
        ).one()
    assert (event.target_ref, event.after) == ("new@acme.test", {"issued": True})


def test_a_password_one_chose_is_not_held_to_the_password_page(
    browser: Browser, people: People
) -> None:
    signed = browser.sign_in(people.admin)
    assert signed.headers["location"] == "/console"
    assert browser.get("/console/settings/api").status_code == 200


def test_the_first_run_password_and_one_from_add_user_must_be_changed(
    browser: Browser, people: People, ctx: Context
) -> None:
    browser.sign_in(people.admin)
    browser.get("/console/settings/team")
    added = browser.post("/console/settings/team/users", {"email": "ann@acme.test"})
    assert added.status_code == 201
    with ctx.db.session() as session:
        users = {u.email: u for u in session.scalars(select(User))}
    assert users["ann@acme.test"].password_must_change
    assert not users[people.admin].password_must_change


def test_a_reset_issues_a_password_to_change_and_ends_the_sessions(
    browser: Browser, people: People, ctx: Context, live_url: str
) -> None:
    browser.sign_in(people.member)
    assert browser.get("/console").status_code == 200
    password = sessions.reset_password(ctx, OPERATOR, people.member)
    ended = browser.client.get("/console")
    assert ended.status_code == 303 and ended.headers["location"].startswith("/console/login")
    with httpx.Client(base_url=live_url, timeout=10) as other:
        fresh = Browser(other)
        assert fresh.sign_in(people.member, password).headers["location"] == "/console/account"
    with ctx.db.session() as session:
        actions = list(session.scalars(select(AuditEvent.action)))
    assert "user.password_reset" in actions


def test_the_api_is_unaffected_by_an_issued_password(
    api: httpx.Client, people: People, ctx: Context
) -> None:
    issued = tenancy.create_user(ctx, OPERATOR, org_slug=people.org_slug, email="k@acme.test")
    assert issued.user.password_must_change
    _, secret = keys.create_key(
        ctx, OPERATOR, Scope(people.org_id), name="Theirs", owner_id=issued.user.id
    )
    assert api.get("/api/v2/keys/self", headers={"X-API-Key": secret}).status_code == 200
