"""Webhooks: signed deliveries to a real receiver, retries with backoff, redelivery, the API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.client.webhooks import sign_payload, verify_signature
from keyrack.domain.jobs import Priority, State
from keyrack.domain.tenancy import Scope
from keyrack.domain.webhooks import MAX_ATTEMPTS, RETRY
from keyrack.jobs import JobView, admin, queue
from keyrack.services import jobs, keys, tenancy, webhooks
from keyrack.services import queue as queue_service
from keyrack.services.context import Actor, Context
from keyrack.storage.tables.webhooks import WebhookEndpoint
from tests.conftest import OPERATOR, MutableClock, Seeded
from tests.hygiene.conftest import Receiver

SECRET = "whsec_test-secret"
BODY = b'{"id":"evt_1","type":"key.revoked"}'


def test_a_signature_verifies_only_for_its_secret_body_and_fresh_timestamp() -> None:
    now = 1_800_000_000
    header = sign_payload(SECRET, BODY, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(SECRET, BODY, header, now=now + 299)
    assert not verify_signature("whsec_other", BODY, header, now=now)
    assert not verify_signature(SECRET, BODY + b" ", header, now=now)
    assert not verify_signature(SECRET, BODY, "t=abc,v1=00", now=now)
    assert not verify_signature(SECRET, BODY, "", now=now)


def test_a_replay_older_than_five_minutes_is_rejected() -> None:
    sent = 1_800_000_000
    header = sign_payload(SECRET, BODY, sent)
    assert verify_signature(SECRET, BODY, header, now=sent + 300)
    assert not verify_signature(SECRET, BODY, header, now=sent + 301)


def test_a_header_with_a_rotated_secret_still_verifies_with_either_signature() -> None:
    now = 1_800_000_000
    old = sign_payload("whsec_old", BODY, now)
    new = sign_payload(SECRET, BODY, now).split(",", 1)[1]
    assert verify_signature(SECRET, BODY, f"{old},{new}", now=now)


def test_retries_back_off_exponentially_with_jitter_and_are_capped() -> None:
    assert [RETRY.ceiling(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert RETRY.ceiling(30) == timedelta(hours=6)
    assert all(timedelta(0) <= RETRY.delay(3) <= timedelta(minutes=2) for _ in range(100))


def _register(api: httpx.Client, seeded: Seeded, hook: Receiver, **extra: object) -> int:
    body = {"url": hook.url, **extra}
    created = api.post("/api/v2/webhooks", json=body, headers=seeded.headers())
    assert created.status_code == 201, created.text
    hook.secret = created.json()["secret"]
    assert hook.secret.startswith("whsec_")
    return int(created.json()["id"])


def test_an_event_is_delivered_signed_to_a_real_receiver(
    api: httpx.Client, seeded: Seeded, receiver: Receiver
) -> None:
    webhook_id = _register(api, seeded, receiver)
    made = api.post("/api/v2/keys", json={"name": "Nexla"}, headers=seeded.headers())
    secret = made.json()["key"]

    report = jobs.sweep(seeded.ctx)

    assert report.webhooks_delivered == 1
    [got] = receiver.received
    assert got["verified"]
    payload = json.loads(got["body"])
    assert payload["type"] == "key.created" == got["headers"]["keyrack-event-type"]
    assert payload["id"] == got["headers"]["keyrack-event-id"]
    assert payload["data"]["ref"] == made.json()["ref"]
    assert payload["data"]["masked"] == made.json()["masked"]
    assert secret not in got["body"].decode()
    log = api.get(f"/api/v2/webhooks/{webhook_id}/deliveries", headers=seeded.headers()).json()
    [delivery] = log["data"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert delivery["last_response_ms"] is not None


def test_a_failed_delivery_is_retried_later_and_then_delivered(
    api: httpx.Client, seeded: Seeded, receiver: Receiver, clock: MutableClock
) -> None:
    webhook_id = _register(api, seeded, receiver, events=["key.revoked"])
    receiver.statuses = [500]
    api.post(
        f"/api/v2/keys/{seeded.key.ref}/revoke", json={"reason": "test"}, headers=seeded.headers()
    )
    first = jobs.sweep(seeded.ctx)
    assert (first.webhooks_delivered, first.webhooks_retrying) == (0, 1)
    [pending] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    assert (pending.status, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
    assert pending.next_attempt_at is not None
    assert clock.now < pending.next_attempt_at <= clock.now + timedelta(seconds=30)
    due = pending.next_attempt_at

    assert jobs.sweep(seeded.ctx, due - timedelta(microseconds=1)).webhooks_delivered == 0
    assert jobs.sweep(seeded.ctx, due).webhooks_delivered == 1

    assert len(receiver.received) == 2
    assert all(r["verified"] for r in receiver.received)
    ids = {r["headers"]["keyrack-event-id"] for r in receiver.received}
    assert len(ids) == 1  # the same event, so a receiver can drop duplicates
    [done] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    assert (done.status, done.attempts) == ("delivered", 2)


def test_an_unreachable_endpoint_fails_after_the_last_attempt_and_shows_in_keyrack_jobs(
    seeded: Seeded, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = Actor(label="test")
    endpoint, _ = webhooks.create_endpoint(
        seeded.ctx, operator, seeded.org_id, url="http://127.0.0.1:9/hooks"
    )
    seeded.new_key(name="Will not arrive")
    for _ in range(MAX_ATTEMPTS):
        jobs.sweep(seeded.ctx)
        clock.advance(timedelta(hours=7))
    [delivery] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, endpoint.id).data
    assert (delivery.status, delivery.attempts) == ("failed", MAX_ATTEMPTS)
    assert delivery.last_error and "Connect" in delivery.last_error
    assert jobs.sweep(seeded.ctx).webhooks_failed == 0

    monkeypatch.setattr("keyrack.cli.queue.context", lambda: seeded.ctx)
    listed = CliRunner().invoke(cli, ["jobs", "list", "--state", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    [failed] = json.loads(listed.output)["data"]
    assert (failed["kind"], failed["payload"], failed["attempt"]) == (
        "webhook.deliver",
        {"delivery_id": delivery.id},
        MAX_ATTEMPTS,
    )
    assert failed["last_error"].startswith("DeliveryFailed: ConnectError")


def test_redeliver_sends_a_delivery_again(
    api: httpx.Client, seeded: Seeded, receiver: Receiver
) -> None:
    webhook_id = _register(api, seeded, receiver)
    seeded.new_key(name="Again")
    jobs.sweep(seeded.ctx)
    [delivery] = api.get(
        f"/api/v2/webhooks/{webhook_id}/deliveries", headers=seeded.headers()
    ).json()["data"]
    again = api.post(
        f"/api/v2/webhooks/deliveries/{delivery['id']}/redeliver", headers=seeded.headers()
    )
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert jobs.sweep(seeded.ctx).webhooks_delivered == 1
    assert [r["headers"]["keyrack-event-id"] for r in receiver.received] == [
        delivery["event_id"]
    ] * 2


def test_only_subscribed_events_are_delivered(seeded: Seeded, receiver: Receiver) -> None:
    operator = Actor(label="test")
    _, receiver.secret = webhooks.create_endpoint(
        seeded.ctx, operator, seeded.org_id, url=receiver.url, events=["key.rolled"]
    )
    seeded.new_key(name="Not subscribed")
    keys.roll_key(seeded.ctx, operator, seeded.scope, seeded.key.ref)
    jobs.sweep(seeded.ctx)
    assert [json.loads(r["body"])["type"] for r in receiver.received] == ["key.rolled"]


def test_the_signing_secret_is_sealed_at_rest(seeded: Seeded) -> None:
    _, secret = webhooks.create_endpoint(
        seeded.ctx, Actor(label="test"), seeded.org_id, url="https://hooks.example/x"
    )
    with seeded.ctx.db.session() as session:
        stored = session.scalar(select(WebhookEndpoint.secret_sealed))
    assert stored and secret not in stored and secret[6:] not in stored


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"url": "ftp://hooks.example/x"}, "http"),
        ({"url": "javascript:alert(1)"}, "http"),
        ({"url": "http://[::1/hooks"}, "http"),
        ({"url": "http://hooks.example:99999/"}, "http"),
        ({"url": "https://hooks.example/x", "events": ["key.exploded"]}, "unknown event"),
        ({"url": "https://hooks.example/x", "colour": "red"}, "colour"),
    ],
)
def test_bad_webhook_registrations_are_validation_errors(
    api: httpx.Client, seeded: Seeded, body: dict[str, object], detail: str
) -> None:
    response = api.post("/api/v2/webhooks", json=body, headers=seeded.headers())
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/validation-error")
    assert detail in response.text


def test_webhooks_need_an_organization_key_with_keys_manage(
    api: httpx.Client, seeded: Seeded
) -> None:
    _, reader_secret = seeded.new_key(name="Reader", permissions=["clients:read"])
    _, local_secret = seeded.new_key(
        name="Local", location_id=seeded.location_id, permissions=["keys:manage"]
    )
    assert api.get("/api/v2/webhooks").status_code == 401
    for secret in (reader_secret, local_secret):
        response = api.get("/api/v2/webhooks", headers=seeded.headers(secret))
        assert response.status_code == 403


def test_another_organizations_webhooks_are_not_found(
    api: httpx.Client, seeded: Seeded, receiver: Receiver
) -> None:
    webhook_id = _register(api, seeded, receiver)
    other_org = tenancy.create_org(seeded.ctx, Actor(label="t", is_staff=True), name="O", slug="o")
    _, other = keys.create_key(
        seeded.ctx,
        Actor(label="t"),
        Scope(other_org.id),
        name="O",
        permissions=["keys:manage"],
    )
    headers = {"X-API-Key": other}
    assert api.get(f"/api/v2/webhooks/{webhook_id}/deliveries", headers=headers).status_code == 404
    assert api.delete(f"/api/v2/webhooks/{2**64}", headers=headers).status_code == 400
    assert api.delete(f"/api/v2/webhooks/{webhook_id}", headers=headers).status_code == 404
    assert api.get("/api/v2/webhooks", headers=headers).json()["data"] == []


def test_a_deleted_webhook_receives_nothing_more(
    api: httpx.Client, seeded: Seeded, receiver: Receiver
) -> None:
    webhook_id = _register(api, seeded, receiver)
    seeded.new_key(name="Before delete")
    deleted = api.delete(f"/api/v2/webhooks/{webhook_id}", headers=seeded.headers())
    assert deleted.status_code == 200 and deleted.json()["active"] is False
    seeded.new_key(name="After delete")
    assert jobs.sweep(seeded.ctx).webhooks_delivered == 0
    assert receiver.received == []
    assert api.get("/api/v2/webhooks", headers=seeded.headers()).json()["data"] == []


def test_the_receiver_clock_is_wall_time_even_when_sweeping_at_another_moment(
    seeded: Seeded, receiver: Receiver
) -> None:
    _, receiver.secret = webhooks.create_endpoint(
        seeded.ctx, Actor(label="test"), seeded.org_id, url=receiver.url
    )
    seeded.new_key(name="Time traveller")
    far = seeded.key.created_at + timedelta(days=400)
    jobs.sweep(seeded.ctx, far)
    assert receiver.received and all(r["verified"] for r in receiver.received)
    assert abs(int(receiver.received[0]["headers"]["keyrack-signature"][2:12]) - time.time()) < 60


@pytest.mark.parametrize(
    "module", ["keyrack.client.webhooks", "keyrack.domain.webhooks", "keyrack.domain.expiry"]
)
def test_the_verify_helper_and_expiry_rules_import_no_server_dependency(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    assert not loaded & {"fastapi", "sqlalchemy", "redis", "starlette", "alembic"}


def _job_of(ctx: Context, delivery_id: int) -> JobView:
    [job] = [
        j
        for j in admin.list_jobs(ctx.db, kind="webhook.deliver").data
        if j.payload == {"delivery_id": delivery_id}
    ]
    return job


def test_each_delivery_is_a_job_of_its_own_committed_with_its_event(
    seeded: Seeded, receiver: Receiver
) -> None:
    endpoint, _ = webhooks.create_endpoint(seeded.ctx, OPERATOR, seeded.org_id, url=receiver.url)
    seeded.new_key(name="Queued")
    [delivery] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, endpoint.id).data
    job = _job_of(seeded.ctx, delivery.id)
    assert (job.state, job.priority, job.max_attempts) == (State.AVAILABLE, Priority.DELIVERY, 8)
    assert job.created_at == delivery.created_at == delivery.next_attempt_at
    assert (delivery.status, delivery.attempts) == ("pending", 0)


def test_redelivering_a_delivery_that_waits_for_its_retry_sends_it_now_afresh(
    api: httpx.Client, seeded: Seeded, receiver: Receiver, clock: MutableClock
) -> None:
    webhook_id = _register(api, seeded, receiver)
    receiver.statuses = [503]
    seeded.new_key(name="Down at first")
    jobs.sweep(seeded.ctx)
    [waiting] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at > clock.now

    again = api.post(
        f"/api/v2/webhooks/deliveries/{waiting.id}/redeliver", headers=seeded.headers()
    )
    assert again.status_code == 200, again.text
    assert (again.json()["attempts"], again.json()["status"]) == (0, "pending")
    assert again.json()["next_attempt_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert jobs.sweep(seeded.ctx).webhooks_delivered == 1  # now, not at the retry
    [done] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    assert (done.status, done.attempts, done.next_attempt_at) == ("delivered", 1, None)
    states = sorted(j.state for j in admin.list_jobs(seeded.ctx.db, kind="webhook.deliver").data)
    assert states == [State.CANCELED, State.SUCCEEDED]  # the retry it replaced never ran


def test_a_delivery_being_sent_is_not_redelivered_until_the_attempt_ends(
    api: httpx.Client, seeded: Seeded, receiver: Receiver, clock: MutableClock
) -> None:
    webhook_id = _register(api, seeded, receiver)
    seeded.new_key(name="In flight")
    [delivery] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    [held] = queue.claim(
        seeded.ctx.db,
        worker_id="elsewhere",
        kinds=["webhook.deliver"],
        now=clock.now,
        lease=timedelta(seconds=30),
        limit=1,
    )
    path = f"/api/v2/webhooks/deliveries/{delivery.id}/redeliver"
    refused = api.post(path, headers=seeded.headers())
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/conflict")
    [sending] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, webhook_id).data
    assert (sending.status, sending.next_attempt_at) == ("pending", None)
    assert queue.succeed(seeded.ctx.db, held.id, "elsewhere", clock.now)
    assert api.post(path, headers=seeded.headers()).status_code == 200


def test_a_delivery_whose_job_was_canceled_shows_as_failed_not_pending(
    seeded: Seeded, receiver: Receiver
) -> None:
    endpoint, _ = webhooks.create_endpoint(seeded.ctx, OPERATOR, seeded.org_id, url=receiver.url)
    seeded.new_key(name="Never sent")
    [delivery] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, endpoint.id).data
    queue_service.cancel(seeded.ctx, OPERATOR, _job_of(seeded.ctx, delivery.id).id)
    [shown] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, endpoint.id).data
    assert (shown.status, shown.next_attempt_at) == ("failed", None)
    assert shown.last_error and "no job will send it" in shown.last_error
    assert jobs.sweep(seeded.ctx).idle and receiver.received == []


def test_a_delivery_to_an_endpoint_deleted_meanwhile_ends_without_a_call(
    seeded: Seeded, receiver: Receiver
) -> None:
    endpoint, _ = webhooks.create_endpoint(seeded.ctx, OPERATOR, seeded.org_id, url=receiver.url)
    seeded.new_key(name="Orphan")
    [delivery] = webhooks.list_deliveries(seeded.ctx, seeded.org_id, endpoint.id).data
    webhooks.delete_endpoint(seeded.ctx, OPERATOR, seeded.org_id, endpoint.id)
    assert jobs.sweep(seeded.ctx).webhooks_failed == 1
    assert receiver.received == []
    job = _job_of(seeded.ctx, delivery.id)
    assert (job.state, job.attempt, job.last_error) == (
        State.FAILED,
        1,
        "Discard: endpoint deleted",
    )
