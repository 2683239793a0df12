"""API keys: create, list, get, update, roll, revoke, and the identity lookup behind verification."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import ColumnElement, Integer, String, cast, null, select, union_all
from sqlalchemy.orm import Session

from keyrack.domain import expiry
from keyrack.domain import keys as keyformat
from keyrack.domain import permissions as perms
from keyrack.domain.authority import Authority, Bounds, Powers, Rank, Ruling, check, inherit
from keyrack.domain.events import KeyChanged
from keyrack.domain.ids import new_ref
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Scope, validate_name
from keyrack.domain.verification import KeyIdentity, KeyStatus, RetiredReason, Retirement
from keyrack.errors import AccessDenied, Conflict, InvalidInput, NotFound
from keyrack.services import audit, retired
from keyrack.services.context import Actor, Context
from keyrack.storage import bulk
from keyrack.storage.paging import Page, paginate
from keyrack.storage.scoping import location_in_scope, user_in_org, within_scope
from keyrack.storage.tables.base import UTCDateTime
from keyrack.storage.tables.keys import ApiKey, KeySecret
from keyrack.storage.tables.retired import RetiredDigest
from keyrack.storage.tables.tenancy import Organization, User

MAX_GRACE = timedelta(days=7)
DEFAULT_INACTIVITY_DAYS = 90


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key as shown to people and programs: metadata, never the secret."""

    id: int
    ref: str
    name: str
    environment: Environment
    org_id: int
    location_id: int | None
    owner_id: int | None
    permissions: tuple[str, ...]
    rate_per_second: int | None
    concurrency: int | None
    allowed_cidrs: tuple[str, ...]
    status: KeyStatus
    prefix: str
    last4: str | None
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    last_used_ip: str | None
    expires_at: datetime | None
    inactivity_days: int
    revoked_at: datetime | None
    revoked_reason: str | None

    @property
    def masked(self) -> str:
        return keyformat.mask(self.prefix, self.last4 or "····")

    @property
    def inactivity_deadline(self) -> datetime | None:
        """When the key is deleted if it stays unused (None once it is not active)."""
        if self.status is not KeyStatus.ACTIVE:
            return None
        return expiry.inactivity_deadline(self.created_at, self.last_used_at, self.inactivity_days)

    @classmethod
    def of(cls, row: ApiKey) -> KeyView:
        return cls(
            id=row.id,
            ref=row.ref,
            name=row.name,
            environment=Environment(row.environment),
            org_id=row.org_id,
            location_id=row.location_id,
            owner_id=row.owner_id,
            permissions=tuple(row.permissions),
            rate_per_second=row.rate_per_second,
            concurrency=row.concurrency,
            allowed_cidrs=tuple(row.allowed_cidrs),
            status=KeyStatus(row.status),
            prefix=row.prefix,
            last4=row.last4,
            created_at=row.created_at,
            created_by=row.created_by_label,
            last_used_at=row.last_used_at,
            last_used_ip=row.last_used_ip,
            expires_at=row.expires_at,
            inactivity_days=row.inactivity_days,
            revoked_at=row.revoked_at,
            revoked_reason=row.revoked_reason,
        )

    def audit_snapshot(self) -> dict[str, object]:
        return {
            "name": self.name,
            "environment": self.environment.value,
            "location_id": self.location_id,
            "owner_id": self.owner_id,
            "permissions": list(self.permissions),
            "rate_per_second": self.rate_per_second,
            "concurrency": self.concurrency,
            "allowed_cidrs": list(self.allowed_cidrs),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "inactivity_days": self.inactivity_days,
            "status": self.status.value,
            "last4": self.last4,
        }


def _check_limits(rate_per_second: int | None, concurrency: int | None) -> None:
    if rate_per_second is not None and not 1 <= rate_per_second <= 100_000:
        raise InvalidInput("rate_per_second must be between 1 and 100000")
    if concurrency is not None and not 1 <= concurrency <= 10_000:
        raise InvalidInput("concurrency must be between 1 and 10000")


def _rank_of(session: Session, user_id: int | None) -> Rank:
    user = session.get(User, user_id) if user_id is not None else None
    return Rank.NOBODY if user is None else Rank.of(user.role, is_staff=user.is_staff)


def _powers_of(session: Session, row: ApiKey) -> Powers:
    """What the key ``row`` can do (or would, if new or changed): limits made effective."""
    org = session.get(Organization, row.org_id)
    assert org is not None
    return Powers(
        owner=_rank_of(session, row.owner_id),
        permissions=frozenset(row.permissions),
        rate_per_second=row.rate_per_second or org.plan_rate_per_second,
        concurrency=row.concurrency or org.plan_concurrency,
        allowed_cidrs=tuple(row.allowed_cidrs),
        expires_at=row.expires_at,
        environment=Environment(row.environment),
        location_id=row.location_id,
    )


def _authority(session: Session, actor: Actor) -> Authority:
    """Who ``actor`` is to the rule: staff; a key, as stored now; or a person of some rank."""
    if actor.is_staff:
        return Authority(Rank.STAFF)
    if actor.key is not None:
        row = session.get(ApiKey, actor.key.key_id)
        assert row is not None  # keys are revoked or expired, never deleted
        return Authority.of_key(_powers_of(session, row))
    return Authority(_rank_of(session, actor.user_id))


def _require(authority: Authority, powers: Powers) -> None:
    ruling = check(authority, powers)
    if not ruling.allowed:
        raise AccessDenied(ruling.detail, code="insufficient-permission")


def authorize(session: Session, actor: Actor, row: ApiKey) -> None:
    """Refuse (``AccessDenied``) unless ``actor`` may hold the key ``row``: change, roll or
    revoke it, or open its claim (``keyrack.domain.authority``)."""
    _require(_authority(session, actor), _powers_of(session, row))


def authority_over(ctx: Context, actor: Actor, scope: Scope, ref: str) -> Ruling:
    """Whether ``actor`` may change, roll or revoke key ``ref``, so adapters offer only that."""
    with ctx.db.session() as session:
        row = key_in_scope(session, scope, ref)
        return check(_authority(session, actor), _powers_of(session, row))


def _in_scope(scope: Scope) -> ColumnElement[bool]:
    return within_scope(scope, ApiKey.org_id, ApiKey.location_id)


def key_in_scope(session: Session, scope: Scope, ref: str, *, lock: bool = False) -> ApiKey:
    """The key ``ref`` if ``scope`` covers it (locked for update with ``lock``), else
    ``NotFound``."""
    stmt = select(ApiKey).where(ApiKey.ref == ref, _in_scope(scope))
    if lock:
        stmt = stmt.with_for_update()
    row = session.scalar(stmt)
    if row is None:
        raise NotFound(f"no key {ref!r}")
    return row


def _digests(session: Session, key_id: int) -> tuple[str, ...]:
    return tuple(session.scalars(select(KeySecret.digest).where(KeySecret.key_id == key_id)))


class NewKey(TypedDict, total=False):
    """The fields of a new key, as ``insert_key`` takes them."""

    name: Required[str]
    environment: Environment
    location_id: int | None
    owner_id: int | None
    permissions: Sequence[str]
    rate_per_second: int | None
    concurrency: int | None
    allowed_cidrs: Sequence[str]
    expires_at: datetime | None
    inactivity_days: int


def create_key(
    ctx: Context, actor: Actor, scope: Scope, **fields: Unpack[NewKey]
) -> tuple[KeyView, str]:
    """Issue a key. Returns the view and the secret, which is never stored or shown again."""
    with ctx.db.transaction() as session:
        return insert_key(session, actor, scope, now=ctx.clock(), **fields)


def insert_key(
    session: Session,
    actor: Actor,
    scope: Scope,
    *,
    now: datetime,
    name: str,
    environment: Environment = Environment.SANDBOX,
    location_id: int | None = None,
    owner_id: int | None = None,
    permissions: Sequence[str] = (),
    rate_per_second: int | None = None,
    concurrency: int | None = None,
    allowed_cidrs: Sequence[str] = (),
    expires_at: datetime | None = None,
    inactivity_days: int = DEFAULT_INACTIVITY_DAYS,
) -> tuple[KeyView, str]:
    """``create_key`` inside a caller's transaction (e.g. approving a key request).

    The one place that issues keys: validates, fills what a key-made key left unset from
    its maker (``authority.inherit``), refuses a key the actor could not hold
    (``authority.check``), stores the digest, audits ``key.created``.
    """
    name = validate_name(name)
    granted = perms.normalize(permissions)
    cidrs = keyformat.normalize_cidrs(allowed_cidrs)
    _check_limits(rate_per_second, concurrency)
    if not 1 <= inactivity_days <= 3650:
        raise InvalidInput("inactivity_days must be between 1 and 3650")
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future")
    location_id = location_in_scope(session, scope, location_id)
    generated = keyformat.generate(Environment(environment))
    owner_id = user_in_org(session, scope, owner_id)
    org = session.get(Organization, scope.org_id)
    if org is None:
        raise NotFound("no such organization")
    authority = _authority(session, actor)
    rate_per_second, concurrency, cidrs, expires_at = inherit(
        authority,
        Bounds(rate_per_second, concurrency, cidrs, expires_at),
        org.plan_rate_per_second,
        org.plan_concurrency,
    )
    row = ApiKey(
        ref=new_ref("key"),
        org_id=scope.org_id,
        location_id=location_id,
        owner_id=owner_id,
        name=name,
        environment=Environment(environment).value,
        prefix=generated.prefix,
        last4=generated.last4,
        permissions=list(granted),
        rate_per_second=rate_per_second,
        concurrency=concurrency,
        allowed_cidrs=list(cidrs),
        status=KeyStatus.ACTIVE.value,
        created_at=now,
        created_by_id=actor.user_id,
        created_by_label=actor.label,
        expires_at=expires_at,
        inactivity_days=inactivity_days,
    )
    _require(authority, _powers_of(session, row))
    session.add(row)
    session.flush()
    session.add(
        KeySecret(key_id=row.id, digest=generated.digest, last4=generated.last4, created_at=now)
    )
    view = KeyView.of(row)
    audit.record(
        session,
        actor,
        "key.created",
        now=now,
        org_id=scope.org_id,
        target_type="key",
        target_ref=row.ref,
        after=view.audit_snapshot(),
    )
    return view, generated.secret


def list_keys(
    ctx: Context,
    scope: Scope,
    *,
    status: KeyStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[KeyView]:
    stmt = select(ApiKey).where(_in_scope(scope))
    if status is not None:
        stmt = stmt.where(ApiKey.status == status.value)
    with ctx.db.session() as session:
        return paginate(session, stmt, ApiKey.id, limit=limit, cursor=cursor).map(KeyView.of)


def get_key(ctx: Context, scope: Scope, ref: str) -> KeyView:
    with ctx.db.session() as session:
        return KeyView.of(key_in_scope(session, scope, ref))


def update_key(
    ctx: Context,
    actor: Actor,
    scope: Scope,
    ref: str,
    *,
    name: str | None = None,
    permissions: Sequence[str] | None = None,
    rate_per_second: int | None = None,
    concurrency: int | None = None,
    allowed_cidrs: Sequence[str] | None = None,
    expires_at: datetime | None = None,
) -> KeyView:
    _check_limits(rate_per_second, concurrency)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = key_in_scope(session, scope, ref, lock=True)
        authority = _authority(session, actor)
        _require(authority, _powers_of(session, row))
        if row.status != KeyStatus.ACTIVE.value:
            raise Conflict(f"key {ref} is {row.status} and can no longer change")
        before = KeyView.of(row)
        if name is not None:
            row.name = validate_name(name)
        if permissions is not None:
            row.permissions = list(perms.normalize(permissions))
        if rate_per_second is not None:
            row.rate_per_second = rate_per_second
        if concurrency is not None:
            row.concurrency = concurrency
        if allowed_cidrs is not None:
            row.allowed_cidrs = list(keyformat.normalize_cidrs(allowed_cidrs))
        if expires_at is not None:
            if expires_at <= now:
                raise InvalidInput("expires_at must be in the future")
            row.expires_at = expires_at
        _require(authority, _powers_of(session, row))
        after = KeyView.of(row)
        if after != before:
            action = (
                "key.permissions_changed"
                if before.permissions != after.permissions
                else "key.updated"
            )
            audit.record(
                session,
                actor,
                action,
                now=now,
                org_id=scope.org_id,
                target_type="key",
                target_ref=ref,
                before=before.audit_snapshot(),
                after=after.audit_snapshot(),
            )
        digests = _digests(session, row.id)
    ctx.bus.publish(KeyChanged(row.id, digests))
    return after


def roll_key(
    ctx: Context, actor: Actor, scope: Scope, ref: str, *, grace: timedelta = timedelta(0)
) -> tuple[KeyView, str]:
    """Issue a new secret for the key. Old secrets stop now, or when ``grace`` ends."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInput("grace must be between 0 and 7 days")
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = key_in_scope(session, scope, ref, lock=True)
        authorize(session, actor, row)
        if row.status != KeyStatus.ACTIVE.value:
            raise Conflict(f"key {ref} is {row.status}; only active keys can be rolled")
        before = KeyView.of(row)
        old = list(session.scalars(select(KeySecret).where(KeySecret.key_id == row.id)))
        old_digests = tuple(secret.digest for secret in old)
        generated = keyformat.generate(Environment(row.environment))
        if not grace:
            retired.retire(session, old, RetiredReason.ROLLED, now)
        for secret in old if grace else ():
            if secret.valid_until is None or secret.valid_until > now + grace:
                secret.valid_until = now + grace
        session.add(
            KeySecret(key_id=row.id, digest=generated.digest, last4=generated.last4, created_at=now)
        )
        row.last4 = generated.last4
        after = KeyView.of(row)
        audit.record(
            session,
            actor,
            "key.rolled",
            now=now,
            org_id=scope.org_id,
            target_type="key",
            target_ref=ref,
            before=before.audit_snapshot(),
            after={**after.audit_snapshot(), "grace_seconds": int(grace.total_seconds())},
        )
    ctx.bus.publish(KeyChanged(row.id, old_digests))
    return after, generated.secret


def revoke_key(ctx: Context, actor: Actor, scope: Scope, ref: str, *, reason: str) -> KeyView:
    """Revoke at once. The digests stay so a revoked key is told apart from garbage."""
    reason = validate_name(reason, "reason", 500)
    now = ctx.clock()
    with ctx.db.transaction() as session:
        row = key_in_scope(session, scope, ref, lock=True)
        authorize(session, actor, row)
        if row.status == KeyStatus.REVOKED.value:
            return KeyView.of(row)
        before = KeyView.of(row)
        row.status = KeyStatus.REVOKED.value
        row.revoked_at = now
        row.revoked_reason = reason
        after = KeyView.of(row)
        audit.record(
            session,
            actor,
            "key.revoked",
            now=now,
            org_id=scope.org_id,
            target_type="key",
            target_ref=ref,
            before=before.audit_snapshot(),
            after={**after.audit_snapshot(), "reason": reason},
        )
        digests = _digests(session, row.id)
    ctx.bus.publish(KeyChanged(row.id, digests))
    return after


def _secrets_by_digest(digest: str) -> Any:
    """Live and retired secrets under ``digest`` as one row source (at most one row: a
    digest is retired only once its secret is gone); a live secret has no retirement."""
    no_text = cast(null(), String)
    live = select(
        KeySecret.digest,
        KeySecret.valid_until,
        KeySecret.key_id,
        no_text.label("reason"),
        cast(null(), UTCDateTime()).label("retired_at"),
        cast(null(), Integer).label("idle_days"),
    ).where(KeySecret.digest == digest)
    gone = select(
        RetiredDigest.digest,
        cast(null(), UTCDateTime()),
        RetiredDigest.key_id,
        RetiredDigest.reason,
        RetiredDigest.at,
        RetiredDigest.idle_days,
    ).where(RetiredDigest.digest == digest)
    return union_all(live, gone).subquery("found")


def find_identity(ctx: Context, digest: str) -> KeyIdentity | None:
    """The identity a secret's digest stands for, with effective limits; None if unknown.

    The verification cache's miss: one indexed read (by the unique digest, among live and
    retired secrets) of everything the gateway needs, in autocommit (no transaction
    around it). A retired digest's identity says when and why it stopped (``retired``).
    """
    found = _secrets_by_digest(digest)
    stmt = (
        select(
            found.c.digest,
            found.c.valid_until,
            ApiKey.id,
            ApiKey.ref,
            ApiKey.name,
            ApiKey.location_id,
            ApiKey.owner_id,
            ApiKey.environment,
            ApiKey.permissions,
            ApiKey.rate_per_second,
            ApiKey.concurrency,
            ApiKey.status,
            ApiKey.expires_at,
            ApiKey.allowed_cidrs,
            Organization.id,
            Organization.slug,
            Organization.api_enabled,
            Organization.plan_rate_per_second,
            Organization.plan_concurrency,
            Organization.allowed_origins,
            User.is_staff,
            found.c.reason,
            found.c.retired_at,
            found.c.idle_days,
        )
        .select_from(found)
        .join(ApiKey, found.c.key_id == ApiKey.id)
        .join(Organization, ApiKey.org_id == Organization.id)
        .outerjoin(User, ApiKey.owner_id == User.id)
        .limit(1)
    )
    with ctx.db.single_reads() as connection:
        row = connection.execute(stmt).first()
    if row is None:
        return None
    (
        _found_digest,
        valid_until,
        key_id,
        ref,
        name,
        location_id,
        owner_id,
        environment,
        permissions,
        rate_per_second,
        concurrency,
        status,
        expires_at,
        allowed_cidrs,
        org_id,
        org_slug,
        api_enabled,
        plan_rate,
        plan_concurrency,
        allowed_origins,
        owner_is_staff,
        reason,
        retired_at,
        idle_days,
    ) = row
    return KeyIdentity(
        key_id=key_id,
        ref=ref,
        name=name,
        org_id=org_id,
        org_slug=org_slug,
        org_api_enabled=api_enabled,
        location_id=location_id,
        owner_id=owner_id,
        environment=Environment(environment),
        permissions=frozenset(permissions),
        rate_per_second=rate_per_second or plan_rate,
        concurrency=concurrency or plan_concurrency,
        status=KeyStatus(status),
        expires_at=expires_at,
        secret_valid_until=valid_until,
        allowed_cidrs=tuple(allowed_cidrs),
        allowed_origins=tuple(allowed_origins),
        owner_is_staff=bool(owner_is_staff),
        retired=None
        if reason is None
        else Retirement(RetiredReason(reason), retired_at, idle_days),
    )


LAST_USED_BATCH = 500
"""Keys per ``UPDATE … FROM <rows as JSON>`` statement of a last-used flush."""
_USED_COLUMNS = ("key_id", "at", "ip")
_USED_TYPES = ("integer", "timestamptz", "text")


def record_last_used(ctx: Context, uses: Mapping[int, tuple[datetime, str | None]]) -> None:
    """Write-behind flush: the latest use per key id, in one transaction of one
    ``UPDATE … FROM <rows as JSON>`` per ``LAST_USED_BATCH`` keys (never older over newer)."""
    if not uses:
        return
    items = list(uses.items())
    with ctx.db.transaction() as session:
        connection = session.connection()
        used = bulk.json_rows(connection, _USED_COLUMNS, _USED_TYPES)
        time_text = bulk.json_times(connection)
        update = (
            "UPDATE api_keys SET last_used_at = used.at, last_used_ip = used.ip "  # noqa: S608
            f"FROM ({used}) AS used WHERE api_keys.id = used.key_id "
            "AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < used.at)"
        )
        for start in range(0, len(items), LAST_USED_BATCH):
            rows = [
                (key_id, time_text(at), ip)
                for key_id, (at, ip) in items[start : start + LAST_USED_BATCH]
            ]
            connection.exec_driver_sql(update, bulk.json_param(rows))
