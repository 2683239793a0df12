"""``keyrack jobs``: list, retry, cancel (audited) and count the jobs in the queue."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer

from keyrack.cli.common import OPERATOR, JsonOption, console, context, emit_json, emit_table
from keyrack.jobs import admin
from keyrack.jobs.queue import JobView
from keyrack.services import queue

app = typer.Typer(help="The job queue: deliveries, sweeps, syncs, exports.", no_args_is_help=True)


def _short(moment: Any) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _error(job: JobView) -> str:
    return (job.last_error or "").splitlines()[0][:80] if job.last_error else ""


@app.command("list")
def list_jobs(
    state: str | None = typer.Option(
        None, help="available, scheduled, running, succeeded, failed or canceled."
    ),
    kind: str | None = typer.Option(None, help="Only jobs of this kind, e.g. webhook.deliver."),
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """Jobs, newest first, with their attempts and last error."""
    page = admin.list_jobs(
        context().db,
        state=admin.parse_state(state) if state else None,
        kind=kind,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        emit_json({"data": [asdict(job) for job in page.data], "next_cursor": page.next_cursor})
        return
    emit_table(
        "Jobs",
        ["id", "kind", "state", "attempt", "run at", "finished", "last error"],
        [
            (
                job.id,
                job.kind,
                job.state,
                f"{job.attempt}/{job.max_attempts}",
                _short(job.run_at),
                _short(job.finished_at),
                _error(job),
            )
            for job in page.data
        ],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


def _print_job(verb: str, job: JobView, as_json: bool) -> None:
    if as_json:
        emit_json(asdict(job))
    else:
        console.print(f"{verb} job {job.id} ({job.kind}): now {job.state}")


@app.command("retry")
def retry(
    job_id: int = typer.Argument(..., help="The job's id."), as_json: bool = JsonOption
) -> None:
    """Run a failed, canceled or waiting job now (a failed one gets one more attempt)."""
    _print_job("retried", queue.retry(context(), OPERATOR, job_id), as_json)


@app.command("cancel")
def cancel(
    job_id: int = typer.Argument(..., help="The job's id."), as_json: bool = JsonOption
) -> None:
    """Cancel a waiting or running job (a running one is asked to stop)."""
    _print_job("canceled", queue.cancel(context(), OPERATOR, job_id), as_json)


@app.command("stats")
def stats(as_json: bool = JsonOption) -> None:
    """Jobs per state, the oldest waiting job, and the latest failures."""
    ctx = context()
    result = admin.stats(ctx.db, ctx.clock())
    if as_json:
        emit_json(
            {
                "counts": result.counts,
                "oldest_waiting": asdict(result.oldest_waiting) if result.oldest_waiting else None,
                "oldest_waiting_seconds": result.oldest_waiting_seconds,
                "recent_failures": [asdict(job) for job in result.recent_failures],
            }
        )
        return
    emit_table("Jobs by state", ["state", "jobs"], list(result.counts.items()))
    if result.oldest_waiting is not None and result.oldest_waiting_seconds is not None:
        console.print(
            f"oldest waiting: job {result.oldest_waiting.id} ({result.oldest_waiting.kind}), "
            f"due {result.oldest_waiting_seconds:.1f} s ago"
        )
    if result.recent_failures:
        emit_table(
            "Recent failures",
            ["id", "kind", "attempts", "finished", "error"],
            [
                (job.id, job.kind, job.attempt, _short(job.finished_at), _error(job))
                for job in result.recent_failures
            ],
        )
