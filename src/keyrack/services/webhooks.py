"""Webhook endpoints of an organization, signed deliveries, retries and redelivery."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from keyrack import outbound
from keyrack.domain import webhooks as signing
from keyrack.domain.sealing import Sealer
from keyrack.domain.text import check_plain
from keyrack.errors import InvalidInput, NotFound
from keyrack.outbound import TargetRefused
from keyrack.services import audit, outbox
from keyrack.services.context import Actor, Context
from keyrack.services.notices import EVENT_TYPES
from keyrack.services.outbox import FAILED, PENDING
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.webhooks import WebhookDelivery, WebhookEndpoint

DELIVERED = "delivered"
SEALING_PURPOSE = "webhook-secret"


def _sealer(ctx: Context) -> Sealer:
    return Sealer(ctx.settings.secret_key, SEALING_PURPOSE)


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for a payload."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: int
    org_id: int
    url: str
    description: str
    events: tuple[str, ...]
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, row: WebhookEndpoint) -> EndpointView:
        return cls(
            id=row.id,
            org_id=row.org_id,
            url=row.url,
            description=row.description,
            events=tuple(row.events),
            active=row.active,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_response_ms: int | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryView:
        return cls(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=row.event_id,
            event_type=row.event_type,
            payload=row.payload,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            last_response_ms=row.last_response_ms,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )


def validate_events(events: Sequence[str]) -> tuple[str, ...]:
    wanted = {e.strip() for e in events if e.strip()} or {"*"}
    unknown = sorted(wanted - {"*", *EVENT_TYPES})
    if unknown:
        raise InvalidInput(
            f"unknown event type(s): {', '.join(unknown)}; known: *, {', '.join(EVENT_TYPES)}"
        )
    return ("*",) if "*" in wanted else tuple(sorted(wanted))


def _endpoint(session: Any, org_id: int, endpoint_id: int) -> WebhookEndpoint:
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.org_id != org_id or not row.active:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    assert isinstance(row, WebhookEndpoint)
    return row


def create_endpoint(
    ctx: Context,
    actor: Actor,
    org_id: int,
    *,
    url: str,
    events: Sequence[str] = ("*",),
    description: str = "",
) -> tuple[EndpointView, str]:
    """Register an endpoint. Returns it and its signing secret (``whsec_…``), shown once."""
    url = outbound.validate_url(url, allow_private=ctx.settings.webhook_allow_private_targets)
    subscribed = validate_events(events)
    description = check_plain(description, "description").strip()
    if len(description) > 200:
        raise InvalidInput("description is at most 200 characters")
    secret = signing.generate_secret()
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = WebhookEndpoint(
            org_id=org_id,
            url=url,
            description=description,
            events=list(subscribed),
            secret_sealed=_sealer(ctx).seal(secret),
            active=True,
            created_at=now,
            created_by_label=actor.label,
        )
        session.add(row)
        session.flush()
        view = EndpointView.of(row)
        audit.record(
            session,
            actor,
            "webhook.created",
            now=now,
            org_id=org_id,
            target_type="webhook",
            target_ref=str(row.id),
            after={"url": url, "events": list(subscribed), "description": description},
        )
    return view, secret


def list_endpoints(
    ctx: Context, org_id: int, *, limit: int = 50, cursor: str | None = None
) -> Page[EndpointView]:
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.org_id == org_id, WebhookEndpoint.active.is_(True)
    )
    with ctx.db.session() as session:
        page = paginate(session, stmt, WebhookEndpoint.id, limit=limit, cursor=cursor)
        return page.map(EndpointView.of)


def get_endpoint(ctx: Context, org_id: int, endpoint_id: int) -> EndpointView:
    """One registered (not deleted) endpoint of the organization."""
    with ctx.db.session() as session:
        return EndpointView.of(_endpoint(session, org_id, endpoint_id))


def delete_endpoint(ctx: Context, actor: Actor, org_id: int, endpoint_id: int) -> EndpointView:
    """Stop sending to an endpoint; its delivery log stays readable in the audit trail."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _endpoint(session, org_id, endpoint_id)
        row.active = False
        row.deleted_at = now
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == row.id, WebhookDelivery.status == PENDING)
            .values(status=FAILED, last_error="endpoint deleted")
        )
        view = EndpointView.of(row)
        audit.record(
            session,
            actor,
            "webhook.deleted",
            now=now,
            org_id=org_id,
            target_type="webhook",
            target_ref=str(row.id),
            before={"url": row.url, "events": list(row.events)},
        )
    return view


def list_deliveries(
    ctx: Context, org_id: int, endpoint_id: int, *, limit: int = 50, cursor: str | None = None
) -> Page[DeliveryView]:
    """The delivery log of an endpoint, newest first."""
    with ctx.db.session() as session:
        _endpoint(session, org_id, endpoint_id)
        stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        page = paginate(session, stmt, WebhookDelivery.id, limit=limit, cursor=cursor)
        return page.map(DeliveryView.of)


def redeliver(ctx: Context, actor: Actor, org_id: int, delivery_id: int) -> DeliveryView:
    """Send a delivery again at the next sweep, with a fresh set of attempts."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        endpoint = _endpoint(session, org_id, row.endpoint_id)
        row.status = PENDING
        row.attempts = 0
        row.next_attempt_at = now
        view = DeliveryView.of(row)
        audit.record(
            session,
            actor,
            "webhook.redelivered",
            now=now,
            org_id=org_id,
            target_type="webhook",
            target_ref=str(endpoint.id),
            after={"delivery_id": row.id, "event_id": row.event_id, "event_type": row.event_type},
        )
    return view


def _post(
    client: httpx.Client, url: str, headers: dict[str, str], body: bytes
) -> tuple[int | None, str | None, int | None]:
    """POST once: (status code, error, elapsed ms); a refused target is not called at all."""
    started = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=headers)
    except TargetRefused as refused:
        return None, str(refused), None
    except httpx.HTTPError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return None, f"{type(exc).__name__}: {exc}"[:500], elapsed
    elapsed = int((time.perf_counter() - started) * 1000)
    if response.is_success:
        return response.status_code, None, elapsed
    return response.status_code, f"HTTP {response.status_code}", elapsed


def _attempt(
    client: httpx.Client, sealer: Sealer, row: WebhookDelivery, endpoint: WebhookEndpoint
) -> tuple[int | None, str | None, int | None]:
    body = body_of(row.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Keyrack-Webhooks/1",
        # wall time, not ctx.clock(): receivers check freshness against their own
        # clock, also when a sweep evaluates the policies at another moment (--now)
        signing.SIGNATURE_HEADER: signing.sign(
            sealer.open(endpoint.secret_sealed), body, int(time.time())
        ),
        signing.EVENT_ID_HEADER: row.event_id,
        signing.EVENT_TYPE_HEADER: row.event_type,
    }
    return _post(client, endpoint.url, headers, body)


def deliver_due(ctx: Context) -> outbox.Tally:
    """Send every due delivery once; a failure is retried later with exponential backoff.

    Every attempt goes through ``keyrack.outbound``: resolved once, sent to the address
    that was checked, or refused without a call.
    """
    lease = timedelta(seconds=ctx.settings.webhook_timeout_seconds * 4 + 30)
    sealer = _sealer(ctx)
    unanswered = {"last_status_code": None, "last_response_ms": None}
    with ExitStack() as opened:
        client: httpx.Client | None = None  # opened for the first delivery, if any

        def send(row: WebhookDelivery) -> outbox.Attempt:
            nonlocal client
            with ctx.db.session() as session:
                endpoint = session.get(WebhookEndpoint, row.endpoint_id)
            if endpoint is None or not endpoint.active:
                return outbox.Attempt("endpoint deleted", final=True, record=unanswered)
            if client is None:
                timeout = ctx.settings.webhook_timeout_seconds
                client = opened.enter_context(outbound.client(ctx.settings, timeout=timeout))
            code, error, elapsed = _attempt(client, sealer, row, endpoint)
            return outbox.Attempt(
                error, record={"last_status_code": code, "last_response_ms": elapsed}
            )

        return outbox.drain(
            ctx, WebhookDelivery, lease=lease, done=(DELIVERED, "delivered_at"), send=send
        )
