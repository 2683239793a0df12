"""Attacks on what people type and on the queues behind it: each test is the attempt.

Control characters in names (through the API, the console forms and the CLI), an
outbox row that cannot be sent, a worker killed mid-send, sign-in guesses sent all
at once, usage event ids across locations, and webhook URLs naming an internal
address in another notation. Every test runs on SQLite and PostgreSQL, through
the live server, the console, the CLI or the sweep.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from keyrack.cli import main as keyrack_cli
from keyrack.domain.jobs import State
from keyrack.domain.tenancy import OrgKind, Scope
from keyrack.errors import InvalidInput
from keyrack.jobs import admin as queue_admin
from keyrack.server import create_app
from keyrack.services import email, jobs, keys, requests, tenancy, webhooks
from keyrack.services.context import Context
from keyrack.storage.tables.keys import ApiKey
from keyrack.storage.tables.tenancy import Location, Organization, User
from keyrack.storage.tables.webhooks import WebhookDelivery, WebhookEndpoint
from tests.conftest import OPERATOR, MutableClock, Seeded, seed_org
from tests.console.conftest import PASSWORD, Browser, People, seed_people
from tests.crm.conftest import seed as seed_crm
from tests.hygiene import conftest as hygiene
from tests.hygiene.conftest import Inbox, Receiver
from tests.live import serve_in_thread

smtp_server = hygiene.smtp_server
mailing_ctx = hygiene.mailing_ctx
receiver = hygiene.receiver

CONTROL = [
    "evil\r\nBcc: attacker@evil.test",
    "bell\x07",
    "tab\there",
    "clear\x1b[2J",
    "del\x7f",
    "next line\x85",
    "csi\x9b31m",
    "line\u2028separator",
    "paragraph\u2029separator",
    "invoice\u202egpj.exe",
    "isolate\u2066reordered\u2069",
]
"""C0 (CR LF, BEL, TAB, ESC), DEL, C1 (NEL, CSI), the Unicode line and paragraph separators,
and bidirectional overrides and isolates (a name displayed as another one)."""


def _leak(api: httpx.Client, secret: str) -> None:
    """Report ``secret`` as found in public: its key is revoked and its admins emailed."""
    reported = api.post("/api/v2/leaks", json=[{"token": secret, "url": "https://gist.example/1"}])
    assert reported.status_code == 202, reported.text


def _rename_in_database(ctx: Context, ref: str, name: str) -> None:
    """A key named before names were checked: the row as an older version stored it."""
    with ctx.db.transaction() as session:
        session.execute(update(ApiKey).where(ApiKey.ref == ref).values(name=name))


def _unthrottled(org: Seeded, *permissions: str) -> dict[str, str]:
    """Headers of an agency key of ``org`` that the throttle leaves alone."""
    _, secret = org.new_key(
        name="Fast", permissions=permissions, rate_per_second=10_000, concurrency=100
    )
    return {"X-API-Key": secret}


@pytest.fixture
def people(ctx: Context) -> People:
    return seed_people(ctx)


def _outbox(ctx: Context) -> list[email.OutboxView]:
    return email.list_outbox(ctx, limit=500).data


# --- item 3a: one bad outbox row never blocks the queue --------------------------------


def test_a_key_name_with_a_header_break_cannot_stop_the_email_of_every_organization(
    mailing_ctx: Context, smtp_server: tuple[str, Inbox], clock: MutableClock
) -> None:
    acme, globex = seed_org(mailing_ctx, "acme"), seed_org(mailing_ctx, "globex")
    _rename_in_database(mailing_ctx, acme.key.ref, "evil\r\nBcc: attacker@evil.test")
    with serve_in_thread(create_app(ctx=mailing_ctx)) as url, httpx.Client(base_url=url) as api:
        _leak(api, acme.secret)  # the poisoned email is queued first
        _leak(api, globex.secret)

    report = jobs.sweep(mailing_ctx)

    inbox = smtp_server[1]
    assert (report.emails_sent, report.emails_failed) == (1, 1)
    assert inbox.recipients == ["admin@globex.test"]
    assert "attacker@evil.test" not in str(inbox.messages[0])
    poisoned, sent = sorted(_outbox(mailing_ctx), key=lambda m: m.id)
    assert (poisoned.recipient, poisoned.status) == ("admin@acme.test", "failed")
    assert poisoned.last_error and "linefeed" in poisoned.last_error
    assert sent.status == "sent"
    clock.advance(timedelta(days=1))  # a failed message is not tried again
    assert jobs.sweep(mailing_ctx).idle
    assert len(inbox.messages) == 1


def test_a_webhook_url_no_client_can_call_cannot_stop_other_deliveries_or_the_email(
    mailing_ctx: Context, smtp_server: tuple[str, Inbox], receiver: Receiver
) -> None:
    acme = seed_org(mailing_ctx, "acme")
    unusable = "http://xn--/hook"  # parses as a URL; the HTTP client cannot decode its host
    with pytest.raises(InvalidInput, match="HTTP client"):
        webhooks.create_endpoint(mailing_ctx, OPERATOR, acme.org_id, url=unusable)
    broken, _ = webhooks.create_endpoint(
        mailing_ctx, OPERATOR, acme.org_id, url="https://hooks.example/in"
    )
    _, receiver.secret = webhooks.create_endpoint(
        mailing_ctx, OPERATOR, acme.org_id, url=receiver.url
    )
    with mailing_ctx.db.transaction() as session:  # as registered before that check
        session.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == broken.id).values(url=unusable)
        )
    with serve_in_thread(create_app(ctx=mailing_ctx)) as url, httpx.Client(base_url=url) as api:
        _leak(api, acme.secret)

    report = jobs.sweep(mailing_ctx)

    assert (report.webhooks_delivered, report.emails_sent) == (1, 1)
    assert len(receiver.received) == 1 and receiver.received[0]["verified"]
    assert smtp_server[1].recipients == ["admin@acme.test"]
    with mailing_ctx.db.session() as session:
        unsent = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == broken.id)
        ).all()
    assert [(d.status, d.attempts) for d in unsent] == [("pending", 1)]
    assert unsent[0].last_error  # the error is recorded, and it is tried again later


SWEEP = "from keyrack.cli import main; main()"


@pytest.fixture
def silent_smtp() -> Iterator[tuple[str, threading.Event]]:
    """An SMTP port that accepts connections and never answers: a send hangs there."""
    connected = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        held.append(conn)
        connected.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"smtp://127.0.0.1:{listener.getsockname()[1]}", connected
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_an_email_a_killed_worker_was_sending_goes_out_after_its_lease(
    mailing_ctx: Context,
    smtp_server: tuple[str, Inbox],
    silent_smtp: tuple[str, threading.Event],
    clock: MutableClock,
    database_url: str,
) -> None:
    acme = seed_org(mailing_ctx, "acme")
    with serve_in_thread(create_app(ctx=mailing_ctx)) as url, httpx.Client(base_url=url) as api:
        _leak(api, acme.secret)
    env = {
        **os.environ,
        "KEYRACK_DATABASE_URL": database_url,
        "KEYRACK_SECRET_KEY": mailing_ctx.settings.secret_key,
        "KEYRACK_SMTP_URL": silent_smtp[0],
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", SWEEP, "sweep", "--now", clock.now.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert silent_smtp[1].wait(30), "the worker never started sending"
    finally:
        worker.send_signal(signal.SIGKILL)  # kill -9, mid-send
        worker.wait(10)
    [left] = _outbox(mailing_ctx)
    [held] = queue_admin.list_jobs(mailing_ctx.db, kind="email.send").data
    assert (left.status, held.state, held.attempt) == ("pending", State.RUNNING, 1)
    lease = timedelta(seconds=mailing_ctx.settings.job_lease_seconds)

    assert jobs.sweep(mailing_ctx, clock.now + lease / 2).emails_sent == 0  # still leased
    assert jobs.sweep(mailing_ctx, clock.now + lease).emails_sent == 1

    assert smtp_server[1].recipients == ["admin@acme.test"]
    [sent] = _outbox(mailing_ctx)
    assert (sent.status, sent.attempts) == ("sent", 2)  # the killed attempt counts


# --- item 3b: names refuse control characters at every entry point ---------------------


def _validation_problem(response: httpx.Response) -> bool:
    return (
        response.status_code == 400
        and response.headers["content-type"].startswith("application/problem+json")
        and response.json()["type"].endswith("/validation-error")
        and "control character" in response.json()["detail"]
    )


def test_control_characters_in_names_are_refused_by_the_api(ctx: Context) -> None:
    acme = seed_org(ctx, "acme")
    headers = _unthrottled(acme, "keys:manage", "clients:read", "clients:write", "contacts:write")
    vendor = tenancy.create_org(ctx, OPERATOR, name="Vendor", slug="vendor", kind=OrgKind.VENDOR)
    sandbox, vendor_secret = keys.create_key(
        ctx,
        OPERATOR,
        Scope(vendor.id),
        name="Sandbox",
        permissions=["keys:manage"],
        rate_per_second=10_000,
    )
    victim, _ = acme.new_key(name="Victim")
    with serve_in_thread(create_app(ctx=ctx)) as url, httpx.Client(base_url=url) as api:
        client = api.post("/api/v2/clients", headers=headers, json={"name": "Globex"})
        assert client.status_code == 201, client.text
        attempts = {
            "key name": ("POST", "/api/v2/keys", lambda bad: {"name": bad}),
            "renamed key": ("PATCH", f"/api/v2/keys/{victim.ref}", lambda bad: {"name": bad}),
            "revocation reason": (
                "POST",
                f"/api/v2/keys/{victim.ref}/revoke",
                lambda bad: {"reason": bad},
            ),
            "webhook description": (
                "POST",
                "/api/v2/webhooks",
                lambda bad: {"url": "https://hooks.example/in", "description": bad},
            ),
            "webhook url": (
                "POST",
                "/api/v2/webhooks",
                lambda bad: {"url": "https://hooks.example/" + bad.replace(" ", "-")},
            ),
            "client name": ("POST", "/api/v2/clients", lambda bad: {"name": bad}),
            "contact name": (
                "POST",
                "/api/v2/contacts",
                lambda bad: {"client_id": client.json()["id"], "name": bad},
            ),
            "app name": (
                "POST",
                "/api/v2/apps",
                lambda bad: {"name": bad, "sandbox_key": sandbox.ref},
            ),
        }
        for what, (method, path, body) in attempts.items():
            caller = {"X-API-Key": vendor_secret} if what == "app name" else headers
            for bad in CONTROL:
                response = api.request(method, path, headers=caller, json=body(bad))
                assert _validation_problem(response), (what, bad, response.text)

        listed = api.get("/api/v2/keys", headers=headers).json()["data"]
        assert sorted(k["name"] for k in listed) == ["Fast", "Seed key", "Victim"]
        assert all(k["status"] == "active" for k in listed)
        assert api.get("/api/v2/webhooks", headers=headers).json()["data"] == []
        clients = api.get("/api/v2/clients", headers=headers).json()["data"]
        assert [c["name"] for c in clients] == ["Globex"]
        assert api.get("/api/v2/apps", headers=headers).json()["data"] == []


@pytest.fixture
def admin(ctx: Context, people: People) -> Iterator[Browser]:
    with serve_in_thread(create_app(ctx=ctx)) as url, httpx.Client(base_url=url) as client:
        browser = Browser(client)
        assert browser.sign_in(people.admin).status_code == 303
        yield browser


def test_control_characters_in_console_forms_are_shown_on_the_form_keeping_what_was_typed(
    ctx: Context, people: People, admin: Browser
) -> None:
    bad = "evil\r\nBcc: attacker@evil.test"
    admin.get("/console/settings/api/new")
    generated = admin.post(
        "/console/settings/api",
        {"name": bad, "environment": "sandbox", "scope": "agency", "permissions": "clients:read"},
    )
    assert generated.status_code == 400, generated.text
    assert "control character" in generated.text
    assert "Bcc: attacker@evil.test" in generated.text  # the name as typed, to correct
    assert 'value="clients:read" checked' in generated.text

    admin.get("/console/settings/team")
    added = admin.post(
        "/console/settings/team/users",
        {"email": "ann@acme.test", "name": "Ann\x1b[2J", "role": "admin"},
    )
    assert added.status_code == 400, added.text
    assert "control character" in added.text
    assert 'value="ann@acme.test"' in added.text
    assert '<option value="admin" selected>' in added.text
    email_added = admin.post(
        "/console/settings/team/users", {"email": "ann\x85@acme.test", "name": "Ann"}
    )
    assert email_added.status_code == 400 and "control character" in email_added.text
    assert 'value="Ann"' in email_added.text

    victim, _ = keys.create_key(ctx, OPERATOR, Scope(people.org_id), name="Victim")
    admin.get(f"/console/settings/api/keys/{victim.ref}")
    revoked = admin.post(
        f"/console/settings/api/keys/{victim.ref}/revoke", {"reason": "retired\u2028today"}
    )
    assert revoked.status_code == 400, revoked.text
    assert "control character" in revoked.text
    assert "retired\u2028today" in revoked.text
    assert 'action="/console/settings/api/keys/' in revoked.text  # the key's page, its form

    assert [k.name for k in keys.list_keys(ctx, Scope(people.org_id)).data] == ["Victim"]
    assert keys.get_key(ctx, Scope(people.org_id), victim.ref).status.value == "active"
    with ctx.db.session() as session:
        assert not session.scalars(select(User).where(User.email.like("ann%"))).all()


def test_control_characters_in_a_staff_rejection_reason_are_shown_on_its_form(
    ctx: Context, people: People
) -> None:
    with ctx.db.session() as session:
        owner = session.get(User, people.owner_id)
    assert owner is not None
    asked = requests.create_request(
        ctx, tenancy.actor_for_user(owner), org_id=people.org_id, message="ETL, please"
    )
    with serve_in_thread(create_app(ctx=ctx)) as url, httpx.Client(base_url=url) as client:
        staff = Browser(client)
        assert staff.sign_in(people.staff).status_code == 303
        staff.get("/console/staff/requests")
        rejected = staff.post(
            f"/console/staff/requests/{asked.ref}/reject", {"reason": "no\x1b[2J thanks"}
        )
    assert rejected.status_code == 400, rejected.text
    assert "control character" in rejected.text
    assert 'value="no\x1b[2J thanks"' in rejected.text
    assert requests.get_request(ctx, asked.ref).status.value == "pending"


def _cli(monkeypatch: pytest.MonkeyPatch, ctx: Context, *args: str) -> int:
    """Run ``keyrack ARGS`` through its real entry point; its exit code."""
    for module in ("keys", "tenancy"):
        monkeypatch.setattr(f"keyrack.cli.{module}.context", lambda: ctx)
    monkeypatch.setattr(sys, "argv", ["keyrack", *args])
    with pytest.raises(SystemExit) as done:
        keyrack_cli()
    return int(done.value.code or 0)


def test_control_characters_in_names_make_the_cli_exit_2(
    ctx: Context,
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    attempts = [
        ["orgs", "create", "--name", "Evil\x1b]0;owned\x07", "--slug", "evil"],
        ["locations", "create", "--org", "acme", "--name", "Back\r\noffice", "--slug", "back"],
        ["users", "create", "--org", "acme", "--email", "ann\x1b@acme.test"],
        ["keys", "create", "--org", "acme", "--name", "Zapier\u2029"],
        ["keys", "revoke", seeded.key.ref, "--reason", "retired\x85"],
    ]
    for args in attempts:
        assert _cli(monkeypatch, ctx, *args) == 2, args
        assert "control character" in capsys.readouterr().err, args

    with ctx.db.session() as session:
        assert [o.slug for o in session.scalars(select(Organization))] == ["acme"]
        assert [loc.slug for loc in session.scalars(select(Location))] == ["main"]
        assert [u.email for u in session.scalars(select(User))] == ["admin@acme.test"]
    assert [k.name for k in keys.list_keys(ctx, seeded.scope).data] == ["Seed key"]
    assert keys.get_key(ctx, seeded.scope, seeded.key.ref).status.value == "active"


# --- item 4: sign-in throttling is one atomic step -------------------------------------


def test_forty_wrong_passwords_at_once_get_no_more_than_five_tries(
    ctx: Context, people: People
) -> None:
    attempts = 40
    barrier = threading.Barrier(attempts)
    statuses: list[int] = []
    with serve_in_thread(create_app(ctx=ctx)) as url:

        def guess(n: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                browser = Browser(client)
                browser.get("/console/login")
                barrier.wait()
                response = browser.post(
                    "/console/login", {"email": people.owner, "password": f"guess {n}"}
                )
                statuses.append(response.status_code)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(attempts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(statuses) == attempts
        assert set(statuses) <= {401, 429}
        assert sum(status != 429 for status in statuses) <= 5, sorted(statuses)
        with httpx.Client(base_url=url, timeout=10) as client:
            late = Browser(client).sign_in(people.owner, PASSWORD)
        assert late.status_code == 429  # the right password waits too
        assert int(late.headers["retry-after"]) > 0


# --- item 8: usage event ids are scoped to the location --------------------------------


def test_a_location_reusing_another_locations_event_id_is_stored_and_learns_nothing(
    ctx: Context,
) -> None:
    crm = seed_crm(ctx)
    other = tenancy.create_location(ctx, OPERATOR, org_slug="acme", name="Second", slug="second")
    elsewhere = crm.key("clients:write", "usage:read", "usage:write", location_id=other.id)

    def event(client_ref: str) -> dict[str, object]:
        return {
            "id": "evt-1",
            "client_id": client_ref,
            "event": "login",
            "timestamp": "2026-01-04T10:00:00Z",
        }

    with serve_in_thread(create_app(ctx=ctx)) as url, httpx.Client(base_url=url) as api:

        def client_of(headers: dict[str, str], name: str) -> str:
            created = api.post("/api/v2/clients", headers=headers, json={"name": name})
            assert created.status_code == 201, created.text
            return str(created.json()["id"])

        def push(headers: dict[str, str], client_ref: str) -> dict[str, object]:
            pushed = api.post(
                "/api/v2/usage", headers=headers, json={"events": [event(client_ref)]}
            )
            assert pushed.status_code == 200, pushed.text
            return dict(pushed.json())

        mine, theirs = client_of(crm.located, "Mine"), client_of(elsewhere, "Theirs")
        agency_level = client_of(crm.agency, "Head office")

        assert push(crm.located, mine)["duplicates"] == []
        stored = push(elsewhere, theirs)  # the same id, in another location
        assert (stored["inserted"], stored["duplicates"]) == (1, [])
        assert push(crm.agency, agency_level)["inserted"] == 1  # the agency's own namespace
        assert push(elsewhere, theirs)["duplicates"] == ["evt-1"]  # still idempotent
        assert push(crm.agency, mine)["duplicates"] == ["evt-1"]  # the client's location decides

        totals = api.get("/api/v2/usage", headers=elsewhere).json()["data"]
        assert [(t["client_id"], t["events"]) for t in totals] == [(theirs, 1)]
        everything = api.get("/api/v2/usage", headers=crm.agency).json()["data"]
        assert sum(t["events"] for t in everything) == 3


# --- item 10: an IP in another notation is still the IP --------------------------------


NOTATIONS = [
    "http://0x7f000001/",
    "http://2130706433/",
    "http://017700000001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0/",
    "http://0x0a000001/",
    "http://0xa9fea9fe/latest/meta-data/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[::]/",
    "http://\uff11\uff12\uff17.0.0.1/",
    "http://127\u30020\u30020\u30021/",
    "http://0x7f000001.:8080/",
]
"""Loopback, private and link-local addresses as ``inet_aton`` and ``getaddrinfo`` also read
them: hex, one number, octal, short forms, IPv4 inside IPv6, full-width digits and dots."""


def test_a_webhook_url_naming_an_internal_address_in_another_notation_is_refused(
    ctx: Context, seeded: Seeded
) -> None:
    strict = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"webhook_allow_private_targets": False})
    )
    headers = _unthrottled(seeded, "keys:manage")
    with serve_in_thread(create_app(ctx=strict)) as base, httpx.Client(base_url=base) as api:
        for url in NOTATIONS:
            response = api.post("/api/v2/webhooks", headers=headers, json={"url": url})
            assert response.status_code == 400, (url, response.text)
            assert response.json()["type"].endswith("/validation-error")
            assert "KEYRACK_WEBHOOK_ALLOW_PRIVATE_TARGETS" in response.json()["detail"], url
        assert api.get("/api/v2/webhooks", headers=headers).json()["data"] == []
        public = api.post(  # 93.184.216.34 as one number: the address decides, not the notation
            "/api/v2/webhooks", headers=headers, json={"url": "http://1572395042/"}
        )
        assert public.status_code == 201, public.text
