"""Outbox emails: listed for the operator, and sent through SMTP when ``KEYRACK_SMTP_URL`` is set.

The URL is ``smtp://[user:pass@]host[:port]`` (plain, or STARTTLS with
``?starttls=true``) or ``smtps://…`` (TLS from the start).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select

from keyrack.errors import InvalidInput
from keyrack.services import outbox
from keyrack.services.context import Context
from keyrack.services.outbox import FAILED, PENDING, SENDING
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.notices import OutboxEmail

SENT = "sent"
STATUSES = (PENDING, SENDING, SENT, FAILED)
LEASE = timedelta(minutes=2)


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
    next_attempt_at: datetime
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
            next_attempt_at=row.next_attempt_at,
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


def send_due(ctx: Context) -> outbox.Tally:
    """Send due outbox emails through SMTP; without ``smtp_url`` they stay in the outbox.

    An email that cannot be built fails at once, with its error; one the server did not
    take is retried later. Either way the others go out (``outbox.drain``).
    """
    if not ctx.settings.smtp_url:
        return outbox.Tally()
    target = parse_smtp_url(ctx.settings.smtp_url)

    def send(row: OutboxEmail) -> outbox.Attempt:
        try:
            message = _message(ctx.settings.mail_from, row)
        except Exception as exc:  # a message that cannot be built never will be
            return outbox.Attempt(outbox.describe(exc), final=True)
        try:
            _send(target, message)
        except (OSError, smtplib.SMTPException) as exc:
            return outbox.Attempt(outbox.describe(exc))
        return outbox.Attempt()

    return outbox.drain(ctx, OutboxEmail, lease=LEASE, done=(SENT, "sent_at"), send=send)
