"""The HTTP server ``keyrack serve`` runs: uvicorn on httptools, with limits per connection.

Neither httptools (llhttp) nor uvicorn bounds a request's head: a 64 MiB header is
read whole, and copied again with every read as it grows. Nor does a timer run while
a head or a body arrives: uvicorn's ``timeout_keep_alive`` covers only the idle time
between two requests, and a fresh connection has none at all. (h11 bounds the head,
through ``h11_max_incomplete_event_size``, with a 400, but has no timers either.)
``LimitedHttpToolsProtocol`` adds, for each connection:

- a head (request line and header fields) over ``max_header_bytes``, or with more
  than ``max_headers`` fields → 431 ``headers-too-large``; no more of it is kept
  than one read past the limit;
- a head not complete ``header_timeout_seconds`` after the connection opened or its
  first byte arrived → 408 ``request-timeout``;
- a body not complete ``body_timeout_seconds`` after its head → 408
  ``request-timeout``; the app waiting for it sees the client leave
  (``http.disconnect``), and what it answers is dropped.

It answers as a proxy would: a problem document and ``connection: close``, when no
earlier response on the connection is still going out (else it just closes); then
it drops what the client still sends, so the client can read the answer, and closes
after ``LINGER_SECONDS``. Everything else (parse errors, keep-alive, pipelining) is
uvicorn's. A timer is armed only while a head or a body is incomplete at the end of
a read, so a request that arrives in one read, as nearly all do, costs a few
attribute writes more.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from keyrack.config import Settings
from keyrack.problems import MEDIA_TYPE, STATUS_BY_CODE, problem_body

LINGER_SECONDS = 2.0
"""How long a refused connection's further input is read and dropped before it closes."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> ServerLimits:
        return cls(
            settings.max_header_bytes,
            settings.max_headers,
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
        )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How ``keyrack serve`` runs uvicorn for ``settings``."""
    return {
        "http": http_protocol(settings),
        "log_config": None,
        "server_header": False,
        "proxy_headers": settings.trust_forwarded_for,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
    }


def http_protocol(settings: Settings) -> Callable[..., asyncio.Protocol]:
    """uvicorn's ``http`` option: the protocol class, bound to ``settings``' limits."""
    return functools.partial(LimitedHttpToolsProtocol, limits=ServerLimits.of(settings))


class _Refusal(Exception):
    """Raised in a parser callback to stop parsing a request that breaks a limit."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._in_head = True
        """A head is due: the connection is new, or a request began and its head is incomplete."""
        self._head_bytes = 0
        """Bytes read while the current head was incomplete, by whole reads (an upper bound)."""
        self._read = 0
        """The size of the read being parsed."""
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)  # the first request's head must come in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request: read and dropped
        self._unset_keepalive_if_required()
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _Refusal):
                self._refuse(error.__context__.code, error.__context__.detail)
            else:  # as uvicorn answers
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse("headers-too-large", self._too_large())
            elif self._timer is None:
                self._arm(self.limits.header_timeout)
        elif self._timer is None and self.cycle.more_body:
            self._arm(self.limits.body_timeout)

    # -- parser callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._timer is not None:  # the last request's body timer, or the connection's
            self._disarm()

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            raise _Refusal(
                "headers-too-large",
                f"a request may carry at most {limits.max_headers} header fields",
            )
        if (
            self._head_bytes + self._read > limits.max_header_bytes  # else it cannot be over
            and len(self.url) + sum(len(n) + len(v) for n, v in self.headers)
            > limits.max_header_bytes
        ):
            raise _Refusal("headers-too-large", self._too_large())
        self._in_head = False
        if self._timer is not None:
            self._disarm()
        super().on_headers_complete()

    # -- limits ---------------------------------------------------------------------

    def _too_large(self) -> str:
        return f"the request line and header fields exceed {self.limits.max_header_bytes} bytes"

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._in_head:
            seconds = self.limits.header_timeout
            self._refuse("request-timeout", f"the request head took longer than {seconds:g} s")
        elif self.cycle.more_body:
            seconds = self.limits.body_timeout
            if self.cycle.waiting_for_100_continue:  # the app has not asked for the body yet
                self._arm(seconds)
                return
            self._refuse("request-timeout", f"the request body took longer than {seconds:g} s")

    def _refuse(self, code: str, detail: str) -> None:
        self._refused = True
        self._disarm()
        log.info("refused a request from %s: %s", self.client[0] if self.client else "?", detail)
        if not self._answerable():
            self.transport.close()
            return
        if not self._in_head:  # the app waiting for this body: the client left
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(self._problem(code, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _answerable(self) -> bool:
        """Whether an answer now answers this request: no earlier response is going out."""
        cycle = self.cycle
        if self._in_head:
            return cycle is None or cycle.response_complete
        return not cycle.response_started and not self.pipeline

    def _problem(self, code: str, detail: str) -> bytes:
        body = json.dumps(problem_body(code, detail)).encode()
        head = [STATUS_LINE[STATUS_BY_CODE[code]]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: %s\r\n" % MEDIA_TYPE.encode())
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        return b"".join(head) + body
