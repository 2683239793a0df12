"""Emails: a real SMTP server receives notices; without SMTP they wait in the outbox."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from keyrack.errors import InvalidInput
from keyrack.jobs import admin
from keyrack.services import email, jobs
from keyrack.services.context import Context
from keyrack.services.email import SmtpTarget, parse_smtp_url
from keyrack.storage.database import Database
from tests.conftest import MutableClock, Seeded
from tests.hygiene.conftest import Inbox

DAY = timedelta(days=1)


def test_smtp_urls_name_host_port_tls_and_credentials() -> None:
    assert parse_smtp_url("smtp://mail.example:2525") == SmtpTarget(
        "mail.example", 2525, tls=False, starttls=False, username=None, password=None
    )
    assert parse_smtp_url("smtps://bob:p%40ss@mail.example") == SmtpTarget(
        "mail.example", 465, tls=True, starttls=False, username="bob", password="p@ss"
    )
    assert parse_smtp_url("smtp://mail.example?starttls=true").starttls
    with pytest.raises(InvalidInput):
        parse_smtp_url("http://mail.example")


def test_an_expiry_notice_is_delivered_to_a_real_smtp_server(
    seeded: Seeded, mailing_ctx: Context, smtp_server: tuple[str, Inbox]
) -> None:
    _, inbox = smtp_server
    report = jobs.sweep(mailing_ctx, seeded.key.created_at + 75 * DAY)
    assert (report.notices, report.emails_sent) == (1, 1)
    [message] = inbox.messages
    assert inbox.recipients == ["admin@acme.test"]
    assert message["To"] == "admin@acme.test"
    assert message["From"] == mailing_ctx.settings.mail_from
    assert message["Subject"] == "[Keyrack] API key “Seed key” expires in 15 days"
    text = message.get_content()
    assert seeded.key.ref in text and seeded.key.masked in text
    assert seeded.secret not in message.as_string()
    [sent] = email.list_outbox(mailing_ctx).data
    assert sent.status == "sent" and sent.attempts == 1
    assert jobs.sweep(mailing_ctx).emails_sent == 0


def test_without_smtp_emails_stay_listable_in_the_outbox(seeded: Seeded, database_url: str) -> None:
    report = jobs.sweep(seeded.ctx, seeded.key.created_at + 90 * DAY)
    assert (report.expired, report.emails_sent) == (1, 0)
    page = email.list_outbox(seeded.ctx, status="pending")
    assert [m.subject for m in page.data] == ["[Keyrack] API key “Seed key” expired"]
    env = {
        **os.environ,
        "KEYRACK_DATABASE_URL": database_url,
        "KEYRACK_SECRET_KEY": seeded.ctx.settings.secret_key,
    }
    env.pop("KEYRACK_SMTP_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", "from keyrack.cli import main; main()", "outbox", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["data"]
    assert [(m["to"], m["status"]) for m in listed] == [("admin@acme.test", "pending")]


def test_an_unreachable_smtp_server_is_retried_later(
    seeded: Seeded,
    ctx: Context,
    clock: MutableClock,
    smtp_server: tuple[str, Inbox],
) -> None:
    down = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:9"})
    )
    jobs.sweep(down, seeded.key.created_at + 75 * DAY)
    [waiting] = email.list_outbox(ctx).data
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.last_error
    [job] = admin.list_jobs(ctx.db, kind="email.send").data
    up = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"smtp_url": smtp_server[0]})
    )
    assert jobs.sweep(up, job.run_at - timedelta(microseconds=1)).emails_sent == 0
    assert jobs.sweep(up, job.run_at).emails_sent == 1
    assert len(smtp_server[1].messages) == 1


def test_two_workers_at_once_send_each_email_exactly_once(
    seeded: Seeded, mailing_ctx: Context, smtp_server: tuple[str, Inbox]
) -> None:
    for i in range(9):
        seeded.new_key(name=f"Integration {i}")
    at = seeded.key.created_at + 76 * DAY
    barrier = threading.Barrier(2)
    reports: list[jobs.SweepReport] = []

    def worker() -> None:
        ctx = dataclasses.replace(mailing_ctx, db=Database(mailing_ctx.settings.database_url))
        try:
            barrier.wait()
            reports.append(jobs.sweep(ctx, at))
        finally:
            ctx.db.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 2
    assert sum(r.notices for r in reports) == 10
    # a notice committed by one worker may be mailed by either: count the arrivals
    jobs.sweep(mailing_ctx, at)
    assert len(smtp_server[1].messages) == 10
    subjects = sorted(str(m["Subject"]) for m in smtp_server[1].messages)
    assert len(set(subjects)) == 10
