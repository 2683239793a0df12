"""The background work on the job queue: the in-process worker, the registry, emails, metrics."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import timedelta

import httpx

from keyrack.domain.jobs import State
from keyrack.jobs import admin, enqueue
from keyrack.server import create_app
from keyrack.services import jobs
from keyrack.services.context import Context
from tests.conftest import Seeded
from tests.hygiene.conftest import Inbox, Receiver
from tests.live import serve_in_thread

DAY = timedelta(days=1)


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_the_app_with_its_worker_delivers_a_revocation_without_a_sweep(
    seeded: Seeded, receiver: Receiver
) -> None:
    quiet = seeded.ctx.settings.model_copy(update={"job_poll_seconds": 60})  # only a wake-up
    ctx = dataclasses.replace(seeded.ctx, settings=quiet)
    with (
        serve_in_thread(create_app(ctx=ctx, worker=True)) as url,
        httpx.Client(base_url=url) as api,
    ):
        hook = api.post(
            "/api/v2/webhooks",
            headers=seeded.headers(),
            json={"url": receiver.url, "events": ["key.revoked"]},
        )
        receiver.secret = hook.json()["secret"]
        victim, _ = seeded.new_key(name="Victim")
        revoked = api.post(
            f"/api/v2/keys/{victim.ref}/revoke", headers=seeded.headers(), json={"reason": "x"}
        )
        assert revoked.status_code == 200
        eventually(lambda: len(receiver.received) == 1)
    [got] = receiver.received
    assert got["verified"] and got["headers"]["keyrack-event-type"] == "key.revoked"
    [job] = admin.list_jobs(ctx.db, kind="webhook.deliver").data
    assert job.state is State.SUCCEEDED


def test_an_app_built_on_a_tests_context_runs_no_worker_unless_asked(seeded: Seeded) -> None:
    with serve_in_thread(create_app(ctx=seeded.ctx)):
        with seeded.ctx.db.transaction() as session:
            added = enqueue(session, jobs.PURGE_REVEALS, now=seeded.ctx.clock()).job
        time.sleep(0.3)
        assert admin.get_job(seeded.ctx.db, added.id).state is State.AVAILABLE


def test_the_registry_runs_emails_only_where_an_smtp_server_is_set(
    ctx: Context, mailing_ctx: Context
) -> None:
    kinds = {handler.kind for handler in jobs.handlers(ctx)}
    assert kinds == {
        "webhook.deliver",
        "expiry.sweep",
        "handoffs.purge",
        "reveals.purge",
        "integration.run",
        "integrations.tick",
        "key_usage.roll_up",
        "export.run",
        "exports.purge",
        "import.run",
    }
    assert {h.kind for h in jobs.handlers(mailing_ctx)} == kinds | {"email.send"}
    worker = jobs.worker(ctx, concurrency=2)
    assert worker.concurrency == 2
    assert {s.kind for s in worker.schedules} >= {s.kind for s in jobs.SCHEDULES}


def test_an_email_queued_without_smtp_waits_for_a_worker_that_can_send_it(
    seeded: Seeded, mailing_ctx: Context, smtp_server: tuple[str, Inbox]
) -> None:
    at = seeded.key.created_at + 75 * DAY
    assert jobs.sweep(seeded.ctx, at).emails_sent == 0
    [waiting] = admin.list_jobs(seeded.ctx.db, kind="email.send").data
    assert waiting.state is State.AVAILABLE and waiting.attempt == 0
    assert jobs.sweep(mailing_ctx, at).emails_sent == 1
    assert smtp_server[1].recipients == ["admin@acme.test"]


def test_metrics_serve_the_queue_beside_the_apps_own_series(
    api: httpx.Client, seeded: Seeded
) -> None:
    with seeded.ctx.db.transaction() as session:
        for _ in range(3):
            enqueue(session, "nobody.handles.this", now=seeded.ctx.clock())
    text = api.get("/metrics").text
    assert 'keyrack_jobs{state="available"} 3.0' in text  # counted at the scrape
    assert 'keyrack_jobs{state="running"} 0.0' in text
    assert "# TYPE keyrack_job_pickup_latency_seconds histogram" in text
    assert "# TYPE keyrack_job_failures_total counter" in text
    assert "keyrack_http_requests_total" in text
