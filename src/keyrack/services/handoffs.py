"""One-time hand-offs of a key secret, sealed at rest (AES-GCM, purpose ``handoff``).

Two kinds share one table and one rule set (open once, expire, erase):

* **claim**: when staff approve a production-key request, the new key's secret is
  never shown to staff; it is sealed as a claim that an admin of the customer
  organization opens once (console or API, authenticated as that organization), if
  they could have made that key themselves (``keyrack.domain.authority``).
* **link**: the customer admin passes a key to the vendor. The admin presents the
  secret they hold (in a request body, never a URL); Keyrack seals it and returns a
  one-time token (256 bits, stored only as its SHA-256 digest). Whoever holds the
  token opens it once at ``/console/handoff/{token}``; no sign-in, the token is the capability.

Opening returns the secret and erases the ciphertext in the same transaction (the
row stays, with ``opened_at``, for the audit trail). A second opening, or one after
expiry, is ``gone`` (410); an unknown token is ``not-found`` (404). The sweep calls
``purge_expired_handoffs`` so that expired ciphertexts do not wait for a visitor.
Links are never sent by email: the admin copies them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, select, text, update
from sqlalchemy.orm import Session

from keyrack.domain import keys as keyformat
from keyrack.domain.handoffs import HandoffPurpose, HandoffStatus
from keyrack.domain.ids import new_ref
from keyrack.domain.sealing import Sealer
from keyrack.domain.tenancy import Scope
from keyrack.domain.verification import KeyStatus, is_current
from keyrack.errors import InvalidInput, NotFound
from keyrack.services import audit, keys
from keyrack.services.context import Actor, Context
from keyrack.services.keys import KeyView
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import within_scope
from keyrack.storage.tables.keys import ApiKey, KeySecret
from keyrack.storage.tables.requests import Handoff

CLAIM_TTL = timedelta(days=7)
"""How long an approved production key waits for the customer admin to open it.

After that its secret is erased; the admin can still roll the key for a new one."""
TOKEN_BYTES = 32
LINK_PATH = "/console/handoff/{token}"
"""Where people open a link: the console page, which reveals on a button press (a GET
alone, e.g. a chat app's link preview, does not use the link up)."""
_SEALING_PURPOSE = "handoff"


@dataclass(frozen=True, slots=True)
class HandoffView:
    """A hand-off's metadata: never the secret, the ciphertext or the token."""

    ref: str
    purpose: HandoffPurpose
    status: HandoffStatus
    org_id: int
    key_ref: str
    key_name: str
    key_masked: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    opened_at: datetime | None
    opened_by: str | None

    @classmethod
    def of(cls, row: Handoff, key: ApiKey) -> HandoffView:
        if row.opened_at is not None:
            status = HandoffStatus.OPENED
        elif row.sealed is None:
            status = HandoffStatus.EXPIRED
        else:
            status = HandoffStatus.PENDING
        return cls(
            ref=row.ref,
            purpose=HandoffPurpose(row.purpose),
            status=status,
            org_id=row.org_id,
            key_ref=key.ref,
            key_name=key.name,
            key_masked=keyformat.mask(key.prefix, key.last4 or "····"),
            created_at=row.created_at,
            created_by=row.created_by_label,
            expires_at=row.expires_at,
            opened_at=row.opened_at,
            opened_by=row.opened_by_label,
        )


@dataclass(frozen=True, slots=True)
class Revealed:
    """The one reading of a hand-off: the secret and the key it belongs to."""

    handoff: HandoffView
    key: KeyView
    secret: str


@dataclass(frozen=True, slots=True)
class NewLink:
    """A created link. ``token`` is shown once; only its digest is stored."""

    handoff: HandoffView
    token: str

    @property
    def path(self) -> str:
        return LINK_PATH.format(token=self.token)


def _sealer(ctx: Context) -> Sealer:
    return Sealer(ctx.settings.secret_key, _SEALING_PURPOSE)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _erase(session: Session, row: Handoff, now: datetime, *, opened_by: str | None = None) -> bool:
    """Drop the ciphertext, unrecoverably (even from SQLite's free space), if it is still there.

    One conditional UPDATE, so of concurrent callers exactly one wins (returns True),
    whatever the backend's locking; ``opened_by`` also marks the hand-off opened.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA secure_delete=ON"))
    values: dict[str, object] = {"sealed": None, "erased_at": now}
    if opened_by is not None:
        values |= {"opened_at": now, "opened_by_label": opened_by}
    result = session.execute(
        update(Handoff)
        .where(Handoff.id == row.id, Handoff.sealed.is_not(None))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    return cast(CursorResult[Any], result).rowcount == 1


def _compact(ctx: Context) -> None:
    """After an erase on SQLite, fold the write-ahead log (which held the old page) away."""
    if ctx.db.dialect == "sqlite":
        with ctx.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def insert_claim(
    session: Session,
    ctx: Context,
    actor: Actor,
    *,
    key: KeyView,
    secret: str,
    request_id: int | None,
    now: datetime,
) -> HandoffView:
    """Seal a fresh key's secret for its organization's admins (inside the caller's transaction)."""
    row = Handoff(
        ref=new_ref("claim"),
        purpose=HandoffPurpose.CLAIM.value,
        org_id=key.org_id,
        key_id=key.id,
        request_id=request_id,
        token_digest=None,
        sealed=_sealer(ctx).seal(secret),
        created_at=now,
        created_by_label=actor.label,
        expires_at=now + CLAIM_TTL,
    )
    session.add(row)
    session.flush()
    key_row = session.get(ApiKey, key.id)
    assert key_row is not None
    return HandoffView.of(row, key_row)


def _in_scope(scope: Scope) -> ColumnElement[bool]:
    """Hand-offs of keys within ``scope``: a location key sees only its location's."""
    return within_scope(scope, Handoff.org_id, ApiKey.location_id, via=(Handoff.key_id, ApiKey.id))


def list_handoffs(
    ctx: Context,
    scope: Scope,
    *,
    purpose: HandoffPurpose | None = None,
    status: HandoffStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[HandoffView]:
    """The hand-offs of keys in ``scope``, newest first; ``status=PENDING`` lists what is waiting.

    A pending hand-off past its expiry is listed as expired even before the sweep ran.
    """
    now = ctx.clock()
    stmt = select(Handoff).where(_in_scope(scope))
    if purpose is not None:
        stmt = stmt.where(Handoff.purpose == purpose.value)
    if status is HandoffStatus.PENDING:
        stmt = stmt.where(Handoff.sealed.is_not(None), Handoff.expires_at > now)
    elif status is HandoffStatus.OPENED:
        stmt = stmt.where(Handoff.opened_at.is_not(None))
    elif status is HandoffStatus.EXPIRED:
        stmt = stmt.where(
            Handoff.opened_at.is_(None),
            (Handoff.sealed.is_(None)) | (Handoff.expires_at <= now),
        )
    with ctx.db.session() as session:
        page = paginate(session, stmt, Handoff.id, limit=limit, cursor=cursor)
        keys_by_id = {
            key.id: key
            for key in session.scalars(
                select(ApiKey).where(ApiKey.id.in_({row.key_id for row in page.data}))
            )
        }
    return page.map(lambda row: _view_at(row, keys_by_id[row.key_id], now))


def _view_at(row: Handoff, key: ApiKey, now: datetime) -> HandoffView:
    view = HandoffView.of(row, key)
    if view.status is HandoffStatus.PENDING and row.expires_at <= now:
        return replace(view, status=HandoffStatus.EXPIRED)
    return view


def _audit(
    session: Session, actor: Actor, action: str, row: Handoff, key: ApiKey, now: datetime
) -> None:
    audit.record(
        session,
        actor,
        action,
        now=now,
        org_id=row.org_id,
        target_type="key",
        target_ref=key.ref,
        after={
            "handoff": row.ref,
            "purpose": row.purpose,
            "expires_at": row.expires_at.isoformat(),
        },
    )


def _open(
    ctx: Context,
    actor: Actor,
    find: Select[Handoff],
    *,
    action: str,
    missing: str,
    authorize: bool = False,
) -> Revealed:
    """Open the hand-off ``find`` selects: once, before expiry, then erase it.

    With ``authorize``, only if ``actor`` may hold its key (``keys.authorize``).
    """
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = session.scalar(find.with_for_update())
        if row is None:
            raise NotFound(missing)
        key = session.get(ApiKey, row.key_id)
        assert key is not None
        if authorize:
            keys.authorize(session, actor, key)
        sealed = row.sealed
        revealed: Revealed | None = None
        if sealed is None:
            pass
        elif row.expires_at <= now or key.status != KeyStatus.ACTIVE.value:
            if _erase(session, row, now):
                _audit(session, actor, "handoff.expired", row, key, now)
        elif _erase(session, row, now, opened_by=actor.label):
            secret = _sealer(ctx).open(sealed)
            _audit(session, actor, action, row, key, now)
            revealed = Revealed(HandoffView.of(row, key), KeyView.of(key), secret)
    _compact(ctx)
    if revealed is None:
        raise NotFound("this hand-off was already opened or has expired", code="gone")
    return revealed


def open_claim(ctx: Context, actor: Actor, scope: Scope, ref: str) -> Revealed:
    """Reveal, once, the secret of a production key issued on approval to a key in ``scope``.

    Adapters let only the organization's owners/admins (or a ``keys:manage`` key) call this,
    and only an actor who could have made that key opens it (``AccessDenied`` otherwise).
    """
    find = select(Handoff).where(
        Handoff.ref == ref, Handoff.purpose == HandoffPurpose.CLAIM.value, _in_scope(scope)
    )
    return _open(
        ctx, actor, find, action="key.revealed", missing=f"no claim {ref!r}", authorize=True
    )


def create_link(ctx: Context, actor: Actor, scope: Scope, key_ref: str, secret: str) -> NewLink:
    """Seal ``secret`` (which must be the current secret of ``key_ref`` in ``scope``) behind a
    one-time link that expires after ``settings.handoff_ttl_hours``."""
    if not keyformat.is_well_formed(secret):
        raise InvalidInput("key is not a well-formed API key", code="validation-error")
    presented = keyformat.digest(secret)
    now = ctx.clock()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with ctx.db.transaction() as session:
        key = keys.key_in_scope(session, scope, key_ref)
        stored = session.scalar(select(KeySecret).where(KeySecret.digest == presented))
        if (
            stored is None
            or stored.key_id != key.id
            or not is_current(stored.digest, stored.valid_until, presented, lambda: now)
        ):
            raise InvalidInput(f"that is not a current secret of key {key_ref}")
        if key.status != KeyStatus.ACTIVE.value:
            raise InvalidInput(f"key {key_ref} is {key.status}; only active keys are handed off")
        row = Handoff(
            ref=new_ref("handoff"),
            purpose=HandoffPurpose.LINK.value,
            org_id=key.org_id,
            key_id=key.id,
            token_digest=token_digest(token),
            sealed=_sealer(ctx).seal(secret),
            created_at=now,
            created_by_label=actor.label,
            expires_at=now + timedelta(hours=ctx.settings.handoff_ttl_hours),
        )
        session.add(row)
        session.flush()
        _audit(session, actor, "handoff.created", row, key, now)
        view = HandoffView.of(row, key)
    return NewLink(view, token)


def open_link(ctx: Context, token: str, *, ip: str | None = None) -> Revealed:
    """Reveal, once, the secret behind a hand-off link. No sign-in: the token is the capability."""
    find = select(Handoff).where(
        Handoff.token_digest == token_digest(token),
        Handoff.purpose == HandoffPurpose.LINK.value,
    )
    actor = Actor(label="handoff-link", ip=ip)
    return _open(ctx, actor, find, action="handoff.viewed", missing="no such hand-off link")


def purge_expired_handoffs(ctx: Context, now: datetime | None = None) -> int:
    """Erase the ciphertext of every hand-off past its expiry; returns how many (for the sweep)."""
    now = now or ctx.clock()
    actor = Actor.system("sweep")
    erased = 0
    with ctx.db.transaction() as session:
        rows = list(
            session.scalars(
                select(Handoff)
                .where(Handoff.sealed.is_not(None), Handoff.expires_at <= now)
                .with_for_update()
            )
        )
        for row in rows:
            key = session.get(ApiKey, row.key_id)
            assert key is not None
            if _erase(session, row, now):
                erased += 1
                _audit(session, actor, "handoff.expired", row, key, now)
    if erased:
        _compact(ctx)
    return erased
