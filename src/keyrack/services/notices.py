"""The single fan-out point: notice-worthy audit records become notifications, emails, webhooks.

``services.audit.record`` calls ``fan_out`` in the same transaction as the
change, so a notice is created exactly when its event commits. Email and
webhook rows are outboxes, each sent by a job of its own enqueued in that same
transaction (``email.send``, ``webhook.deliver``): a worker takes it up within
moments of the commit, retries a failure with backoff, and one row that cannot
be sent fails alone while the rest go out.
Nothing secret goes out: a key is named by ref, name, last4 and masked form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack.domain import keys as keyformat
from keyrack.domain.ids import ulid
from keyrack.domain.jobs import Priority
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Role, UserKind
from keyrack.domain.webhooks import MAX_ATTEMPTS
from keyrack.jobs import Enqueued, enqueue
from keyrack.jobs.queue import scrub_error
from keyrack.storage.tables.audit import AuditEvent
from keyrack.storage.tables.notices import Notification, OutboxEmail
from keyrack.storage.tables.tenancy import Organization, User
from keyrack.storage.tables.webhooks import WebhookDelivery, WebhookEndpoint

EVENT_TYPES: tuple[str, ...] = (
    "integration.expired",
    "integration.issue_opened",
    "integration.recovered",
    "integration.revoked",
    "integration.unauthorized",
    "key.created",
    "key.expired",
    "key.expiring",
    "key.leaked",
    "key.revoked",
    "key.rolled",
    "key_request.approved",
    "key_request.created",
    "key_request.rejected",
)
"""Audit actions that are also events: in-app notification and webhook."""

EMAILED: frozenset[str] = frozenset(
    {
        "integration.expired",
        "integration.issue_opened",
        "integration.recovered",
        "integration.revoked",
        "integration.unauthorized",
        "key.expired",
        "key.expiring",
        "key.leaked",
        "key_request.approved",
        "key_request.created",
        "key_request.rejected",
    }
)
"""The events worth an email too (creating or rolling a key is not)."""

_SAFE_FIELDS = (
    "name",
    "environment",
    "last4",
    "status",
    "days_left",
    "deadline",
    "kind",
    "reason",
    "app",
    "app_name",
    "app_slug",
    "key_ref",
    "source",
)
"""What of an audit record may leave Keyrack in a notice: metadata, never a secret."""


PENDING, FAILED = "pending", "failed"
"""Outbox row statuses shared by emails and deliveries (beside ``sent`` and ``delivered``)."""
SEND_EMAIL = "email.send"
DELIVER_WEBHOOK = "webhook.deliver"


def delivery_job_key(delivery_id: int) -> str:
    """At most one job queued or running per webhook delivery."""
    return f"{DELIVER_WEBHOOK}:{delivery_id}"


def queue_delivery(
    session: Session, delivery_id: int, now: datetime, *, replace: bool = False
) -> Enqueued:
    """Enqueue the job that sends a webhook delivery, in the caller's transaction. One
    already queued or running is returned instead; with ``replace`` a waiting one gives
    way to the new job (its attempts start afresh), while a running one is still returned."""
    return enqueue(
        session,
        DELIVER_WEBHOOK,
        {"delivery_id": delivery_id},
        unique_key=delivery_job_key(delivery_id),
        priority=Priority.DELIVERY,
        max_attempts=MAX_ATTEMPTS,
        now=now,
        replace=replace,
    )


def queue_email(session: Session, outbox_id: int, now: datetime) -> Enqueued:
    """Enqueue the job that sends an outbox email, in the caller's transaction."""
    return enqueue(
        session,
        SEND_EMAIL,
        {"outbox_id": outbox_id},
        priority=Priority.DELIVERY,
        max_attempts=MAX_ATTEMPTS,
        now=now,
    )


def describe_error(exc: BaseException) -> str:
    """An error as an outbox row records it: no secret in it, and bounded."""
    return scrub_error(f"{type(exc).__name__}: {exc}")[:500]


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str


def _data_of(event: AuditEvent) -> dict[str, Any]:
    details = {**(event.before or {}), **(event.after or {})}
    data: dict[str, Any] = {"object": event.target_type, "ref": event.target_ref}
    data.update({name: details[name] for name in _SAFE_FIELDS if name in details})
    if event.target_type == "key" and details.get("last4") and details.get("environment"):
        prefix = Environment(details["environment"]).prefix
        data["masked"] = keyformat.mask(prefix, details["last4"])
    return data


def _plural(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def describe(action: str, data: dict[str, Any]) -> Message:
    """Title and text of a notice, for people (in-app and email)."""
    ref = data.get("ref") or ""
    key = f"“{data.get('name', ref)}” ({ref}, {data.get('masked', 'key')})"
    if action == "key.expiring":
        days, deadline = int(data.get("days_left", 0)), str(data.get("deadline", ""))[:16]
        why = (
            "reaches its expiry date"
            if data.get("kind") == "absolute"
            else "has not been used for a while and will be deleted"
        )
        return Message(
            f"API key “{data.get('name', ref)}” expires in {_plural(days)}",
            f"The API key {key} {why} on {deadline} UTC. Any use of the key before then "
            "resets its inactivity clock; otherwise create a replacement in Settings → API.",
        )
    if action == "key.expired":
        why = (
            "reached its expiry date"
            if data.get("kind") == "absolute"
            else "was unused for its whole inactivity period"
        )
        return Message(
            f"API key “{data.get('name', ref)}” expired",
            f"The API key {key} {why}. Its secret no longer works; "
            "the record is kept for the audit trail.",
        )
    simple = {
        "key.created": ("API key {name} created", "The API key {key} was created."),
        "key.rolled": ("API key {name} regenerated", "The API key {key} has a new secret."),
        "key.revoked": ("API key {name} revoked", "The API key {key} was revoked."),
        "key.leaked": (
            "API key {name} was found exposed and revoked",
            "The API key {key} was reported as leaked and revoked at once. "
            "Create a replacement and check where it was exposed.",
        ),
        "key_request.created": (
            "Production key request {ref} submitted",
            "A production key request ({ref}) is waiting for approval.",
        ),
        "key_request.approved": (
            "Production key request {ref} approved",
            "The production key request {ref} was approved; hand the key over "
            "with a one-time link from Settings → API.",
        ),
        "key_request.rejected": (
            "Production key request {ref} rejected",
            "The production key request {ref} was rejected.",
        ),
        "integration.unauthorized": (
            "Integration {name} lost its authorization",
            "The provider refused the credential of the integration {ref}: its syncs stop "
            "until it is reauthorized (PUT …/credential).",
        ),
        "integration.expired": (
            "Integration {name}: the credential expired",
            "The credential of the integration {ref} expired: its syncs stop until it is "
            "reauthorized.",
        ),
        "integration.revoked": (
            "Integration {name}: the credential was revoked",
            "The provider revoked the credential of the integration {ref}: its syncs stop "
            "until it is reauthorized.",
        ),
        "integration.issue_opened": (
            "Integration {name} has a new issue",
            "A problem of the integration {ref} persists; diagnose it from Settings → "
            "Integrations (its support bundle is ready).",
        ),
        "integration.recovered": (
            "Integration {name} is connected again",
            "The credential of the integration {ref} works again; its syncs resume.",
        ),
    }
    title, body = simple.get(action, ("{ref}: " + action, "{ref}: " + action))
    name = f"“{data.get('name', ref)}”"
    text = body.format(key=key, ref=ref)
    if data.get("reason"):  # after formatting: a reason is text, never a template
        text += f" Reason: {data['reason']}"
    return Message(title.format(name=name, ref=ref), text)


def event_payload(event: AuditEvent, org: Organization, event_id: str) -> dict[str, Any]:
    """The JSON body of a webhook event."""
    return {
        "id": event_id,
        "type": event.action,
        "created_at": event.occurred_at.isoformat(),
        "organization": {"id": org.id, "slug": org.slug},
        "data": _data_of(event),
    }


def subscribed(events: list[Any], event_type: str) -> bool:
    return "*" in events or event_type in events


def fan_out(session: Session, event: AuditEvent) -> None:
    """Create the notices an audit record calls for, in the caller's transaction."""
    if event.action not in EVENT_TYPES or event.org_id is None:
        return
    org = session.get(Organization, event.org_id)
    if org is None:
        return
    session.flush()  # the audit event's id
    now = event.occurred_at
    data = _data_of(event)
    message = describe(event.action, data)
    recipients = session.scalars(
        select(User).where(
            User.org_id == org.id,
            User.active.is_(True),
            User.kind == UserKind.HUMAN.value,
            User.role.in_((Role.OWNER.value, Role.ADMIN.value)),
        )
    )
    emails: list[OutboxEmail] = []
    for user in recipients:
        session.add(
            Notification(
                org_id=org.id,
                user_id=user.id,
                audit_event_id=event.id,
                event_type=event.action,
                title=message.title,
                body=message.body,
                target_type=event.target_type,
                target_ref=event.target_ref,
                created_at=now,
            )
        )
        if event.action in EMAILED:
            emails.append(
                OutboxEmail(
                    org_id=org.id,
                    audit_event_id=event.id,
                    recipient=user.email,
                    subject=f"[Keyrack] {message.title}",
                    body=f"{message.body}\n\nOrganization: {org.name} ({org.slug})\n",
                    status=PENDING,
                    attempts=0,
                    created_at=now,
                )
            )
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.org_id == org.id, WebhookEndpoint.active.is_(True)
        )
    )
    event_id = f"evt_{ulid(int(now.timestamp() * 1000))}"
    payload = event_payload(event, org, event_id)
    deliveries = [
        WebhookDelivery(
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event.action,
            payload=payload,
            status=PENDING,
            attempts=0,
            created_at=now,
        )
        for endpoint in endpoints
        if subscribed(endpoint.events, event.action)
    ]
    session.add_all([*emails, *deliveries])
    session.flush()  # their ids, which the jobs name
    for email in emails:
        queue_email(session, email.id, now)
    for delivery in deliveries:
        queue_delivery(session, delivery.id, now)
