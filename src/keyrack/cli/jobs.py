"""``keyrack sweep``, ``keyrack worker`` and ``keyrack outbox``: the periodic jobs."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import typer

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
    """Run the periodic work once: expiry and notices, webhook deliveries, emails."""
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
    interval: float | None = typer.Option(
        None, min=0.1, help="Seconds between sweeps (default KEYRACK_WORKER_INTERVAL_SECONDS)."
    ),
    now: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Sweep on a schedule until SIGINT or SIGTERM (the sweep in progress finishes first)."""
    ctx = context()
    moment = parse_now(now)
    if moment is not None:
        ctx = jobs.replace_clock(ctx, jobs.shifted_clock(moment))
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    def report(result: jobs.SweepReport) -> None:
        if as_json or not result.idle:
            _print_report(result, as_json)

    runs = jobs.run_worker(ctx, stop=stop, interval=interval, on_report=report)
    if not as_json:
        console.print(f"worker stopped after {runs} sweep(s)")


@outbox.command("list")
def list_outbox(
    status: str | None = typer.Option(None, help="pending, sending, sent or failed."),
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
