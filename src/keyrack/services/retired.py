"""Retiring secrets: a digest that stops working for good moves from ``key_secrets`` to
``retired_digests`` with its reason, so verification can say when and why
(``keyrack.domain.admission.why_refused``) instead of calling it garbage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from keyrack.domain.verification import RetiredReason
from keyrack.storage.tables.keys import KeySecret
from keyrack.storage.tables.retired import RetiredDigest


def retire(
    session: Session,
    secrets: Sequence[KeySecret],
    reason: RetiredReason,
    at: datetime,
    *,
    idle_days: int | None = None,
) -> tuple[str, ...]:
    """Retire ``secrets`` (of one key) as of ``at``; returns their digests.

    A secret already past its roll grace was replaced, whatever ends it now: it is
    retired as ``ROLLED`` as of its successor's issue.
    """
    ordered = sorted(secrets, key=lambda secret: (secret.created_at, secret.id))
    for index, secret in enumerate(ordered):
        why, since, days = reason, at, idle_days
        if secret.valid_until is not None and secret.valid_until <= at:
            successor = ordered[index + 1] if index + 1 < len(ordered) else None
            why, days = RetiredReason.ROLLED, None
            since = successor.created_at if successor is not None else secret.valid_until
        session.add(
            RetiredDigest(
                digest=secret.digest,
                key_id=secret.key_id,
                reason=why.value,
                at=since,
                idle_days=days,
            )
        )
        session.delete(secret)
    return tuple(secret.digest for secret in ordered)
