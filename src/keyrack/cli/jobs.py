"""``keyrack sweep``, ``keyrack worker`` and ``keyrack outbox``: the background work."""

from __future__ import annotations

from datetime import UTC, datetime

import prometheus_client
import typer

from keyrack import logging as keyrack_logging
from keyrack.cli.common import JsonOption, console, context, emit_json, emit_table
from keyrack.services import email, expiry, jobs

outbox = typer.Typer(help="Emails Keyrack sends (or keeps, when no SMTP server is set).")

NowOption = typer.Option(
    None,
    "--now",
    help="Evaluate the policies at this ISO-8601 moment instead of now (UTC if no offset).",
)


def parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            "use an ISO-8601 time, e.g. 2026-03-01T09:00:00Z", param_hint="--now"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_report(report: jobs.SweepReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
        return
    console.print(
        f"sweep at {report.now:%Y-%m-%d %H:%M:%S} UTC: {report.notices} notice(s), "
        f"{report.expired} key(s) expired; webhooks {report.webhooks_delivered} delivered, "
        f"{report.webhooks_retrying} to retry, {report.webhooks_failed} failed; "
        f"emails {report.emails_sent} sent, {report.emails_retrying} to retry, "
        f"{report.emails_failed} failed"
    )


def sweep(
    now: str | None = NowOption,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list the notices and expiries due; change nothing."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Do the periodic work once (expiry and notices, purges), then send what is due.

    For cron, or to look ahead with --now; a running worker does all of it by itself.
    """
    ctx = context()
    moment = parse_now(now)
    if dry_run:
        steps = expiry.plan(jobs.at(ctx, moment) if moment else ctx)
        rows = [
            {
                "ref": s.ref,
                "name": s.name,
                "step": s.step.threshold,
                "deadline": s.step.deadline.at.isoformat(),
                "kind": s.step.deadline.kind.value,
            }
            for s in steps
        ]
        if as_json:
            emit_json(rows)
        else:
            emit_table(
                "Due", ["ref", "name", "step", "deadline", "kind"], [list(r.values()) for r in rows]
            )
        return
    _print_report(jobs.sweep(ctx, moment), as_json)


def worker(
    concurrency: int | None = typer.Option(
        None, min=1, help="Jobs run at once (default KEYRACK_JOB_CONCURRENCY)."
    ),
    metrics_port: int | None = typer.Option(
        None,
        min=1,
        max=65535,
        help="Serve this worker's Prometheus metrics on 127.0.0.1 at this port.",
    ),
) -> None:
    """Run the job queue until SIGTERM or SIGINT: deliveries, emails, sweeps.

    Any number may run beside the servers. On SIGTERM, running jobs may finish for
    KEYRACK_JOB_SHUTDOWN_GRACE_SECONDS; the rest are handed back to the queue.
    """
    ctx = context()
    keyrack_logging.configure(ctx.settings.log_level)
    if metrics_port is not None:  # pickup latency and failures live in this process
        prometheus_client.start_http_server(metrics_port, addr="127.0.0.1")
    running = jobs.worker(ctx, concurrency=concurrency)
    running.run(
        started=lambda: console.print(
            f"worker {running.worker_id} running up to {running.concurrency} jobs at once"
        )
    )
    console.print(f"worker {running.worker_id} stopped")


@outbox.command("list")
def list_outbox(
    status: str | None = typer.Option(None, help="pending, sent or failed."),
    limit: int = typer.Option(50, min=1, max=500),
    cursor: str | None = typer.Option(None, help="Continue from a previous page."),
    as_json: bool = JsonOption,
) -> None:
    """Emails, newest first: what would have been sent when no SMTP server is set."""
    page = email.list_outbox(context(), status=status, limit=limit, cursor=cursor)
    if as_json:
        emit_json(
            {
                "data": [
                    {
                        "id": m.id,
                        "to": m.recipient,
                        "subject": m.subject,
                        "body": m.body,
                        "status": m.status,
                        "attempts": m.attempts,
                        "last_error": m.last_error,
                        "created_at": m.created_at,
                        "sent_at": m.sent_at,
                    }
                    for m in page.data
                ],
                "next_cursor": page.next_cursor,
            }
        )
        return
    emit_table(
        "Outbox",
        ["id", "to", "subject", "status", "attempts", "created"],
        [
            (m.id, m.recipient, m.subject, m.status, m.attempts, f"{m.created_at:%Y-%m-%d %H:%M}")
            for m in page.data
        ],
    )
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")
