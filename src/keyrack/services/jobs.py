"""Keyrack's background work as jobs: what each kind does, the periodic ones, and ``sweep``.

``handlers(ctx)`` is the one registry: ``keyrack worker``, the worker inside
``keyrack serve`` and ``keyrack sweep`` all run it. Deliveries and emails are
enqueued where their rows are written (``services.notices``); the expiry sweep and
the purges of hand-offs and console reveals are periodic, enqueued once a minute
however many workers run. ``sweep`` does the periodic work once, synchronously, and
then sends whatever is due (for cron, and for tests with an injected clock). Every
step is idempotent in the database, so several workers at once, or a worker
restarted mid-run, neither repeat nor skip one.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyrack.domain.jobs import WAITING, Every, State
from keyrack.domain.webhooks import RETRY
from keyrack.jobs import Handler, Outcome, RunningJob, Schedule, Worker
from keyrack.services import (
    email,
    expiry,
    exports,
    handoffs,
    imports,
    key_usage,
    sessions,
    webhooks,
)
from keyrack.services.context import Context
from keyrack.services.integrations import engine as integrations
from keyrack.services.integrations.runs import RUN_JOB
from keyrack.services.notices import DELIVER_WEBHOOK, SEND_EMAIL

SWEEP_EXPIRY = "expiry.sweep"
PURGE_HANDOFFS = "handoffs.purge"
PURGE_REVEALS = "reveals.purge"
ROLL_UP_USAGE = "key_usage.roll_up"
MINUTE = Every(timedelta(minutes=1))
HOUR = Every(timedelta(hours=1))

SCHEDULES = (
    Schedule("expiry", SWEEP_EXPIRY, MINUTE, max_attempts=1),
    Schedule("handoffs", PURGE_HANDOFFS, MINUTE, max_attempts=1),
    Schedule("reveals", PURGE_REVEALS, MINUTE, max_attempts=1),
    Schedule("integrations", integrations.TICK_JOB, MINUTE, max_attempts=1),
    Schedule("key-usage", ROLL_UP_USAGE, HOUR, max_attempts=1),
    Schedule("exports", exports.PURGE_EXPORTS, MINUTE, max_attempts=1),
)
"""The periodic jobs (the next period is their retry: one attempt each)."""


def handlers(ctx: Context) -> list[Handler]:
    """Every job kind Keyrack runs, over ``ctx``. ``email.send`` only with an SMTP server:
    elsewhere emails wait in the outbox for a worker that has one."""

    def sweep_expiry(job: RunningJob) -> None:
        job.progress(**dataclasses.asdict(expiry.run(ctx)))

    def purge_handoffs(job: RunningJob) -> None:
        job.progress(erased=handoffs.purge_expired_handoffs(ctx))

    def purge_reveals(job: RunningJob) -> None:
        job.progress(erased=sessions.purge_expired(ctx))

    def roll_up_usage(job: RunningJob) -> None:
        job.progress(**dataclasses.asdict(key_usage.roll_up(ctx)))

    def purge_exports(job: RunningJob) -> None:
        job.progress(expired=exports.purge_expired(ctx))

    registry = [
        Handler(DELIVER_WEBHOOK, lambda job: webhooks.deliver(ctx, job), RETRY),
        Handler(exports.RUN_EXPORT, lambda job: exports.run(ctx, job)),
        Handler(exports.PURGE_EXPORTS, purge_exports),
        Handler(imports.RUN_IMPORT, lambda job: imports.run(ctx, job)),
        Handler(SWEEP_EXPIRY, sweep_expiry),
        Handler(PURGE_HANDOFFS, purge_handoffs),
        Handler(PURGE_REVEALS, purge_reveals),
        Handler(RUN_JOB, lambda job: integrations.run_job(ctx, job)),
        Handler(integrations.TICK_JOB, lambda job: job.progress(**integrations.tick(ctx))),
        Handler(ROLL_UP_USAGE, roll_up_usage),
    ]
    if ctx.settings.smtp_url:
        registry.append(Handler(SEND_EMAIL, lambda job: email.send(ctx, job), RETRY))
    return registry


def worker(ctx: Context, *, concurrency: int | None = None) -> Worker:
    """The worker of ``keyrack worker`` and ``keyrack serve``, as the settings configure it."""
    settings = ctx.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"job_concurrency": concurrency})
    return Worker.from_settings(ctx, handlers(ctx), settings, SCHEDULES)


@dataclass(frozen=True, slots=True)
class SweepReport:
    now: datetime
    notices: int
    expired: int
    handoffs_erased: int
    reveals_erased: int
    webhooks_delivered: int
    webhooks_retrying: int
    webhooks_failed: int
    emails_sent: int
    emails_retrying: int
    emails_failed: int

    @property
    def idle(self) -> bool:
        """Nothing was due."""
        return not any(v for k, v in dataclasses.asdict(self).items() if k != "now")

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "now": self.now.isoformat()}


def at(ctx: Context, now: datetime) -> Context:
    """The same context with its clock stopped at ``now`` (``--now``)."""
    return dataclasses.replace(ctx, clock=lambda: now)


def _tally(outcomes: Iterable[Outcome], kind: str) -> tuple[int, int, int]:
    """Done, to be retried, failed: how the jobs of ``kind`` ended."""
    ended = Counter(
        "done" if o.state is State.SUCCEEDED else "later" if o.state in WAITING else "failed"
        for o in outcomes
        if o.job.kind == kind and o.state is not None
    )
    return ended["done"], ended["later"], ended["failed"]


def sweep(ctx: Context, now: datetime | None = None) -> SweepReport:
    """Do the periodic work once, evaluated at ``now`` (default: ``ctx.clock()``), then run
    every job due by then (the deliveries and emails it queued among them) here."""
    if now is not None:
        ctx = at(ctx, now)
    expired = expiry.run(ctx)
    handoffs_erased = handoffs.purge_expired_handoffs(ctx)
    reveals_erased = sessions.purge_expired(ctx)
    outcomes = worker(ctx).drain()
    delivered, retrying, failed = _tally(outcomes, DELIVER_WEBHOOK)
    sent, mail_retrying, mail_failed = _tally(outcomes, SEND_EMAIL)
    return SweepReport(
        now=ctx.clock(),
        notices=expired.notices,
        expired=expired.expired,
        handoffs_erased=handoffs_erased,
        reveals_erased=reveals_erased,
        webhooks_delivered=delivered,
        webhooks_retrying=retrying,
        webhooks_failed=failed,
        emails_sent=sent,
        emails_retrying=mail_retrying,
        emails_failed=mail_failed,
    )
