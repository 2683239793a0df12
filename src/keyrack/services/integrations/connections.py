"""Connections: create, list, read, change, delete; the credential (sealed, write-only,
probed at once); the status, whose changes are events that fan out like key events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyrack import outbound
from keyrack.domain.ids import new_ref
from keyrack.domain.sealing import Sealer
from keyrack.domain.tenancy import Scope, validate_name
from keyrack.domain.text import check_plain
from keyrack.errors import InvalidInput, NotFound
from keyrack.integrations.connector import Connector, Probe, ProbeStatus
from keyrack.integrations.connectors import CONNECTORS, connector_for
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import location_in_scope, within_scope
from keyrack.storage.tables.integrations import Integration, IntegrationChange

SEALING_PURPOSE = "integration-credential"
STATUSES = ("active", "expired", "revoked", "unauthorized")
PENDING_REASON = "no-credential"
MIN_SIGNING_SECRET = 24
OAUTH_KEYS = (
    "access_token",
    "refresh_token",
    "expires_at",
    "token_url",
    "client_id",
    "client_secret",
)
MAX_ERROR = 4000
HTTP_TIMEOUT = 30.0

EVENT_OF_STATUS = {
    "active": "integration.recovered",
    "expired": "integration.expired",
    "revoked": "integration.revoked",
    "unauthorized": "integration.unauthorized",
}


def _sealer(ctx: Context) -> Sealer:
    return Sealer(ctx.settings.secret_key, SEALING_PURPOSE)


@dataclass(frozen=True, slots=True)
class ConnectionView:
    id: str
    org_id: int
    location_id: int | None
    provider: str
    name: str
    base_url: str | None
    has_credential: bool
    status: str
    status_reason: str | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error_message: str | None
    last_probed_at: datetime | None
    connected_by: str
    created_at: datetime

    @classmethod
    def of(cls, row: Integration) -> ConnectionView:
        return cls(
            id=row.ref,
            org_id=row.org_id,
            location_id=row.location_id,
            provider=row.provider,
            name=row.name,
            base_url=row.base_url,
            has_credential=row.credential_sealed is not None,
            status=row.status,
            status_reason=row.status_reason,
            last_success_at=row.last_success_at,
            last_error_at=row.last_error_at,
            last_error_message=row.last_error_message,
            last_probed_at=row.last_probed_at,
            connected_by=row.connected_by,
            created_at=row.created_at,
        )


def settings_of(row: Integration) -> dict[str, Any]:
    """What a change row records of a connection (never its credential)."""
    return {
        "name": row.name,
        "base_url": row.base_url,
        "location_id": row.location_id,
        "provider": row.provider,
    }


def record_change(
    session: Session,
    actor: Actor,
    row: Integration,
    what: str,
    *,
    now: datetime,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """Append a change row, in the caller's transaction."""
    session.add(
        IntegrationChange(
            integration_id=row.id,
            occurred_at=now,
            actor_label=actor.label,
            actor_id=actor.user_id,
            what=what,
            before=before,
            after=after,
        )
    )


def validate_provider(provider: str) -> str:
    if provider not in CONNECTORS:
        raise InvalidInput(f"unknown provider {provider!r}; known: {', '.join(sorted(CONNECTORS))}")
    return provider


def validate_base_url(ctx: Context, base_url: str | None) -> str | None:
    """None (the provider's own service), or a URL the outbound (SSRF) rule allows."""
    if base_url is None or not base_url.strip():
        return None
    url = outbound.validate_url(
        base_url.strip().rstrip("/"),
        allow_private=ctx.settings.webhook_allow_private_targets,
        what="a base_url",
    )
    return url


def validate_credential(credential: Any) -> dict[str, Any]:
    """``{"api_key"}``, ``{"signing_secret"}`` (webhook) or the OAuth2 members; the refusal
    never repeats a value."""
    if not isinstance(credential, Mapping) or not credential:
        raise InvalidInput("credential must be an object: {api_key} or the OAuth2 members")
    unknown = sorted(set(credential) - {"api_key", "signing_secret", *OAUTH_KEYS})
    if unknown:
        raise InvalidInput(f"credential has unknown member(s): {', '.join(unknown)}")
    if "signing_secret" in credential:  # a webhook connection's, both ways
        secret = credential["signing_secret"]
        if set(credential) != {"signing_secret"}:
            raise InvalidInput("credential: signing_secret goes alone")
        if not isinstance(secret, str) or len(secret.strip()) < MIN_SIGNING_SECRET:
            raise InvalidInput(
                f"credential.signing_secret must be a string of at least {MIN_SIGNING_SECRET} "
                "characters (a webhook connection's whsec_… secret)"
            )
        return {"signing_secret": secret.strip()}
    if "api_key" in credential:
        if set(credential) != {"api_key"}:
            raise InvalidInput("credential: api_key goes alone, without OAuth2 members")
        if not isinstance(credential["api_key"], str) or not credential["api_key"].strip():
            raise InvalidInput("credential.api_key must be a non-empty string")
        return {"api_key": credential["api_key"].strip()}
    for name in ("access_token", "refresh_token", "token_url", "client_id", "client_secret"):
        if not isinstance(credential.get(name), str) or not credential[name]:
            raise InvalidInput(f"credential.{name} must be a non-empty string for OAuth2")
    expires_at = credential.get("expires_at")
    if expires_at is not None and (
        isinstance(expires_at, bool) or not isinstance(expires_at, int | float)
    ):
        raise InvalidInput("credential.expires_at must be epoch seconds (a number) or null")
    return {name: credential.get(name) for name in OAUTH_KEYS}


def _row(session: Session, scope: Scope, ref: str) -> Integration:
    row = session.scalars(
        select(Integration).where(
            Integration.ref == ref,
            within_scope(scope, Integration.org_id, Integration.location_id),
        )
    ).first()
    if row is None:
        raise NotFound(f"no integration {ref}")
    return row


def row_in_scope(session: Session, scope: Scope, ref: str) -> Integration:
    return _row(session, scope, ref)


def create(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    *,
    provider: str,
    name: str,
    base_url: str | None = None,
    location_id: int | None = None,
    credential: Mapping[str, Any] | None = None,
) -> ConnectionView:
    """A new connection; with a credential it is probed at once (``put_credential``)."""
    provider = validate_provider(provider)
    name = validate_name(check_plain(name, "name"))
    url = validate_base_url(ctx, base_url)
    sealed = None if credential is None else validate_credential(credential)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = Integration(
            ref=new_ref("int"),
            org_id=scope.org_id,
            location_id=location_in_scope(session, scope, location_id),
            provider=provider,
            name=name,
            base_url=url,
            credential_sealed=None,
            status="unauthorized",
            status_reason=PENDING_REASON,
            connected_by=actor.label,
            created_at=now,
        )
        session.add(row)
        session.flush()
        record_change(
            session, actor, row, "connection", now=now, before=None, after=settings_of(row)
        )
        audit.record(
            session,
            actor,
            "integration.created",
            now=now,
            org_id=row.org_id,
            target_type="integration",
            target_ref=row.ref,
            after=settings_of(row),
        )
        ref = row.ref
        view = ConnectionView.of(row)
    if sealed is not None:
        return put_credential(ctx, actor, scope, ref, sealed)
    return view


def list_connections(
    ctx: Context, scope: Scope, *, limit: int = 50, cursor: str | None = None
) -> Page[ConnectionView]:
    stmt = select(Integration).where(
        within_scope(scope, Integration.org_id, Integration.location_id)
    )
    with ctx.db.session() as session:
        return paginate(session, stmt, Integration.id, limit=limit, cursor=cursor).map(
            ConnectionView.of
        )


def get(ctx: Context, scope: Scope, ref: str) -> ConnectionView:
    with ctx.db.session() as session:
        return ConnectionView.of(_row(session, scope, ref))


_UNSET: Any = object()


def update(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    name: str = _UNSET,
    base_url: str | None = _UNSET,
    location_id: int | None = _UNSET,
) -> ConnectionView:
    """Change the given settings; a change row records before and after."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _row(session, scope, ref)
        before = settings_of(row)
        if name is not _UNSET:
            if not isinstance(name, str):
                raise InvalidInput("name must be a non-empty string")
            row.name = validate_name(check_plain(name, "name"))
        if base_url is not _UNSET:
            row.base_url = validate_base_url(ctx, base_url)
        if location_id is not _UNSET:
            row.location_id = location_in_scope(session, scope, location_id)
        after = settings_of(row)
        if after != before:
            changed = [k for k in after if after[k] != before[k]]
            record_change(
                session,
                actor,
                row,
                "connection",
                now=now,
                before={k: before[k] for k in changed},
                after={k: after[k] for k in changed},
            )
            audit.record(
                session,
                actor,
                "integration.updated",
                now=now,
                org_id=row.org_id,
                target_type="integration",
                target_ref=row.ref,
                before={k: before[k] for k in changed},
                after={k: after[k] for k in changed},
            )
        return ConnectionView.of(row)


def delete(ctx: Context, actor: Actor, scope: Scope, ref: str) -> ConnectionView:
    """Delete a connection with its syncs, history and runs (audited)."""
    from keyrack.services.integrations import runs

    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _row(session, scope, ref)
        runs.cancel_active(session, row, now)
        view = ConnectionView.of(row)
        audit.record(
            session,
            actor,
            "integration.deleted",
            now=now,
            org_id=row.org_id,
            target_type="integration",
            target_ref=row.ref,
            before=settings_of(row),
        )
        session.delete(row)
    return view


# the credential


def open_credential(ctx: Context, row: Integration) -> dict[str, Any] | None:
    if row.credential_sealed is None:
        return None
    found: dict[str, Any] = json.loads(_sealer(ctx).open(row.credential_sealed))
    return found


def seal_credential(ctx: Context, credential: Mapping[str, Any]) -> str:
    return _sealer(ctx).seal(json.dumps(dict(credential), separators=(",", ":")))


@contextmanager
def connector(ctx: Context, row: Integration, on_token: Any = None) -> Iterator[Connector]:
    """The connection's connector over an HTTP client that follows the outbound rule."""
    credential = open_credential(ctx, row)
    if credential is None:
        raise InvalidInput(f"integration {row.ref} has no credential: PUT one first")
    with outbound.client(ctx.settings, timeout=HTTP_TIMEOUT) as http:
        yield _build(row.provider, credential, http, row.base_url, on_token)


def _build(
    provider: str,
    credential: Mapping[str, Any],
    http: httpx.Client,
    base_url: str | None,
    on_token: Any = None,
) -> Connector:
    """The provider's connector; a credential it cannot take is ``InvalidInput`` (its
    refusal names what is missing, never a value)."""
    try:
        return connector_for(provider)(
            credential=credential, http=http, base_url=base_url, on_token=on_token
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def keep_token(ctx: Context, integration_id: int) -> Any:
    """An ``on_token`` that seals and stores a refreshed OAuth2 credential."""

    def store(credential: dict[str, Any]) -> None:
        with ctx.db.transaction() as session:
            row = session.get(Integration, integration_id)
            if row is not None:
                row.credential_sealed = seal_credential(ctx, credential)

    return store


def put_credential(
    ctx: Context, actor: Actor, scope: Scope, ref: str, credential: Mapping[str, Any]
) -> ConnectionView:
    """Store a new credential (a change row says that it changed), probe it at once, and
    set the status from the probe."""
    valid = validate_credential(credential)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = _row(session, scope, ref)
        with httpx.Client() as unused:  # the connector takes it before anything is stored
            _build(row.provider, valid, unused, row.base_url)
        had = row.credential_sealed is not None
        row.credential_sealed = seal_credential(ctx, valid)
        record_change(
            session,
            actor,
            row,
            "credential",
            now=now,
            before={"credential": "set" if had else "none"},
            after={"credential": "replaced" if had else "set", "kind": _kind(valid)},
        )
        audit.record(
            session,
            actor,
            "integration.credential_changed",
            now=now,
            org_id=row.org_id,
            target_type="integration",
            target_ref=row.ref,
            after={"kind": _kind(valid)},
        )
        integration_id = row.id
    probe(ctx, integration_id, actor=actor)
    return get(ctx, scope, ref)


def _kind(credential: Mapping[str, Any]) -> str:
    return "api_key" if "api_key" in credential else "oauth2"


# the status


def probe(ctx: Context, integration_id: int, *, actor: Actor | None = None) -> Probe:
    """Probe the connection's credential now and apply the verdict (``apply_probe``)."""
    with ctx.db.session() as session:
        row = session.get(Integration, integration_id)
        if row is None:
            raise NotFound(f"no integration {integration_id}")
        session.expunge(row)
    with connector(ctx, row, keep_token(ctx, integration_id)) as found:
        verdict = found.probe()
    apply_probe(ctx, integration_id, verdict, actor=actor)
    return verdict


def failure_text(verdict: Probe) -> str:
    if verdict.failure is None:
        return verdict.reason
    return verdict.failure.message[:MAX_ERROR]


def apply_probe(
    ctx: Context, integration_id: int, verdict: Probe, *, actor: Actor | None = None
) -> None:
    """Set the status from a probe: a refusal records the provider's words as the last
    error; ``unreachable`` leaves the status alone and records the error only."""
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.get(Integration, integration_id)
        if row is None:
            return
        row.last_probed_at = now
        if verdict.status == ProbeStatus.UNREACHABLE:
            row.last_error_at, row.last_error_message = now, failure_text(verdict)
            return
        status = verdict.status.value
        if status != "active":
            row.last_error_at, row.last_error_message = now, failure_text(verdict)
        changed = row.status != status
        set_status(session, actor or Actor.system("probe"), row, status, verdict.reason, now=now)
    if changed:
        from keyrack.services.integrations import issues

        issues.evaluate(ctx, integration_id)


def set_status(
    session: Session,
    actor: Actor,
    row: Integration,
    status: str,
    reason: str | None,
    *,
    now: datetime,
) -> None:
    """Move the status; a move is a change row and an event (notification, email,
    webhook), in the caller's transaction."""
    before = {"status": row.status, "status_reason": row.status_reason}
    was_pending = row.status_reason == PENDING_REASON
    row.status, row.status_reason = status, reason
    if before["status"] == status:
        return
    record_change(
        session,
        actor,
        row,
        "status",
        now=now,
        before=before,
        after={"status": status, "status_reason": reason},
    )
    if status == "active" and was_pending:
        return  # a first credential that works is no recovery
    audit.record(
        session,
        actor,
        EVENT_OF_STATUS[status],
        now=now,
        org_id=row.org_id,
        target_type="integration",
        target_ref=row.ref,
        before={"status": before["status"]},
        after={
            "name": row.name,
            "status": status,
            "reason": row.last_error_message if status != "active" else None,
        },
    )


@dataclass(frozen=True, slots=True)
class ChangeView:
    id: int
    occurred_at: datetime
    actor: str
    what: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def of(cls, row: IntegrationChange) -> ChangeView:
        return cls(row.id, row.occurred_at, row.actor_label, row.what, row.before, row.after)


def list_changes(
    ctx: Context, scope: Scope, ref: str, *, limit: int = 50, cursor: str | None = None
) -> Page[ChangeView]:
    """The connection's change history, newest first."""
    with ctx.db.session() as session:
        row = _row(session, scope, ref)
        stmt = select(IntegrationChange).where(IntegrationChange.integration_id == row.id)
        page = paginate(session, stmt, IntegrationChange.id, limit=limit, cursor=cursor)
        return page.map(ChangeView.of)
