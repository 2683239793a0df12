"""The rules of a durable job: its states, priority bands, retry delays and periods.

A job waits (``available``, or ``scheduled`` for a later ``run_at``), is taken by
one worker for a lease (``running``), and ends ``succeeded``, ``failed`` (its
attempts used up, with its last error) or ``canceled``. A failed attempt waits
a random delay between zero and ``base * 2**(attempt - 1)`` (capped): "full
jitter", so many jobs failing together do not retry together. Lower priorities
run first; jobs in the ``BULK`` band (sync runs, exports) run in slots of their
own, so a delivery never waits behind a ten-minute export. A periodic job's
period is ``offset + k * every`` after the Unix epoch; its start names the
period, so each is enqueued once.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_MAX_ATTEMPTS = 10
MAX_ERROR_LENGTH = 2000


class State(enum.StrEnum):
    AVAILABLE = "available"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


WAITING: tuple[State, ...] = (State.AVAILABLE, State.SCHEDULED)
ACTIVE: tuple[State, ...] = (*WAITING, State.RUNNING)
"""A unique key admits one job in these states at a time."""
FINISHED: tuple[State, ...] = (State.SUCCEEDED, State.FAILED, State.CANCELED)


def waiting_state(run_at: datetime, now: datetime) -> State:
    """``available`` when due now, ``scheduled`` when it waits for a later moment."""
    return State.SCHEDULED if run_at > now else State.AVAILABLE


class Priority(enum.IntEnum):
    """Lower runs first."""

    DELIVERY = 0
    """Webhook deliveries and emails: someone is waiting for them."""
    ROUTINE = 10
    """The expiry sweep, purges."""
    PROBE = 20
    """Credential probes."""
    BULK = 30
    """Sync runs and exports: long, and kept to slots of their own."""


def is_bulk(priority: int) -> bool:
    return priority >= Priority.BULK


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: attempt ``n`` waits ``U(0, min(cap, base * 2**(n-1)))``."""

    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)

    def ceiling(self, attempt: int) -> timedelta:
        """The longest wait after failed attempt ``attempt`` (1 for the first)."""
        return min(self.cap, self.base * (1 << min(max(attempt - 1, 0), 30)))

    def delay(self, attempt: int, draw: Callable[[], float] = random.random) -> timedelta:
        return self.ceiling(attempt) * draw()


@dataclass(frozen=True, slots=True)
class Every:
    """A period of ``every``, shifted by ``offset`` from the epoch (``daily(time(3))``: 03:00 UTC)."""

    every: timedelta
    offset: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError("a period must be longer than zero")

    @classmethod
    def daily(cls, at: time) -> Every:
        return cls(
            timedelta(days=1), timedelta(hours=at.hour, minutes=at.minute, seconds=at.second)
        )

    def start(self, now: datetime) -> datetime:
        """The start of the period ``now`` falls in."""
        periods = (now - EPOCH - self.offset) // self.every
        return EPOCH + self.offset + periods * self.every

    def next_start(self, now: datetime) -> datetime:
        return self.start(now) + self.every


def periodic_key(name: str, period_start: datetime) -> str:
    """The unique key of a periodic job: one per schedule and period."""
    return f"periodic:{name}:{period_start.astimezone(UTC).isoformat()}"
