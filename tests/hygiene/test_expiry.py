"""Inactivity and absolute expiry over the whole 90-day cycle, on SQLite and PostgreSQL.

Time travels through the injected clock (or ``--now``); nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from keyrack.domain.events import Event, KeyChanged
from keyrack.domain.expiry import DeadlineKind
from keyrack.domain.jobs import State
from keyrack.domain.keys import digest
from keyrack.domain.verification import KeyStatus, VerdictStatus
from keyrack.jobs import admin
from keyrack.services import expiry, jobs, keys
from keyrack.services.context import Context
from keyrack.storage.database import Database
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.keys import ApiKey, KeySecret
from keyrack.storage.tables.notices import ExpiryNotice, Notification, OutboxEmail
from tests.conftest import MutableClock, Seeded
from tests.verifier import Verifier

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
KEYRACK = [sys.executable, "-c", "from keyrack.cli import main; main()"]


def expiring_days(ctx: Context, ref: str) -> list[int]:
    """``days_left`` of every key.expiring audit record of a key, oldest first."""
    with ctx.db.session() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "key.expiring", AuditEvent.target_ref == ref)
            .order_by(AuditEvent.id)
        )
        return [int((row.after or {})["days_left"]) for row in rows]


def status_of(ctx: Context, ref: str) -> KeyStatus:
    with ctx.db.session() as session:
        return KeyStatus(session.scalar(select(ApiKey.status).where(ApiKey.ref == ref)) or "")


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def count(ctx: Context, table: Any) -> int:
    with ctx.db.session() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_notices_go_out_exactly_15_7_and_1_days_before_and_the_key_expires_at_90(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx, ref, created = seeded.ctx, seeded.key.ref, seeded.key.created_at
    published: list[Event] = []
    ctx.bus.subscribe(published.append)
    expected: list[int] = []
    for days_before in (15, 7, 1):
        notice_at = created + timedelta(days=90 - days_before)
        assert jobs.sweep(ctx, notice_at - SECOND).notices == 0
        assert expiring_days(ctx, ref) == expected
        assert jobs.sweep(ctx, notice_at).notices == 1
        expected.append(days_before)
        assert expiring_days(ctx, ref) == expected
    assert jobs.sweep(ctx, created + 90 * DAY - SECOND).expired == 0
    assert status_of(ctx, ref) is KeyStatus.ACTIVE

    report = jobs.sweep(ctx, created + 90 * DAY)

    assert (report.notices, report.expired) == (0, 1)
    assert status_of(ctx, ref) is KeyStatus.EXPIRED
    with ctx.db.session() as session:
        assert not session.scalars(select(KeySecret).where(KeySecret.key_id == seeded.key.id)).all()
        expired = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "key.expired")
        ).all()
    assert [e.target_ref for e in expired] == [ref]
    assert published == [KeyChanged(seeded.key.id, (digest(seeded.secret),))]
    clock.now = created + 90 * DAY
    verdict = Verifier(ctx, clock).verify(seeded.secret)
    assert verdict.status is VerdictStatus.EXPIRED  # the digest is kept, to say why
    assert jobs.sweep(ctx, created + 200 * DAY).expired == 0


def test_using_the_key_resets_the_clock_and_the_notice_cycle(seeded: Seeded) -> None:
    ctx, ref, created = seeded.ctx, seeded.key.ref, seeded.key.created_at
    assert jobs.sweep(ctx, created + 75 * DAY).notices == 1
    used = created + 80 * DAY
    keys.record_last_used(ctx, {seeded.key.id: (used, "203.0.113.9")})

    assert jobs.sweep(ctx, created + 90 * DAY).expired == 0
    assert status_of(ctx, ref) is KeyStatus.ACTIVE
    assert jobs.sweep(ctx, used + 75 * DAY - SECOND).notices == 0
    assert jobs.sweep(ctx, used + 75 * DAY).notices == 1
    assert expiring_days(ctx, ref) == [15, 15]
    assert jobs.sweep(ctx, used + 90 * DAY).expired == 1


def test_a_worker_that_was_down_sends_only_the_most_urgent_notice(seeded: Seeded) -> None:
    created = seeded.key.created_at
    assert jobs.sweep(seeded.ctx, created + 84 * DAY).notices == 1
    assert expiring_days(seeded.ctx, seeded.key.ref) == [7]


def test_an_absolute_expiry_gets_the_same_notices_and_a_use_does_not_defer_it(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx = seeded.ctx
    start = clock.now
    view, _ = seeded.new_key(name="Trial key", expires_at=start + 20 * DAY)
    assert jobs.sweep(ctx, start + 5 * DAY - SECOND).notices == 0
    assert jobs.sweep(ctx, start + 5 * DAY).notices == 1
    keys.record_last_used(ctx, {view.id: (start + 6 * DAY, None)})
    assert jobs.sweep(ctx, start + 13 * DAY).notices == 1
    assert jobs.sweep(ctx, start + 19 * DAY).notices == 1
    assert expiring_days(ctx, view.ref) == [15, 7, 1]
    with ctx.db.session() as session:
        kinds = set(session.scalars(select(ExpiryNotice.kind)))
    assert kinds == {"absolute"}
    assert jobs.sweep(ctx, start + 20 * DAY).expired == 1
    assert status_of(ctx, view.ref) is KeyStatus.EXPIRED
    assert status_of(ctx, seeded.key.ref) is KeyStatus.ACTIVE


def test_sweeping_twice_at_the_same_moment_sends_nothing_new(seeded: Seeded) -> None:
    ctx, created = seeded.ctx, seeded.key.created_at
    first = jobs.sweep(ctx, created + 76 * DAY)
    tallies = [count(ctx, t) for t in (ExpiryNotice, Notification, OutboxEmail, AuditEvent)]
    second = jobs.sweep(ctx, created + 76 * DAY)
    assert (first.notices, second.notices) == (1, 0)
    assert [count(ctx, t) for t in (ExpiryNotice, Notification, OutboxEmail, AuditEvent)] == tallies


def test_expiry_notices_reach_the_admins_in_app_and_in_the_outbox(seeded: Seeded) -> None:
    ctx, created = seeded.ctx, seeded.key.created_at
    jobs.sweep(ctx, created + 83 * DAY)
    with ctx.db.session() as session:
        notes = session.scalars(
            select(Notification).where(Notification.event_type == "key.expiring")
        ).all()
        mails = session.scalars(select(OutboxEmail)).all()
    assert [(n.user_id, n.target_ref) for n in notes] == [(seeded.admin_id, seeded.key.ref)]
    assert "expires in 7 days" in notes[0].title
    assert [(m.recipient, m.status) for m in mails] == [("admin@acme.test", "pending")]
    assert seeded.secret not in mails[0].body and seeded.secret not in notes[0].body
    assert seeded.key.masked in mails[0].body


def _many_due_keys(seeded: Seeded, n: int) -> None:
    for i in range(n):
        seeded.new_key(name=f"Integration {i}")


def test_two_workers_at_once_take_each_notice_exactly_once(seeded: Seeded, settings: Any) -> None:
    _many_due_keys(seeded, 19)
    at = seeded.key.created_at + 76 * DAY
    barrier = threading.Barrier(2)
    reports: list[jobs.SweepReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        ctx = Context(settings=settings, db=Database(settings.database_url))
        try:
            barrier.wait()
            reports.append(jobs.sweep(ctx, at))
        except BaseException as exc:
            errors.append(exc)
        finally:
            ctx.db.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.notices for r in reports) == 20
    assert count(seeded.ctx, ExpiryNotice) == 20
    assert len(expiring_days(seeded.ctx, seeded.key.ref)) == 1
    with seeded.ctx.db.session() as session:
        expiring = session.scalar(
            select(func.count()).where(Notification.event_type == "key.expiring")
        )
    assert expiring == 20  # one admin, twenty keys
    assert count(seeded.ctx, OutboxEmail) == 20


def test_sweep_command_evaluates_at_now_and_reports_json(seeded: Seeded, database_url: str) -> None:
    at = seeded.key.created_at + 89 * DAY
    env = {
        **os.environ,
        "KEYRACK_DATABASE_URL": database_url,
        "KEYRACK_SECRET_KEY": seeded.ctx.settings.secret_key,
    }
    env.pop("KEYRACK_SMTP_URL", None)
    command = [*KEYRACK, "sweep", "--now", at.isoformat(), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["notices"] == 1 and report["expired"] == 0
    assert report["now"] == at.isoformat()
    assert expiring_days(seeded.ctx, seeded.key.ref) == [1]
    bad = subprocess.run(
        [*KEYRACK, "sweep", "--now", "next tuesday"], env=env, capture_output=True, check=False
    )
    assert bad.returncode == 2


def test_the_worker_sweeps_once_a_minute_until_told_to_stop(
    seeded: Seeded, clock: MutableClock
) -> None:
    ctx, ref = seeded.ctx, seeded.key.ref
    clock.now = seeded.key.created_at + 75 * DAY
    quick = ctx.settings.model_copy(update={"job_poll_seconds": 0.05})
    worker = jobs.worker(dataclasses.replace(ctx, settings=quick))
    worker.start()
    try:
        eventually(lambda: expiring_days(ctx, ref) == [15])
        # A later period: the sweep is enqueued and runs again. The worker sleeps until the
        # next period by its clock (up to 30 s while LISTEN is up); a jump of the injected
        # clock is told to it, as the passing time would have woken it.
        clock.advance(8 * DAY)
        worker.wake()
        eventually(lambda: expiring_days(ctx, ref) == [15, 7])
        clock.advance(8 * DAY)
        worker.wake()
        eventually(lambda: status_of(ctx, ref) is KeyStatus.EXPIRED)
    finally:
        worker.stop()
    latest = admin.list_jobs(ctx.db, kind=jobs.SWEEP_EXPIRY, limit=1).data[0]
    assert (latest.state, latest.progress) == (State.SUCCEEDED, {"notices": 0, "expired": 1})
    assert jobs.sweep(ctx).idle


def test_a_dry_run_lists_what_is_due_and_changes_nothing(seeded: Seeded) -> None:
    at = seeded.key.created_at + 83 * DAY
    [step] = expiry.plan(jobs.at(seeded.ctx, at))
    assert (step.ref, step.step.threshold, step.step.deadline.kind) == (
        seeded.key.ref,
        "7",
        DeadlineKind.INACTIVITY,
    )
    assert count(seeded.ctx, ExpiryNotice) == 0
    jobs.sweep(seeded.ctx, at)
    assert expiry.plan(jobs.at(seeded.ctx, at)) == []


@pytest.mark.slow
def test_two_sweep_processes_started_together_send_each_notice_once(
    seeded: Seeded, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("concurrent writer processes are a PostgreSQL deployment")
    _many_due_keys(seeded, 9)
    at = seeded.key.created_at + 76 * DAY
    env = {
        **os.environ,
        "KEYRACK_DATABASE_URL": database_url,
        "KEYRACK_SECRET_KEY": seeded.ctx.settings.secret_key,
    }
    command = [*KEYRACK, "sweep", "--now", at.isoformat(), "--json"]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    assert sum(json.loads(out)["notices"] for out, _ in outputs) == 10
    assert count(seeded.ctx, ExpiryNotice) == 10
    assert count(seeded.ctx, OutboxEmail) == 10


def test_the_sweep_finds_exactly_the_steps_the_domain_rules_find_over_every_key(
    seeded: Seeded, clock: MutableClock
) -> None:
    """The database narrows the sweep to keys near a deadline (by each ``inactivity_days``
    in use); over keys on and around every edge, it finds what reading them all would."""
    ctx, start = seeded.ctx, clock.now
    for days in (1, 30, 90):
        for used_days_ago in (None, 0, days - 15, days - 7, days - 1, days, days + 3):
            view, _ = seeded.new_key(name=f"{days}d idle {used_days_ago}", inactivity_days=days)
            if used_days_ago is not None:
                keys.record_last_used(ctx, {view.id: (start - used_days_ago * DAY, None)})
    for expires_in in (1, 7, 15, 16, 40):
        seeded.new_key(name=f"expires in {expires_in}", expires_at=start + expires_in * DAY)

    def every_due(now: Any) -> set[tuple[str, str]]:
        with ctx.db.session() as session:
            rows = session.scalars(select(ApiKey).where(ApiKey.status == "active")).all()
            steps = ((row.ref, expiry._step_of(row, now)) for row in rows)
            return {(ref, step.threshold) for ref, step in steps if step is not None}

    for offset in (-SECOND, 0 * DAY, SECOND, DAY - SECOND, 8 * DAY, 14 * DAY, 16 * DAY):
        now = start + offset
        planned = expiry.plan(jobs.at(ctx, now))
        assert {(p.ref, p.step.threshold) for p in planned} == every_due(now), offset
    assert len(every_due(start + 16 * DAY)) > len(every_due(start)) > 0
