"""Key import: keys issued by another system, brought over by the SHA-256 digest of their
exact secret, so customers need not re-issue them (SPEC §6, ``POST /api/v2/keys/import``).

Up to ``MAX_IMPORT`` keys a call, in one transaction; each key is its own outcome:
``created``, ``unchanged`` (its digest is already a key of this scope: importing again
is harmless) or ``refused`` with the reason, and a refused key never stops the others.
Each key passes the rule every new key passes (``keyrack.domain.authority``: no key
stronger than the caller) and is audited as ``key.imported`` (metadata only: neither
secret nor digest). Its secret is marked ``imported``: it lacks the ``kr_`` shape, so
every instance learns its digest (``keyrack.cache.imported``) before verification
will look it up.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from keyrack.domain import expiry
from keyrack.domain import keys as keyformat
from keyrack.domain import permissions as perms
from keyrack.domain.authority import Authority, Bounds, inherit
from keyrack.domain.events import KeyChanged
from keyrack.domain.ids import new_ref
from keyrack.domain.keys import Environment
from keyrack.domain.tenancy import Scope, validate_name
from keyrack.domain.verification import KeyStatus
from keyrack.errors import InvalidInput, KeyrackError, NotFound
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.keys import (
    DEFAULT_INACTIVITY_DAYS,
    KeyView,
    _authority,
    _check_limits,
    _powers_of,
    _require,
)
from keyrack.storage.scoping import location_in_scope, user_in_org
from keyrack.storage.tables.keys import ApiKey, KeySecret
from keyrack.storage.tables.retired import RetiredDigest
from keyrack.storage.tables.tenancy import Organization

MAX_IMPORT = 1000
IMPORTED_PREFIX = ""
"""An imported key has no ``kr_`` prefix: it is shown as ``••••••••abcd``."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class KeyToImport:
    """One key of another system: the digest of its secret and Keyrack's fields for it."""

    digest: str
    name: str
    last4: str
    environment: Environment = Environment.SANDBOX
    location_id: int | None = None
    owner_id: int | None = None
    permissions: Sequence[str] = ()
    rate_per_second: int | None = None
    concurrency: int | None = None
    allowed_cidrs: Sequence[str] = field(default_factory=tuple)
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    inactivity_days: int = DEFAULT_INACTIVITY_DAYS


class Outcome(enum.StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Imported:
    """What became of the key at ``index`` in the call."""

    index: int
    digest: str
    outcome: Outcome
    ref: str | None = None
    error: str | None = None


def import_keys(
    ctx: Context, actor: Actor, scope: Scope, items: Sequence[KeyToImport]
) -> list[Imported]:
    """Import ``items`` into ``scope``'s organization; one ``Imported`` per item, in order."""
    if not 1 <= len(items) <= MAX_IMPORT:
        raise InvalidInput(f"import between 1 and {MAX_IMPORT} keys a call")
    now = ctx.clock()
    results: list[Imported] = []
    created: list[tuple[int, str]] = []
    with ctx.db.transaction() as session:
        org = session.get(Organization, scope.org_id)
        if org is None:
            raise NotFound("no such organization")
        authority = _authority(session, actor)
        wanted = [item.digest.lower() for item in items]
        existing = _existing(session, wanted)
        retired = _retired(session, wanted)
        for index, (item, digest) in enumerate(zip(items, wanted, strict=True)):
            if digest in existing:
                key_id, ref = existing[digest]
                in_scope = session.get(ApiKey, key_id)
                if in_scope is not None and scope.covers(in_scope.org_id, in_scope.location_id):
                    results.append(Imported(index, digest, Outcome.UNCHANGED, ref))
                else:
                    results.append(
                        Imported(
                            index, digest, Outcome.REFUSED, error="this secret is a key elsewhere"
                        )
                    )
                continue
            if digest in retired:
                error = "this secret stopped working for good; it cannot be imported"
                results.append(Imported(index, digest, Outcome.REFUSED, error=error))
                continue
            try:
                row = _insert(session, actor, authority, scope, org, item, digest, now)
            except KeyrackError as exc:
                results.append(Imported(index, digest, Outcome.REFUSED, error=exc.detail))
                continue
            existing[digest] = (row.id, row.ref)
            created.append((row.id, digest))
            results.append(Imported(index, digest, Outcome.CREATED, row.ref))
    for key_id, digest in created:  # drops a cached "no such key" for it, on every instance
        ctx.bus.publish(KeyChanged(key_id, (digest,)))
    return results


def _existing(session: Session, digests: list[str]) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for start in range(0, len(digests), _CHUNK):
        rows = session.execute(
            select(KeySecret.digest, ApiKey.id, ApiKey.ref)
            .join(ApiKey, KeySecret.key_id == ApiKey.id)
            .where(KeySecret.digest.in_(digests[start : start + _CHUNK]))
        )
        found.update({digest: (key_id, ref) for digest, key_id, ref in rows})
    return found


def _retired(session: Session, digests: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(digests), _CHUNK):
        found.update(
            session.scalars(
                select(RetiredDigest.digest).where(
                    RetiredDigest.digest.in_(digests[start : start + _CHUNK])
                )
            )
        )
    return found


def _insert(
    session: Session,
    actor: Actor,
    authority: Authority,
    scope: Scope,
    org: Organization,
    item: KeyToImport,
    digest: str,
    now: datetime,
) -> ApiKey:
    """Validate and insert one key (nothing is written when it is refused)."""
    if not _DIGEST.fullmatch(digest):
        raise InvalidInput("digest must be the 64-character hex SHA-256 of the exact secret")
    last4 = item.last4
    if not 1 <= len(last4) <= 4 or not last4.isprintable():
        raise InvalidInput("last4 must be the secret's last 1 to 4 characters")
    name = validate_name(item.name)
    granted = perms.normalize(item.permissions)
    cidrs = keyformat.normalize_cidrs(item.allowed_cidrs)
    _check_limits(item.rate_per_second, item.concurrency)
    if not 1 <= item.inactivity_days <= 3650:
        raise InvalidInput("inactivity_days must be between 1 and 3650")
    created_at = item.created_at or now
    if created_at > now or (item.last_used_at is not None and item.last_used_at > now):
        raise InvalidInput("created_at and last_used_at must not be in the future")
    if item.expires_at is not None and item.expires_at <= now:
        raise InvalidInput("expires_at must be in the future")
    idle_deadline = expiry.inactivity_deadline(created_at, item.last_used_at, item.inactivity_days)
    if idle_deadline <= now:
        raise InvalidInput(
            f"the key would be deleted at once for {item.inactivity_days} days unused;"
            " give its last_used_at, or a longer inactivity_days"
        )
    location_id = location_in_scope(session, scope, item.location_id)
    owner_id = user_in_org(session, scope, item.owner_id)
    rate, concurrency, cidrs, expires_at = inherit(
        authority,
        Bounds(item.rate_per_second, item.concurrency, cidrs, item.expires_at),
        org.plan_rate_per_second,
        org.plan_concurrency,
    )
    row = ApiKey(
        ref=new_ref("key"),
        org_id=scope.org_id,
        location_id=location_id,
        owner_id=owner_id,
        name=name,
        environment=Environment(item.environment).value,
        prefix=IMPORTED_PREFIX,
        last4=last4,
        permissions=list(granted),
        rate_per_second=rate,
        concurrency=concurrency,
        allowed_cidrs=list(cidrs),
        status=KeyStatus.ACTIVE.value,
        created_at=created_at,
        created_by_id=actor.user_id,
        created_by_label=actor.label,
        last_used_at=item.last_used_at,
        expires_at=expires_at,
        inactivity_days=item.inactivity_days,
    )
    _require(authority, _powers_of(session, row))
    session.add(row)
    session.flush()
    session.add(
        KeySecret(key_id=row.id, digest=digest, last4=last4, created_at=created_at, imported=True)
    )
    audit.record(
        session,
        actor,
        "key.imported",
        now=now,
        org_id=scope.org_id,
        target_type="key",
        target_ref=row.ref,
        after={**KeyView.of(row).audit_snapshot(), "created_at": created_at.isoformat()},
    )
    return row


def imported_since(ctx: Context, after_id: int) -> list[tuple[int, str]]:
    """``(id, digest)`` of the imported secrets above ``after_id``, for every instance's set."""
    with ctx.db.session() as session:
        rows = session.execute(
            select(KeySecret.id, KeySecret.digest)
            .where(KeySecret.imported == true(), KeySecret.id > after_id)
            .order_by(KeySecret.id)
        )
        return [(row_id, digest) for row_id, digest in rows]
