"""The staff page "Jobs": the queue at a glance, failures with their errors, retry and cancel.

Retry and cancel are forms with the session's CSRF token, and each is audited, from the
console as from the CLI (``keyrack jobs retry|cancel``).
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keyrack.cli import app as cli
from keyrack.domain.jobs import State
from keyrack.jobs import JobView, admin, enqueue, queue
from keyrack.services.context import Context
from keyrack.storage.tables.audit import AuditEvent
from tests.conftest import MutableClock
from tests.console.conftest import Browser, People

KIND = "crm.sync"
PROBE = "crm.probe"
LEASE = timedelta(seconds=30)


def _add(ctx: Context, kind: str = KIND, **options: object) -> JobView:
    with ctx.db.transaction() as session:
        return enqueue(session, kind, {"connection": 7}, now=ctx.clock(), **options).job  # type: ignore[arg-type]


def _failed(ctx: Context, error: str) -> JobView:
    """A job that ran once and failed for good with ``error``."""
    added = _add(ctx, PROBE, max_attempts=1)
    [taken] = queue.claim(
        ctx.db, worker_id="w1", kinds=[PROBE], now=ctx.clock(), lease=LEASE, limit=1
    )
    assert taken.id == added.id
    queue.fail(ctx.db, taken, "w1", ctx.clock(), error, retry_in=None)
    return admin.get_job(ctx.db, added.id)


def _text(page: str) -> str:
    """What a reader sees: no tags, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


def _audited(ctx: Context, action: str) -> list[AuditEvent]:
    with ctx.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def staff(browser: Browser, people: People) -> Browser:
    browser.sign_in(people.staff)
    return browser


def test_the_jobs_page_is_for_staff_and_linked_from_their_navigation(
    browser: Browser, people: People
) -> None:
    browser.sign_in(people.owner)
    assert browser.get("/console/staff/jobs").status_code == 404
    assert "/console/staff/jobs" not in browser.get("/console").text
    browser.post("/console/logout", {})
    browser.sign_in(people.staff)
    home = browser.get("/console")
    assert 'href="/console/staff/jobs"' in home.text and "Staff: jobs" in home.text


def test_it_counts_states_shows_the_oldest_waiting_job_and_failures_with_their_errors(
    ctx: Context, clock: MutableClock, staff: Browser
) -> None:
    waiting = _add(ctx)
    failed = _failed(ctx, "ProviderError: HTTP 401 <invalid_grant> from https://api.example")
    clock.advance(timedelta(minutes=5))
    _add(ctx, run_at=clock() + timedelta(hours=1))  # scheduled: not waiting yet

    page = staff.get("/console/staff/jobs")

    assert page.status_code == 200
    text = _text(page.text)
    for state, count in (("available", 1), ("scheduled", 1), ("failed", 1), ("running", 0)):
        assert f"{state}: {count}" in text
    assert f"Oldest waiting job {waiting.id} ({KIND}), due 300.0 s ago" in text
    assert "&lt;invalid_grant&gt;" in page.text  # the error, escaped
    assert f"/console/staff/jobs/{failed.id}/retry" in page.text
    assert f"/console/staff/jobs/{failed.id}/cancel" not in page.text  # finished
    waiting_page = staff.get("/console/staff/jobs?state=available")
    assert f"/console/staff/jobs/{waiting.id}/cancel" in waiting_page.text
    assert staff.get("/console/staff/jobs?state=stuck").status_code == 400


def test_failures_are_paged(ctx: Context, staff: Browser) -> None:
    ids = [_failed(ctx, f"boom {n}").id for n in range(52)]
    first = staff.get("/console/staff/jobs")
    assert "boom 51" in first.text and "boom 0<" not in first.text
    older = first.text.split('rel="next" href="')[1].split('"')[0]
    second = staff.get(html.unescape(older))
    assert "boom 0<" in second.text and "boom 51" not in second.text
    assert f">{ids[0]}<" in second.text


def test_retry_and_cancel_need_the_form_token_and_are_audited(
    ctx: Context, staff: Browser, people: People
) -> None:
    failed = _failed(ctx, "boom")
    waiting = _add(ctx)
    staff.get("/console/staff/jobs")

    forged = staff.post(f"/console/staff/jobs/{failed.id}/retry", {}, csrf=False)
    assert forged.status_code == 403
    assert admin.get_job(ctx.db, failed.id).state is State.FAILED

    retried = staff.post(f"/console/staff/jobs/{failed.id}/retry", {"state": "failed"})
    assert retried.status_code == 303
    assert retried.headers["location"] == "/console/staff/jobs?state=failed"
    assert admin.get_job(ctx.db, failed.id).state is State.AVAILABLE
    canceled = staff.post(f"/console/staff/jobs/{waiting.id}/cancel", {"state": "available"})
    assert canceled.status_code == 303
    assert admin.get_job(ctx.db, waiting.id).state is State.CANCELED

    [retry] = _audited(ctx, "job.retried")
    assert (retry.actor_label, retry.target_type, retry.target_ref) == (
        f"user:{people.staff}",
        "job",
        str(failed.id),
    )
    assert retry.before == {"kind": PROBE, "payload": {"connection": 7}, "state": "failed"}
    assert retry.after == {"state": "available", "attempt": 1, "of": 2}
    [cancel] = _audited(ctx, "job.canceled")
    assert cancel.before is not None and cancel.before["state"] == "available"

    again = staff.post(f"/console/staff/jobs/{waiting.id}/cancel", {"state": "available"})
    assert again.status_code == 409
    assert f"job {waiting.id} is canceled: it cannot be canceled" in html.unescape(again.text)
    assert len(_audited(ctx, "job.canceled")) == 1  # a refused change is not audited
    assert staff.post("/console/staff/jobs/999999/retry", {}).status_code == 404


def test_the_cli_audits_retry_and_cancel_too(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keyrack.cli.queue.context", lambda: ctx)
    failed = _failed(ctx, "boom")
    runner = CliRunner()
    assert runner.invoke(cli, ["jobs", "retry", str(failed.id)]).exit_code == 0
    assert runner.invoke(cli, ["jobs", "cancel", str(failed.id)]).exit_code == 0
    refused = runner.invoke(cli, ["jobs", "cancel", str(failed.id)])
    assert refused.exit_code == 1
    assert [e.actor_label for e in _audited(ctx, "job.retried")] == ["cli"]
    assert [e.actor_label for e in _audited(ctx, "job.canceled")] == ["cli"]
