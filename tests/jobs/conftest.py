"""Fixtures for the job queue: a migrated database of each kind and a worker factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from keyrack.jobs import Enqueued, Worker, enqueue
from keyrack.storage.database import Database
from tests.conftest import MutableClock

LEASE = timedelta(seconds=30)
KIND = "test.job"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


Add = Callable[..., Enqueued]


@pytest.fixture
def add(db: Database, clock: MutableClock) -> Add:
    """Enqueue one job in a transaction of its own, at the test clock's time."""

    def make(kind: str = KIND, payload: dict[str, Any] | None = None, **options: Any) -> Enqueued:
        options.setdefault("now", clock())
        with db.transaction() as session:
            return enqueue(session, kind, payload, **options)

    return make


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers a test starts; each is stopped (grace 0) at the end."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(grace=0)
