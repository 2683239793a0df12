"""Attacks on what people type and on the queues behind it: each test is the attempt.

Control characters in names (through the API, the console forms and the CLI), an
outbox row that cannot be sent, a worker killed mid-send, sign-in guesses sent all
at once, usage event ids across locations, and webhook URLs naming an internal
address in another notation. Every test runs on SQLite and PostgreSQL, through
the live server, the console, the CLI or the sweep.
"""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest
from sqlalchemy import update

from keyrack.http.app import create_app
from keyrack.services import email, tenancy
from keyrack.services.context import Context
from keyrack.storage.tables.keys import ApiKey
from tests.conftest import OPERATOR, Seeded
from tests.console.conftest import PASSWORD, Browser, People, seed_people
from tests.crm.conftest import seed as seed_crm
from tests.hygiene import conftest as hygiene
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
]
"""C0 (CR LF, BEL, TAB, ESC), DEL, C1 (NEL, CSI) and the Unicode line and paragraph separators."""


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
