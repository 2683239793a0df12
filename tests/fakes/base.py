"""What the provider fakes share: a table indexed on modification time, a sliding-window
rate limiter, injected faults, call counts, and serving on a real socket (plain or TLS).

The table is what keeps a 100,000-record sync fast: records live in a dict by key, and
a sorted list of ``(stamp_ms, key)`` answers "changed since X, in order" by bisection,
so one page of a search or query costs O(log n + page), never a scan.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.live import serve_in_thread

Clock = Callable[[], float]


def to_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def correlation_id() -> str:
    return str(uuid.uuid4())


class Answer(Exception):
    """A complete HTTP answer raised from deep inside a handler (an error, a 429, a 5xx)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass(slots=True)
class Record:
    """One stored record: ``fields`` holds only what was written, never computed values."""

    key: Any
    created_ms: int
    stamp_ms: int
    fields: dict[str, Any]


class Table:
    """Records by key, plus indexes on ``(stamp_ms, key)`` and on ``key``."""

    def __init__(self) -> None:
        self.rows: dict[Any, Record] = {}
        self._by_stamp: SortedList = SortedList()
        self._by_key: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Any) -> Record | None:
        return self.rows.get(key)

    def insert(self, record: Record) -> None:
        self.rows[record.key] = record
        self._by_stamp.add((record.stamp_ms, record.key))
        self._by_key.add(record.key)

    def touch(self, record: Record, stamp_ms: int) -> None:
        self._by_stamp.remove((record.stamp_ms, record.key))
        record.stamp_ms = stamp_ms
        self._by_stamp.add((stamp_ms, record.key))

    def delete(self, record: Record) -> None:
        del self.rows[record.key]
        self._by_stamp.remove((record.stamp_ms, record.key))
        self._by_key.remove(record.key)

    def stamp_bounds(self, lo: int | None, hi: int | None) -> tuple[int, int]:
        """Positions in stamp order of the half-open window ``lo <= stamp < hi``."""
        start = 0 if lo is None else self._by_stamp.bisect_left((lo,))
        stop = len(self._by_stamp) if hi is None else self._by_stamp.bisect_left((hi,))
        return start, max(start, stop)

    def by_stamp(self, start: int, stop: int, reverse: bool = False) -> Iterator[Record]:
        """Records at stamp-order positions ``start..stop`` (reversed: from ``stop`` down)."""
        keys = self._by_stamp.islice(start, stop, reverse=reverse)
        return (self.rows[key] for _, key in keys)

    def after_stamp(self, stamp_ms: int, key: Any, hi: int | None) -> Iterator[Record]:
        """Records strictly after ``(stamp_ms, key)`` in stamp order, below ``hi``."""
        start = self._by_stamp.bisect_right((stamp_ms, key))
        stop = self.stamp_bounds(None, hi)[1]
        return self.by_stamp(start, max(start, stop))

    def keys_after(self, key: Any | None, count: int) -> list[Any]:
        start = 0 if key is None else self._by_key.bisect_right(key)
        return list(islice(self._by_key.islice(start), count))


class SlidingWindow:
    """At most ``limit`` requests per ``window_s`` seconds per key (a rolling window)."""

    def __init__(self, limit: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def take(self, key: str) -> tuple[bool, int, float]:
        """``(allowed, remaining, seconds until a slot frees)`` after trying to take one."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return False, 0, hits[0] + self.window_s - now
        hits.append(now)
        return True, self.limit - len(hits), 0.0


@dataclass
class Fault:
    status: int
    body: Any
    path_contains: str | None
    times: int


@dataclass
class Controls:
    """The parts of a fake's control surface that every fake has: counts and faults."""

    calls: Counter[str] = field(default_factory=Counter)
    _faults: list[Fault] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def fail_next(
        self,
        status: int = 503,
        body: Any = None,
        *,
        times: int = 1,
        path_contains: str | None = None,
    ) -> None:
        """The next ``times`` requests (whose path contains ``path_contains``) get ``status``."""
        with self.lock:
            self._faults.append(Fault(status, body, path_contains, times))

    def count(self, method: str, path: str) -> None:
        self.calls[f"{method} {path}"] += 1

    def injected(self, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.path_contains is None or fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None


_CERT_LOCK = threading.Lock()
_CERT: tuple[str, str] | None = None


def loopback_certificate() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made once per process: ``(cert, key)`` paths.

    The certificate is its own CA, so a client verifies it with ``verify=cert``.
    """
    global _CERT
    with _CERT_LOCK:
        if _CERT is None:
            _CERT = _make_certificate(Path(tempfile.mkdtemp(prefix="fake-tls-")))
        return _CERT


def _make_certificate(folder: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def closing_connections(app: ASGIApp) -> ASGIApp:
    """``app``, answering ``Connection: close`` so no TLS connection idles at shutdown.

    uvicorn's graceful shutdown waits for open connections, and an idle keep-alive TLS
    connection (a requests or httpx pool) never finishes its close handshake: the server
    thread would hang for its whole 10 s join. Plain HTTP closes at once and keeps alive.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, closing)

    return wrapped


@contextmanager
def serve(app: ASGIApp, *, tls: bool = False) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL (``https://`` with ``tls``)."""
    if not tls:
        with serve_in_thread(app) as url:
            yield url
        return
    cert, key = loopback_certificate()
    with serve_in_thread(closing_connections(app), ssl_certfile=cert, ssl_keyfile=key) as url:
        yield "https://" + url.removeprefix("http://")
