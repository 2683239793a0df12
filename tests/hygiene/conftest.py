"""Fixtures for key hygiene: a real SMTP server and a real webhook receiver on loopback."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyrack.client.webhooks import SIGNATURE_HEADER, verify_signature
from keyrack.services.context import Context
from tests.live import serve_in_thread


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[str] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            message = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
            self.recipients.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Inbox]]:
    """A real SMTP server on 127.0.0.1; yields its ``smtp://`` URL and inbox."""
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd's start() needs a concrete port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()


@pytest.fixture
def mailing_ctx(ctx: Context, smtp_server: tuple[str, Inbox]) -> Context:
    """``ctx`` with ``KEYRACK_SMTP_URL`` pointing at the test's SMTP server."""
    settings = ctx.settings.model_copy(update={"smtp_url": smtp_server[0]})
    return dataclasses.replace(ctx, settings=settings)


@dataclass
class Receiver:
    """A webhook receiver: answers with ``statuses`` in turn (then 200) and verifies signatures."""

    url: str = ""
    secret: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(
            {
                "body": body,
                "headers": dict(request.headers),
                "verified": verify_signature(
                    self.secret,
                    body,
                    request.headers.get(SIGNATURE_HEADER, ""),
                    now=int(time.time()),
                ),
            }
        )
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback that records and verifies webhook deliveries."""
    hook = Receiver()
    app = Starlette(routes=[Route("/hooks", hook.endpoint, methods=["POST"])])
    with serve_in_thread(app) as url:
        hook.url = f"{url}/hooks"
        yield hook
