"""Outbox emails: listed for the operator, and sent through SMTP when ``KEYRACK_SMTP_URL`` is set.

The URL is ``smtp://[user:pass@]host[:port]`` (plain, or STARTTLS with
``?starttls=true``) or ``smtps://…`` (TLS from the start). Each email is sent by
its own ``email.send`` job (``send``), which only a worker with an SMTP server
runs: without one, the email waits in the outbox, ``pending``.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select, update

from keyrack.errors import InvalidInput
from keyrack.jobs import AttemptFailed, Discard, RunningJob
from keyrack.services.context import Context
from keyrack.services.notices import FAILED, PENDING, describe_error
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.notices import OutboxEmail

SENT = "sent"
STATUSES = (PENDING, SENT, FAILED)


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    tls: bool
    starttls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise InvalidInput("KEYRACK_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    tls = parts.scheme == "smtps"
    starttls = parse_qs(parts.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if tls else 25),
        tls=tls,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True, slots=True)
class OutboxView:
    id: int
    org_id: int
    recipient: str
    subject: str
    body: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, row: OutboxEmail) -> OutboxView:
        return cls(
            id=row.id,
            org_id=row.org_id,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            sent_at=row.sent_at,
        )


def list_outbox(
    ctx: Context,
    *,
    status: str | None = None,
    org_id: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[OutboxView]:
    """Newest first; what an operator reads when no SMTP server is configured."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    stmt = select(OutboxEmail)
    if status is not None:
        stmt = stmt.where(OutboxEmail.status == status)
    if org_id is not None:
        stmt = stmt.where(OutboxEmail.org_id == org_id)
    with ctx.db.session() as session:
        return paginate(session, stmt, OutboxEmail.id, limit=limit, cursor=cursor).map(
            OutboxView.of
        )


def _send(target: SmtpTarget, message: EmailMessage) -> None:
    smtp: smtplib.SMTP
    if target.tls:
        smtp = smtplib.SMTP_SSL(
            target.host, target.port, timeout=10, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(target.host, target.port, timeout=10)
    with smtp:
        if target.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if target.username:
            smtp.login(target.username, target.password or "")
        smtp.send_message(message)


def _message(sender: str, row: OutboxEmail) -> EmailMessage:
    """The email of an outbox row; raises (``ValueError``…) for one that cannot be built,
    e.g. a header value with a line break."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message.set_content(row.body)
    return message


class SendFailed(AttemptFailed):
    """The SMTP server did not take the email: the job retries it after its backoff."""


def send(ctx: Context, job: RunningJob) -> None:
    """The ``email.send`` job: send its outbox email once and record the outcome on it.

    An email that cannot be built (a header with a line break) fails at once with its
    error, and one the server did not take is retried; either way it is this email
    alone, and the others go out.
    """
    if not ctx.settings.smtp_url:
        raise RuntimeError("email.send runs only where KEYRACK_SMTP_URL is set")
    target = parse_smtp_url(ctx.settings.smtp_url)
    outbox_id = int(job.payload["outbox_id"])
    with ctx.db.session() as session:
        row = session.get(OutboxEmail, outbox_id)
    if row is None:
        raise Discard(f"no outbox email {outbox_id}")
    if row.status == SENT:
        return  # this job sent it before its worker could say so
    try:
        message = _message(ctx.settings.mail_from, row)
    except Exception as exc:  # a message that cannot be built never will be
        _record(ctx, outbox_id, FAILED, job.attempt, describe_error(exc))
        raise Discard(describe_error(exc)) from None
    try:
        _send(target, message)
    except Exception as exc:  # refused, unreachable, or anything else about this one email
        error = describe_error(exc)
        final = job.attempt >= job.view.max_attempts
        _record(ctx, outbox_id, FAILED if final else PENDING, job.attempt, error)
        raise SendFailed(error) from None
    _record(ctx, outbox_id, SENT, job.attempt)


def _record(
    ctx: Context, outbox_id: int, status: str, attempts: int, error: str | None = None
) -> None:
    values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": error}
    if status == SENT:
        values["sent_at"] = ctx.clock()
    with ctx.db.transaction() as session:
        session.execute(update(OutboxEmail).where(OutboxEmail.id == outbox_id).values(**values))
