"""In-process publish/subscribe of the events (``keyrack.domain.events``) other parts must
react to after a commit.

Services publish only after their transaction commits. The gateway's key cache
subscribes to ``KeyChanged``; with Redis configured a bridge relays events to
every instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from keyrack.domain.events import Event

log = logging.getLogger(__name__)


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed", extra={"event": type(event).__name__})
