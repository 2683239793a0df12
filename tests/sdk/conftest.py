"""SDK fixtures: a ``keyrack.Client`` on the real app, and a recorder of what crossed the wire."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyrack import Client
from tests.conftest import Seeded


class Wire:
    """Every request the SDK sent and every status it got, through httpx event hooks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[httpx.Request] = []
        self.statuses: list[int] = []

    def _on_request(self, request: httpx.Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _on_response(self, response: httpx.Response) -> None:
        with self._lock:
            self.statuses.append(response.status_code)

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self._on_request], "response": [self._on_response]}

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def sdk(live_url: str, seeded: Seeded, wire: Wire) -> Iterator[Client]:
    """A client holding the seeded ``keys:manage`` key, with default pacing."""
    with Client(seeded.secret, base_url=live_url, event_hooks=wire.hooks()) as client:
        yield client
