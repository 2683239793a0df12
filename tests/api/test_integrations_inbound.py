"""A webhook connection's inbound route on a live server, on SQLite and PostgreSQL:
signed records POSTed without an API key go through the inbound syncs into the CRM and
are recorded as a run (trigger ``inbound``) whose outcomes are the answer, a burst of
the same new record creating it once; a bad signature is 401, a bad body 400, and an
unknown id the same 404 as a connection that takes no inbound records."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from keyrack.domain import webhooks
from keyrack.integrations.connectors.webhook import new_signing_secret
from keyrack.services.context import Context
from tests.api.test_integrations import BASE, problem, seed
from tests.conftest import Seeded


@pytest.fixture
def org(ctx: Context) -> Seeded:
    return seed(ctx, "acme", "integrations:manage", "clients:read", "contacts:read")


def post(api: httpx.Client, ref: str, payload: Any, secret: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = webhooks.sign(secret, body, int(time.time()))
    return api.post(
        f"{BASE}/{ref}/inbound",
        content=body,
        headers={"Keyrack-Signature": signature, "Content-Type": "application/json"},
    )


def connect(api: httpx.Client, org: Seeded, secret: str) -> str:
    h = org.headers()
    made = api.post(
        BASE,
        headers=h,
        json={
            "provider": "webhook",
            "name": "Our forms",
            "base_url": "http://127.0.0.1:9/hooks",
            "credential": {"signing_secret": secret},
        },
    )
    assert made.status_code == 201, made.text
    assert secret not in made.text
    ref: str = made.json()["id"]
    for record_type in ("clients", "contacts"):
        put = api.put(
            f"{BASE}/{ref}/syncs/{record_type}/inbound", headers=h, json={"enabled": True}
        )
        assert put.status_code == 200, put.text
    return ref


def test_signed_records_come_in_as_a_run_with_their_outcomes(
    api: httpx.Client, org: Seeded
) -> None:
    secret = new_signing_secret()
    ref = connect(api, org, secret)
    records = [
        {"record_type": "contacts", "id": "p1", "fields": {"name": "Ada", "email": "ada@x.test"},
         "links": {"clients": "c1"}},
        {"record_type": "clients", "id": "c1", "fields": {"name": "Acme", "arr_cents": 1200}},
        {"record_type": "engagements", "id": "e1", "kind": "note", "fields": {"body": "hi"},
         "links": {"clients": "c1"}},
    ]  # fmt: skip
    answer = post(api, ref, records, secret)  # no API key: the signature is the credential
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["run"]["trigger"] == "inbound" and got["run"]["status"] == "succeeded"
    outcomes = [
        (r["record_type"], r["remote_id"], r["outcome"], r["result"]) for r in got["records"]
    ]
    assert outcomes == [
        ("clients", "c1", "synced", "created"),
        ("contacts", "p1", "synced", "created"),
        ("engagements", "e1", "skipped", None),
    ]
    assert got["records"][2]["skip"]["reason"] == "sync-disabled"
    h = org.headers()
    [client] = api.get("/api/v2/clients", headers=h, params={"external_id": "webhook:c1"}).json()[
        "data"
    ]
    assert (client["name"], client["arr_cents"]) == ("Acme", 1200)
    [person] = api.get("/api/v2/contacts", headers=h).json()["data"]
    assert person["client_id"] == client["id"] and person["email"] == "ada@x.test"

    again = post(api, ref, records[:2], secret)  # the same records, later: nothing changes
    assert again.status_code == 200, again.text
    assert [r["result"] for r in again.json()["records"]] == ["unchanged", "unchanged"]

    orphan = {"record_type": "contacts", "id": "p2", "fields": {"name": "Bob"},
              "links": {"clients": "nobody"}}  # fmt: skip
    partial = post(api, ref, [records[1], orphan], secret)
    assert partial.status_code == 202, partial.text
    assert partial.json()["run"]["status"] == "partial"
    failed = partial.json()["records"][1]
    assert failed["outcome"] == "failed" and "nobody" in failed["error_message"]

    listed = api.get(f"{BASE}/{ref}/runs", headers=h).json()["data"]
    assert [r["trigger"] for r in listed] == ["inbound"] * 3
    shown = api.get(f"{BASE}/{ref}", headers=h).json()
    assert shown["last_success_at"] is not None


def test_refusals_are_problems_and_an_unknown_id_says_nothing(
    api: httpx.Client, org: Seeded
) -> None:
    secret = new_signing_secret()
    ref = connect(api, org, secret)
    one = {"record_type": "clients", "id": "c1", "fields": {"name": "Acme"}}
    body = json.dumps(one).encode()

    wrong = post(api, ref, one, new_signing_secret())
    assert "does not match" in str(problem(wrong, 401, "invalid-signature")["detail"])
    unsigned = api.post(f"{BASE}/{ref}/inbound", content=body)
    assert "no Keyrack-Signature" in str(problem(unsigned, 401, "invalid-signature")["detail"])
    stale = webhooks.sign(secret, body, int(time.time()) - 3600)
    replay = api.post(f"{BASE}/{ref}/inbound", content=body, headers={"Keyrack-Signature": stale})
    problem(replay, 401, "invalid-signature")
    for bad, says in (
        (b"not json", "not JSON"),
        (b"[]", "no record"),
        (json.dumps({**one, "record_type": "invoices"}).encode(), "record_type"),
    ):
        signature = webhooks.sign(secret, bad, int(time.time()))
        refused = api.post(
            f"{BASE}/{ref}/inbound", content=bad, headers={"Keyrack-Signature": signature}
        )
        assert says in str(problem(refused, 400, "validation-error")["detail"])

    other = api.post(BASE, headers=org.headers(), json={"provider": "stripe", "name": "S"})
    assert other.status_code == 201, other.text
    unknown = post(api, "int_nothing", one, secret)
    not_webhook = post(api, other.json()["id"], one, secret)
    first, second = problem(unknown, 404, "not-found"), problem(not_webhook, 404, "not-found")
    assert first["detail"] == second["detail"] == "no such integration"
    assert api.get(f"{BASE}/{ref}/runs", headers=org.headers()).json()["data"] == []


BURST = 20


def test_a_burst_of_the_same_new_record_creates_it_once(
    api: httpx.Client, org: Seeded, live_url: str
) -> None:
    """Providers retry and send bursts: POSTs racing to create the same new client all
    succeed, and exactly one of them creates it."""
    secret = new_signing_secret()
    ref = connect(api, org, secret)
    record = {"record_type": "clients", "id": "c-burst", "fields": {"name": "Burst Ltd"}}
    start = threading.Barrier(BURST)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_url, timeout=30) as own:
            start.wait()
            return post(own, ref, record, secret)

    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(send, range(BURST)))
    assert [a.status_code for a in answers] == [200] * BURST, [
        a.text for a in answers if a.status_code != 200
    ]
    results = []
    for answer in answers:
        [outcome] = answer.json()["records"]
        assert (outcome["remote_id"], outcome["outcome"]) == ("c-burst", "synced")
        results.append(outcome["result"])
    assert sorted(results) == ["created"] + ["unchanged"] * (BURST - 1)
    found = api.get(
        "/api/v2/clients", headers=org.headers(), params={"external_id": "webhook:c-burst"}
    ).json()["data"]
    assert [c["name"] for c in found] == ["Burst Ltd"]
    assert len(api.get("/api/v2/clients", headers=org.headers()).json()["data"]) == 1
    listed = api.get(f"{BASE}/{ref}/runs", headers=org.headers(), params={"limit": 100})
    assert len(listed.json()["data"]) == BURST
