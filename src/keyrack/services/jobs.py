"""Periodic work: ``sweep`` runs it once, ``run_worker`` on a schedule.

A sweep expires keys and takes due notices, erases expired hand-off links and
console reveals, then sends due webhook deliveries and outbox emails, each row on
its own (``services.outbox``: one that cannot be sent fails alone). Every step is
idempotent in the database, so several workers at once, or a worker restarted
mid-run, neither repeat nor skip one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyrack.errors import KeyrackError
from keyrack.services import email, expiry, handoffs, sessions, webhooks
from keyrack.services.context import Clock, Context

log = logging.getLogger(__name__)


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


def replace_clock(ctx: Context, clock: Clock) -> Context:
    return dataclasses.replace(ctx, clock=clock)


def at(ctx: Context, now: datetime) -> Context:
    """The same context with its clock stopped at ``now`` (``--now``)."""
    return replace_clock(ctx, lambda: now)


def sweep(ctx: Context, now: datetime | None = None) -> SweepReport:
    """Run the periodic work once, evaluated at ``now`` (default: ``ctx.clock()``)."""
    if now is not None:
        ctx = at(ctx, now)
    expired = expiry.run(ctx)
    handoffs_erased = handoffs.purge_expired_handoffs(ctx)
    reveals_erased = sessions.purge_expired(ctx)
    delivered = webhooks.deliver_due(ctx)
    mailed = email.send_due(ctx)
    return SweepReport(
        now=ctx.clock(),
        notices=expired.notices,
        expired=expired.expired,
        handoffs_erased=handoffs_erased,
        reveals_erased=reveals_erased,
        webhooks_delivered=delivered.done,
        webhooks_retrying=delivered.retrying,
        webhooks_failed=delivered.failed,
        emails_sent=mailed.done,
        emails_retrying=mailed.retrying,
        emails_failed=mailed.failed,
    )


def shifted_clock(start: datetime) -> Clock:
    """A clock that starts at ``start`` and then runs at real speed (``worker --now``)."""
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


def run_worker(
    ctx: Context,
    *,
    stop: threading.Event,
    interval: float | None = None,
    on_report: Callable[[SweepReport], None] | None = None,
) -> int:
    """Sweep every ``interval`` seconds until ``stop`` is set; returns the number of sweeps.

    A failing sweep is logged and retried at the next tick; the stop event is
    honoured between sweeps, so a sweep in progress finishes first.
    """
    every = interval if interval is not None else ctx.settings.worker_interval_seconds
    runs = 0
    while not stop.is_set():
        try:
            report = sweep(ctx)
        except KeyrackError as exc:  # e.g. the database is unreachable: a line, not a trace
            log.error("sweep failed: %s; retrying at the next tick", exc.for_operator)
        except Exception:
            log.exception("sweep failed; retrying at the next tick")
        else:
            runs += 1
            if on_report is not None:
                on_report(report)
        stop.wait(every)
    return runs
