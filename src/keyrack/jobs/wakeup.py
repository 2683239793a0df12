"""Waking idle workers when a job is enqueued, so pickup does not wait for a poll.

Three paths, each fired only once the enqueuing transaction commits:

- in-process: ``enqueue`` marks its session; after the commit every worker of
  this process on that database has its ``threading.Event`` set (SQLite's path,
  and the fastest one for a worker inside the server);
- PostgreSQL: ``enqueue`` issues ``pg_notify`` inside the transaction, which the
  server delivers on commit to every worker's ``LISTEN`` connection;
- Redis (when configured): after the commit a message on ``CHANNEL`` reaches
  workers in other processes, e.g. a separate worker on one SQLite file. The
  enqueuing process registers the publisher (``add_publisher``: the server and
  the CLI do); a worker only listens.

A missed wake-up costs at most the worker's poll interval, never a job.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Protocol

import redis
from sqlalchemy import URL, event, func, select
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "keyrack_jobs"
"""The PostgreSQL notification channel and the Redis pub/sub channel."""

_PENDING = "keyrack.jobs.wake"


class Publisher(Protocol):
    def publish(self) -> None: ...


_lock = threading.Lock()
_events: defaultdict[str, set[threading.Event]] = defaultdict(set)
_publishers: defaultdict[str, list[Publisher]] = defaultdict(list)


def key_of(url: URL) -> str:
    """Workers and enqueuers of one database meet under this key."""
    return url.render_as_string(hide_password=True)


def subscribe(url: URL, wake: threading.Event) -> None:
    with _lock:
        _events[key_of(url)].add(wake)


def unsubscribe(url: URL, wake: threading.Event) -> None:
    with _lock:
        _events[key_of(url)].discard(wake)


def add_publisher(url: URL, publisher: Publisher) -> None:
    """Also announce this database's commits through ``publisher`` (e.g. Redis)."""
    with _lock:
        _publishers[key_of(url)].append(publisher)


def remove_publisher(url: URL, publisher: Publisher) -> None:
    with _lock:
        if publisher in _publishers[key_of(url)]:
            _publishers[key_of(url)].remove(publisher)


def announce(url: URL) -> None:
    """Wake this process's workers on ``url`` and tell the publishers."""
    with _lock:
        events = list(_events[key_of(url)])
        publishers = list(_publishers[key_of(url)])
    for wake in events:
        wake.set()
    for publisher in publishers:
        try:
            publisher.publish()
        except Exception:  # a lost wake-up is a poll interval, not a job
            log.warning("could not publish a job wake-up", exc_info=True)


def on_commit(session: Session) -> None:
    """Announce new jobs once ``session``'s transaction commits (nothing on rollback).

    One announcement per transaction, however many jobs it enqueues.
    """
    if _PENDING in session.info:
        return
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, "")))
    session.info[_PENDING] = bind.engine.url


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    url = session.info.pop(_PENDING, None)
    if url is not None:
        announce(url)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


class RedisPublisher:
    """Publishes wake-ups on ``CHANNEL`` (one small message per committed enqueue)."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)

    def publish(self) -> None:
        self._client.publish(CHANNEL, b"")

    def close(self) -> None:
        self._client.close()
