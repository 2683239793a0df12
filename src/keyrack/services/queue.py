"""Operators steering the job queue (CLI and console): retry and cancel, each audited.

The change and its audit record (``job.retried``, ``job.canceled``: platform events,
with the job's kind, payload and state before and after) commit together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyrack.jobs import JobView, admin
from keyrack.services import audit
from keyrack.services.context import Actor, Context


def _steer(
    ctx: Context,
    actor: Actor,
    job_id: int,
    action: str,
    change: Callable[[Session, int, datetime], JobView],
) -> JobView:
    now = ctx.clock()
    try:
        with ctx.db.transaction() as session:
            before = admin.job_in(session, job_id)
            after = change(session, job_id, now)
            audit.record(
                session,
                actor,
                action,
                now=now,
                org_id=None,
                target_type="job",
                target_ref=str(job_id),
                before={"kind": before.kind, "payload": before.payload, "state": before.state},
                after={"state": after.state, "attempt": after.attempt, "of": after.max_attempts},
            )
    except IntegrityError:  # a job took its unique key between the check and the commit
        raise admin.unique_key_busy(job_id) from None
    return after


def retry(ctx: Context, actor: Actor, job_id: int) -> JobView:
    """Run a failed, canceled or waiting job now (a failed one gets one more attempt)."""
    return _steer(ctx, actor, job_id, "job.retried", admin.retry)


def cancel(ctx: Context, actor: Actor, job_id: int) -> JobView:
    """Cancel a waiting or running job (a running one is asked to stop)."""
    return _steer(ctx, actor, job_id, "job.canceled", admin.cancel)
