"""Webhook endpoints of an organization, signed deliveries, retries and redelivery.

Each delivery is sent by its own ``webhook.deliver`` job (``deliver``): one POST per
attempt, the outcome written to the delivery log, a failure raised so the queue
retries it with backoff. The log's next attempt is its waiting job's ``run_at``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyrack import outbound
from keyrack.domain import webhooks as signing
from keyrack.domain.jobs import ACTIVE, State
from keyrack.domain.sealing import Sealer
from keyrack.domain.text import check_plain
from keyrack.errors import Conflict, InvalidInput, NotFound
from keyrack.jobs import AttemptFailed, Discard, JobView, RunningJob
from keyrack.outbound import TargetRefused
from keyrack.services import audit, notices
from keyrack.services.context import Actor, Context
from keyrack.services.notices import EVENT_TYPES, FAILED, PENDING
from keyrack.storage.paging import Page, paginate
from keyrack.storage.tables.jobs import Job
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


NOT_SENDING = "no job will send it: canceled, or its worker stopped on its last attempt"


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
    """When its waiting job is due; None once it is delivered or failed, or while it is sent."""
    last_status_code: int | None
    last_error: str | None
    last_response_ms: int | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookDelivery, job: Job | JobView | None) -> DeliveryView:
        """The log entry, with ``job``: the delivery's job while one is queued or running.

        A delivery still ``pending`` with no such job will never be sent: it shows as
        ``failed``, so the log does not promise an attempt nobody will make.
        """
        status, error = row.status, row.last_error
        if status == PENDING and job is None:
            status, error = FAILED, error or NOT_SENDING
        waiting = job is not None and job.state != State.RUNNING
        return cls(
            id=row.id,
            endpoint_id=row.endpoint_id,
            event_id=row.event_id,
            event_type=row.event_type,
            payload=row.payload,
            status=status,
            attempts=row.attempts,
            next_attempt_at=job.run_at if waiting and job is not None else None,
            last_status_code=row.last_status_code,
            last_error=error,
            last_response_ms=row.last_response_ms,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )


def _jobs_of(session: Session, deliveries: Iterable[WebhookDelivery]) -> Mapping[int, Job]:
    """The queued or running job of each pending delivery, by delivery id."""
    keys = {notices.delivery_job_key(d.id): d.id for d in deliveries if d.status == PENDING}
    if not keys:
        return {}
    rows = session.scalars(select(Job).where(Job.unique_key.in_(keys), Job.state.in_(ACTIVE)))
    return {keys[row.unique_key]: row for row in rows if row.unique_key is not None}


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
        jobs = _jobs_of(session, page.data)
        return page.map(lambda row: DeliveryView.of(row, jobs.get(row.id)))


def redeliver(ctx: Context, actor: Actor, org_id: int, delivery_id: int) -> DeliveryView:
    """Send a delivery again now, with a fresh set of attempts (its job is enqueued in the
    same transaction); refused while an attempt is under way."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no webhook delivery {delivery_id}")
        endpoint = _endpoint(session, org_id, row.endpoint_id)
        queued = notices.queue_delivery(session, row.id, now, replace=True)
        if not queued.created:
            raise Conflict(f"webhook delivery {delivery_id} is being sent right now; try again")
        row.status = PENDING
        row.attempts = 0
        view = DeliveryView.of(row, queued.job)
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
        return None, notices.describe_error(exc), elapsed
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


class DeliveryFailed(AttemptFailed):
    """An attempt that did not get a 2xx answer: the job retries it after its backoff."""


def deliver(ctx: Context, job: RunningJob) -> None:
    """The ``webhook.deliver`` job: POST its delivery once and write the outcome to the log.

    Every attempt goes through ``keyrack.outbound``: resolved once, sent to the address
    that was checked, or refused without a call. Whatever goes wrong with this one
    delivery (an answer that is not 2xx, a URL no client can call) is recorded on it
    and raised, to be retried; an endpoint deleted meanwhile ends it at once.
    """
    delivery_id = int(job.payload["delivery_id"])
    with ctx.db.session() as session:
        row = session.get(WebhookDelivery, delivery_id)
        endpoint = session.get(WebhookEndpoint, row.endpoint_id) if row is not None else None
    if row is None:
        raise Discard(f"no webhook delivery {delivery_id}")
    if row.status == DELIVERED:
        return  # this job delivered it before its worker could say so
    if endpoint is None or not endpoint.active:
        _record(ctx, delivery_id, FAILED, job.attempt, error="endpoint deleted")
        raise Discard("endpoint deleted")
    try:
        timeout = ctx.settings.webhook_timeout_seconds
        with outbound.client(ctx.settings, timeout=timeout) as client:
            code, error, elapsed = _attempt(client, _sealer(ctx), row, endpoint)
    except Exception as exc:  # this delivery's trouble, never the queue's
        code, error, elapsed = None, notices.describe_error(exc), None
    if error is None:
        _record(ctx, delivery_id, DELIVERED, job.attempt, code=code, elapsed=elapsed)
        return
    final = job.attempt >= job.view.max_attempts
    status = FAILED if final else PENDING
    _record(ctx, delivery_id, status, job.attempt, code=code, error=error, elapsed=elapsed)
    raise DeliveryFailed(error)


def _record(
    ctx: Context,
    delivery_id: int,
    status: str,
    attempts: int,
    *,
    code: int | None = None,
    error: str | None = None,
    elapsed: int | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "last_status_code": code,
        "last_error": error,
        "last_response_ms": elapsed,
    }
    if status == DELIVERED:
        values["delivered_at"] = ctx.clock()
    with ctx.db.transaction() as session:
        session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
        )
