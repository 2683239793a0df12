"""Leaked keys: a valid key found where it must not be is revoked at once.

The audit action ``key.leaked`` is what notifications hook onto (the org's admins
are told); this module only revokes and records.
"""

from __future__ import annotations

from collections.abc import Container

from sqlalchemy import select

from keyrack.domain import keys as keyformat
from keyrack.domain.events import KeyChanged
from keyrack.domain.verification import NO_IMPORTS, KeyStatus
from keyrack.logging import redact
from keyrack.services import audit
from keyrack.services.context import Actor, Context
from keyrack.services.keys import KeyView
from keyrack.storage.tables.keys import ApiKey, KeySecret

LEAK_ACTOR = Actor.system("leak-detector")


def revoke_leaked(
    ctx: Context,
    secret: str,
    where: str,
    *,
    actor: Actor = LEAK_ACTOR,
    imported: Container[str] = NO_IMPORTS,
) -> bool:
    """Revoke the active key ``secret`` belongs to, as leaked ``where``.

    Returns whether a key was revoked (for internal use: callers must not tell a
    reporter whether a token was valid). Secrets past their roll grace period, and
    keys already revoked or expired, are left alone. Only a ``kr_``-shaped secret, or
    one whose digest is among the ``imported`` (``keyrack.cache.imported``), costs a
    lookup.
    """
    if not (
        keyformat.is_well_formed(secret) or (imported and keyformat.digest(secret) in imported)
    ):
        return False
    where = redact(where)[:480]
    reason = f"leaked: {where}"
    now = ctx.clock()
    with ctx.db.transaction() as session:
        found = session.execute(
            select(KeySecret, ApiKey)
            .join(ApiKey, KeySecret.key_id == ApiKey.id)
            .where(KeySecret.digest == keyformat.digest(secret))
            .with_for_update(of=ApiKey)
        ).first()
        if found is None:
            return False
        stored, row = found
        if row.status != KeyStatus.ACTIVE.value or (
            stored.valid_until is not None and stored.valid_until <= now
        ):
            return False
        before = KeyView.of(row)
        row.status = KeyStatus.REVOKED.value
        row.revoked_at = now
        row.revoked_reason = reason
        audit.record(
            session,
            actor,
            "key.leaked",
            now=now,
            org_id=row.org_id,
            target_type="key",
            target_ref=row.ref,
            before=before.audit_snapshot(),
            after={**KeyView.of(row).audit_snapshot(), "reason": reason, "where": where},
        )
        key_id = row.id
        digests = tuple(session.scalars(select(KeySecret.digest).where(KeySecret.key_id == key_id)))
    ctx.bus.publish(KeyChanged(key_id, digests))
    return True
