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

from sqlalchemy import select, update

from keyrack.domain.webhooks import MAX_ATTEMPTS, retry_delay
from keyrack.errors import InvalidInput
from keyrack.services.context import Context
from keyrack.services.notices import PENDING, SENDING, claim_due
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.notices import OutboxEmail

SENT, FAILED = "sent", "failed"
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


@dataclass(frozen=True, slots=True)
class EmailReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


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


def send_due(ctx: Context) -> EmailReport:
    """Send due outbox emails through SMTP; without ``smtp_url`` they stay in the outbox."""
    if not ctx.settings.smtp_url:
        return EmailReport()
    target = parse_smtp_url(ctx.settings.smtp_url)
    counts = {SENT: 0, PENDING: 0, FAILED: 0}
    for row_id in claim_due(ctx, OutboxEmail, now=ctx.clock(), lease=LEASE):
        with ctx.db.session() as session:
            row = session.get(OutboxEmail, row_id)
        if row is None:
            continue
        message = EmailMessage()
        message["From"] = ctx.settings.mail_from
        message["To"] = row.recipient
        message["Subject"] = row.subject
        message.set_content(row.body)
        error: str | None = None
        try:
            _send(target, message)
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = ctx.clock()
        attempts = row.attempts + 1
        if error is None:
            values: dict[str, object] = {"status": SENT, "sent_at": now, "last_error": None}
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": FAILED, "last_error": error}
        else:
            values = {
                "status": PENDING,
                "last_error": error,
                "next_attempt_at": now + retry_delay(attempts),
            }
        with ctx.db.transaction() as session:
            session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id == row_id, OutboxEmail.status == SENDING)
                .values(attempts=attempts, **values)
            )
        counts[str(values["status"])] += 1
    return EmailReport(sent=counts[SENT], retrying=counts[PENDING], failed=counts[FAILED])
