"""What every service call needs: settings, database, clock, event bus, and the actor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from keyrack.config import Settings
from keyrack.domain.verification import KeyIdentity
from keyrack.services.events import EventBus
from keyrack.storage.database import Database

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """The running Keyrack: one per process (or per test), passed to every service."""

    settings: Settings
    db: Database
    clock: Clock = utcnow
    bus: EventBus = field(default_factory=EventBus)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        return cls(settings=settings, db=Database(settings.database_url))


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an operation, for permission checks and the audit trail."""

    label: str
    user_id: int | None = None
    org_id: int | None = None
    ip: str | None = None
    is_staff: bool = False
    key: KeyIdentity | None = None
    """The API key acting, if any: what it holds bounds what it may hand out."""

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(label=what)
