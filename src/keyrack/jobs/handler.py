"""What a handler sees: the running job, and how it asks for a later run or gives up.

A handler returns to succeed, raises to fail (retried with its backoff, and
``failed`` after the last attempt), raises ``Snooze`` to run later without
counting the attempt (a provider's Retry-After, a busy resource), or
``Discard`` to fail at once. ``AttemptFailed`` (and ``Discard``) say the failure
was foreseen, e.g. a receiver answering 503: logged in one line, without the
traceback any other exception gets. Long handlers call ``job.progress(...)`` and
check ``job.should_stop()`` (true once the job is canceled, taken over, or its
worker is stopping).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyrack.domain.jobs import Backoff
from keyrack.jobs import queue
from keyrack.jobs.queue import JobView
from keyrack.storage.database import Database


class Snooze(Exception):
    """Run this job again in ``seconds``; the attempt does not count as a failure."""

    def __init__(self, seconds: float, reason: str | None = None) -> None:
        super().__init__(reason or f"snoozed for {seconds} s")
        self.seconds = seconds
        self.reason = reason


class Discard(Exception):
    """Fail this job now, without the attempts left: retrying cannot help."""


class AttemptFailed(Exception):
    """This attempt failed as foreseen (a refused call): retried like any other failure."""


class RunningJob:
    """What a handler gets: the job as claimed, progress reports, and a stop signal."""

    def __init__(
        self, view: JobView, db: Database, worker_id: str, stopping: Callable[[], bool]
    ) -> None:
        self.view = view
        self._db, self._worker_id, self._stopping = db, worker_id, stopping
        self._progress: dict[str, Any] = dict(view.progress or {})
        self.lost = threading.Event()
        """Set when the job is no longer this worker's (canceled, or its lease taken)."""

    @property
    def id(self) -> int:
        return self.view.id

    @property
    def kind(self) -> str:
        return self.view.kind

    @property
    def payload(self) -> dict[str, Any]:
        return self.view.payload

    @property
    def attempt(self) -> int:
        """1 on the first run."""
        return self.view.attempt

    def progress(self, **values: Any) -> None:
        """Merge ``values`` (JSON) into the job's progress, e.g. ``rows_done=500``."""
        self._progress.update(values)
        if not queue.report_progress(self._db, self.id, self._worker_id, dict(self._progress)):
            self.lost.set()

    def should_stop(self) -> bool:
        """True once the job was canceled or handed to another worker, or the worker stops."""
        return self.lost.is_set() or self._stopping()


Run = Callable[[RunningJob], None]
DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, slots=True)
class Handler:
    """Runs jobs of ``kind``; failed attempts wait ``backoff`` before the next."""

    kind: str
    run: Run
    backoff: Backoff = DEFAULT_BACKOFF
