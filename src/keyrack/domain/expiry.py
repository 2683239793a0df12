"""When a key expires and which notice is due.

A key has an inactivity deadline, ``anchor + inactivity_days`` where the anchor
is its last use (or its creation when never used), and optionally an absolute
``expires_at``. The earlier of the two governs. Notices go out 15, 7 and 1 days
before it; at the deadline the key expires. A notice is identified by
``(kind, anchor, threshold)``: a use moves the anchor and so starts a fresh
cycle, while re-evaluating the same moment finds the same notice again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

NOTICE_DAYS: tuple[int, ...] = (15, 7, 1)
EXPIRED = "expired"


class DeadlineKind(enum.StrEnum):
    INACTIVITY = "inactivity"
    ABSOLUTE = "absolute"


@dataclass(frozen=True, slots=True)
class Deadline:
    kind: DeadlineKind
    anchor: datetime
    """The idle stretch's start (inactivity) or ``expires_at`` itself (absolute)."""
    at: datetime


@dataclass(frozen=True, slots=True)
class Due:
    """What a sweep owes a key now: a notice (``days_left``) or the expiry (``days_left=0``)."""

    deadline: Deadline
    threshold: str
    """``"15"``, ``"7"``, ``"1"`` or ``"expired"``: unique per key and anchor."""
    days_left: int

    @property
    def expires(self) -> bool:
        return self.threshold == EXPIRED


def idle_anchor(created_at: datetime, last_used_at: datetime | None) -> datetime:
    return max(created_at, last_used_at) if last_used_at is not None else created_at


def inactivity_deadline(
    created_at: datetime, last_used_at: datetime | None, inactivity_days: int
) -> datetime:
    """When a key left unused lapses: ``inactivity_days`` after its idle anchor."""
    return idle_anchor(created_at, last_used_at) + timedelta(days=inactivity_days)


def deadline_of(
    created_at: datetime,
    last_used_at: datetime | None,
    inactivity_days: int,
    expires_at: datetime | None,
) -> Deadline:
    """The deadline that comes first: inactivity, or the absolute ``expires_at``."""
    anchor = idle_anchor(created_at, last_used_at)
    idle = Deadline(
        DeadlineKind.INACTIVITY,
        anchor,
        inactivity_deadline(created_at, last_used_at, inactivity_days),
    )
    if expires_at is not None and expires_at <= idle.at:
        return Deadline(DeadlineKind.ABSOLUTE, expires_at, expires_at)
    return idle


def due(deadline: Deadline, now: datetime) -> Due | None:
    """The most urgent step reached at ``now``, or None before the first notice.

    Only the most urgent one is returned: a worker that was down for a week
    sends the 7-day notice, not a late 15-day one as well.
    """
    if now >= deadline.at:
        return Due(deadline, EXPIRED, 0)
    for days in sorted(NOTICE_DAYS):
        if now >= deadline.at - timedelta(days=days):
            return Due(deadline, str(days), days)
    return None


def notice_horizon(now: datetime) -> datetime:
    """A deadline at or before this has a step due at ``now``; a later one has none (so a
    sweep need only look at keys whose deadline may be this early)."""
    return now + timedelta(days=max(NOTICE_DAYS))


def earliest_notice_at(deadline: Deadline) -> datetime:
    """From when on a key needs a look (its first notice)."""
    return deadline.at - timedelta(days=max(NOTICE_DAYS))
