"""JSON log lines carrying the request id, with anything shaped like a key scrubbed.

Nothing in Keyrack logs headers or query strings; ``redact`` is the second line of
defence: any ``kr_live_…`` / ``kr_test_…`` token (also URL-encoded) in a message,
an extra field or a traceback is replaced before the line is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("keyrack_request_id", default=None)
"""The id of the request being served (set by the gateway), on every log line."""

_KEY_SHAPE = re.compile(r"kr(?:_|%5[fF])(live|test)(?:_|%5[fF])[0-9A-Za-z]*")
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def redact(text: str) -> str:
    """``text`` with every key-shaped token replaced by ``kr_<mode>_[redacted]``."""
    if "kr" not in text:
        return text
    return _KEY_SHAPE.sub(lambda m: f"kr_{m.group(1)}_[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


def _stamp_request_id(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """Record the request id when a record is made (it may be formatted elsewhere)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return record

    make.keyrack_stamped = True  # type: ignore[attr-defined]
    return make


def install_request_ids() -> None:
    """Stamp every log record with the current request id (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "keyrack_stamped", False):
        logging.setLogRecordFactory(_stamp_request_id(factory))


install_request_ids()


class AccessLog:
    """The gateway's access line per request, the same JSON ``JsonFormatter`` writes, built
    without the logging machinery (no record, no handler lock, no formatter) and written
    off the request path: lines wait in memory until the event loop's next turn, then go
    to ``fd`` in one ``write``. A few µs a line. Nothing in it can hold a secret: the path
    goes through ``redact``, the request id is validated, the key is its ref.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines: list[bytes] = []
        self._second = -1
        self._stamp = ""

    def write(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        key_ref: str | None,
        request_id: str | None,
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        lines = self._lines
        lines.append(
            b'{"ts":"%s.%03d+00:00","level":"INFO","logger":"keyrack.access","message":%s,'
            b'"request_id":%s,"status":%d,"duration_ms":%.3f,"key":%s}\n'
            % (
                self._stamp.encode(),
                int((now - second) * 1000),
                _json(f"{method} {redact(path)} {status}").encode(),
                b'"%s"' % request_id.encode() if request_id else b"null",
                status,
                seconds * 1000,
                b'"%s"' % key_ref.encode() if key_ref else b"null",
            )
        )
        if len(lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: written at once
                self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            with contextlib.suppress(OSError):  # a closed stderr must not fail requests
                os.write(self._fd, b"".join(lines))


_json = json.JSONEncoder(ensure_ascii=True).encode
_access: AccessLog | None = None
_installed: list[logging.Handler] = []


def access_log() -> AccessLog | None:
    """The fast access log while logging is as ``configure`` set it up, at INFO or below
    (a server); else None, and the gateway logs through ``logging`` (libraries, tests
    capturing records)."""
    if _access is not None and logging.getLogger().handlers == _installed:
        return _access
    return None


def configure(level: str = "INFO") -> None:
    """Send every logger (uvicorn's too) to stderr as JSON lines.

    uvicorn's access log is silenced: it prints query strings, where a leaked key
    may sit. The gateway writes its own access line (``keyrack.access``), without them.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
    global _access
    enabled = logging.getLogger("keyrack.access").isEnabledFor(logging.INFO)
    _access = AccessLog(sys.stderr.fileno()) if enabled else None
    _installed[:] = [handler]
