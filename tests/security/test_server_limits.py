"""Attacks on the HTTP server itself: huge or endless request heads, slow heads and bodies.

Each test runs against a real ``keyrack serve`` process on a real socket (timeouts of
one second, so the slow attacks end soon), and speaks raw HTTP/1.1 the way an
attacker's script would. Memory is read from ``/proc`` only as a loose bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET

TIMEOUT_SECONDS = 1.0
"""The head and body timeouts the server under attack runs with."""
PATIENCE_SECONDS = 15.0
"""How long an attacker's connection waits for the server to cut it (well past the timeout)."""
MiB = 1 << 20


@dataclass
class Served:
    url: str
    port: int
    pid: int
    log: Path

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serving(
    home: Path, template: Path, **settings: str
) -> Iterator[tuple[Served, subprocess.Popen[bytes]]]:
    """``keyrack serve`` in its own process, as an operator starts it, on a copy of the
    migrated SQLite ``template``, with these ``KEYRACK_*`` ``settings``."""
    shutil.copyfile(template, home / "keyrack.db")
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYRACK_")} | {
        "KEYRACK_DATABASE_URL": f"sqlite:///{home / 'keyrack.db'}",
        "KEYRACK_SECRET_KEY": TEST_SECRET,
        "KEYRACK_ENVIRONMENT": "test",
        **settings,
    }
    command = [sys.executable, "-c", "from keyrack.cli import main; main()"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    log = home / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, cwd=home, stdout=sink, stderr=sink)
    served = Served(f"http://127.0.0.1:{port}", port, process.pid, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"keyrack serve exited: {log.read_text()[-2000:]}")
            try:
                if served.healthy():
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield served, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Iterator[Served]:
    with _serving(
        tmp_path_factory.mktemp("served"),
        _sqlite_template,
        KEYRACK_HEADER_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
        KEYRACK_BODY_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
    ) as (served, _process):
        yield served


@dataclass
class Answer:
    status: int | None
    body: bytes
    closed: bool
    """Whether the server closed the connection after answering (or without answering)."""

    def problem_code(self) -> str:
        return str(json.loads(self.body)["type"]).rsplit("/", 1)[-1]


def _read_answer(sock: socket.socket) -> Answer:
    """One response (head and Content-Length body), then whether the connection closed."""
    data = b""
    sock.settimeout(PATIENCE_SECONDS)
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(None, data, closed=True)
            data += chunk
    except TimeoutError:
        return Answer(None, data, closed=False)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.settimeout(5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return Answer(status, body, closed)


def _send_while_reading(port: int, request: bytes) -> Answer:
    """Send ``request`` from one thread while reading the answer in this one, as a
    client flooding the server would (the server may answer before it has read it all)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:

        def flood() -> None:
            with contextlib.suppress(OSError):  # the server stopped reading: the point
                sock.sendall(request)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        answer = _read_answer(sock)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    return answer


def test_a_64_mib_header_is_refused_with_431_before_the_server_grows(served: Served) -> None:
    before = served.rss()
    answer = _send_while_reading(
        served.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (64 * MiB) + b"\r\n\r\n",
    )
    grown = served.rss() - before
    assert answer.status == 431
    assert answer.problem_code() == "headers-too-large"
    assert answer.closed
    assert grown < 16 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
    assert served.healthy()


def test_a_64_mib_url_is_refused_with_431(served: Served) -> None:
    answer = _send_while_reading(
        served.port, b"GET /healthz?" + b"a" * (64 * MiB) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer.status == 431
    assert answer.problem_code() == "headers-too-large"


def test_thousands_of_small_headers_are_refused_with_431(served: Served) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(5000))
    answer = _send_while_reading(
        served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    )
    assert answer.status == 431
    assert answer.problem_code() == "headers-too-large"
    assert served.healthy()


def test_a_large_head_within_the_limit_with_its_body_in_one_packet_is_served(
    served: Served,
) -> None:
    """The limit counts the head, not the body that arrives in the same read."""
    body = json.dumps({"tokens": [{"token": "x" * 100, "url": "u" * 2000}] * 150}).encode()
    request = (
        b"POST /api/v2/leaks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\n"
        + b"X-Padding: %s\r\n" % (b"p" * 60_000)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    assert len(request) > 64 * 1024 + 200_000
    answer = _send_while_reading(served.port, request)
    assert answer.status == 202, answer.body


async def _slowly(port: int, first: bytes, drip: bytes) -> Answer:
    """Send ``first``, then ``drip`` every 200 ms, until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        deadline = time.monotonic() + PATIENCE_SECONDS
        data = b""
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=0.2)
            except TimeoutError:
                if drip:
                    try:
                        writer.write(drip)
                    except ConnectionError:
                        break
                continue
            except ConnectionError:
                return Answer(_status(data), data, closed=True)
            if not chunk:
                return Answer(_status(data), data, closed=True)
            data += chunk
        return Answer(_status(data), data, closed=False)
    finally:
        writer.close()


def _status(data: bytes) -> int | None:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def _attack(port: int, connections: int, first: bytes, drip: bytes) -> list[Answer]:
    async def all_of_them() -> list[Answer]:
        return list(await asyncio.gather(*(_slowly(port, first, drip) for _ in range(connections))))

    return asyncio.run(all_of_them())


def _problem_code(answer: Answer) -> str:
    return Answer(answer.status, answer.body.partition(b"\r\n\r\n")[2], True).problem_code()


def test_heads_sent_a_line_at_a_time_are_cut_with_408(served: Served) -> None:
    """Slowloris: each connection keeps its request head open by adding a header now and then."""
    answers = _attack(
        served.port, 100, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Still-Here: 1\r\n"
    )
    assert [a.status for a in answers] == [408] * len(answers)
    assert all(a.closed for a in answers)
    assert _problem_code(answers[0]) == "request-timeout"
    assert served.healthy()


def test_connections_that_never_send_a_request_are_closed(served: Served) -> None:
    answers = _attack(served.port, 100, b"", b"")
    assert all(a.closed for a in answers)
    assert served.healthy()


def test_many_slow_bodies_are_cut_with_408(served: Served) -> None:
    """Slow POST: a large Content-Length, then a byte now and then, on many connections."""
    answers = _attack(
        served.port,
        300,
        b"POST /api/v2/leaks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n[",
        b" ",
    )
    assert [a.status for a in answers] == [408] * len(answers)
    assert all(a.closed for a in answers)
    assert _problem_code(answers[0]) == "request-timeout"
    assert served.healthy()
    log = served.log.read_text()
    assert "Exception in ASGI application" not in log
    assert "Traceback" not in log


def test_a_request_that_never_finishes_holds_a_shutdown_no_longer_than_its_grace(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    with (
        _serving(
            tmp_path,
            _sqlite_template,
            KEYRACK_BODY_TIMEOUT_SECONDS="120",
            KEYRACK_SHUTDOWN_GRACE_SECONDS="1",
        ) as (served, process),
        socket.create_connection(("127.0.0.1", served.port)) as sock,
    ):
        # a form whose body never comes: the login route waits for it, in flight
        sock.sendall(
            b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"email=a"
        )
        time.sleep(0.5)
        asked = time.monotonic()
        process.terminate()
        process.wait(timeout=20)  # without the grace: until the 120 s body timeout
        assert time.monotonic() - asked < 10
