"""With the database unreachable, every path says so (503 ``unavailable``), and nothing crashes.

An attacker who can slow or cut the database off (or an outage) must not get 500s,
stack traces, or a log full of "Exception in ASGI application" that hides the
cause. Two real unreachable databases: PostgreSQL on a closed port, and a SQLite
file in a directory that does not exist.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyrack.domain.keys import Environment, generate
from keyrack.http.protocol import uvicorn_options
from keyrack.logging import JsonFormatter
from keyrack.server import create_app
from keyrack.services import jobs
from keyrack.services.context import Context
from keyrack.storage.database import Database
from tests.conftest import TEST_SECRET, make_settings
from tests.live import serve_in_thread

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.fixture(params=["postgresql", "sqlite"])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return f"postgresql://keyrack@127.0.0.1:{_closed_port()}/keyrack"
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'keyrack.db'}"


@pytest.fixture
def down(unreachable_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(unreachable_url)
    ctx = Context(settings=settings, db=Database(unreachable_url))
    with (
        serve_in_thread(create_app(ctx=ctx), **uvicorn_options(settings)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client
    ctx.db.dispose()


def _api_key() -> str:
    return generate(Environment.SANDBOX).secret


def _post_form(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    """Fill in the form at ``path`` (its page needs no database) and post it."""
    page = client.get(path)
    assert page.status_code == 200
    found = _CSRF.search(page.text)
    assert found is not None
    return client.post(path, data={**fields, "csrf_token": found.group(1)})


def _signed_in(client: httpx.Client, path: str) -> httpx.Response:
    client.cookies.set("keyrack_session", "s" * 43)
    return client.get(path)


API_CALLS = {
    "readyz": lambda c: c.get("/readyz"),
    "an API key route": lambda c: c.get("/api/v2/keys", headers={"X-API-Key": _api_key()}),
    "leak report": lambda c: c.post("/api/v2/leaks", json=[{"token": _api_key()}]),
    "hand-off link": lambda c: c.post("/api/v2/handoffs/open", json={"token": "t" * 43}),
}
CONSOLE_CALLS = {
    "sign-in": lambda c: _post_form(c, "/console/login", email="owner@keyrack.local", password="x"),
    "home": lambda c: _signed_in(c, "/console"),
    "settings": lambda c: _signed_in(c, "/console/settings/api"),
    "hand-off": lambda c: _post_form(c, f"/console/handoff/{'t' * 43}"),
}


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [JsonFormatter().format(record) for record in caplog.records]
    return [
        line for line in lines if "Traceback" in line or "Exception in ASGI application" in line
    ]


@pytest.mark.parametrize("call", API_CALLS.values(), ids=API_CALLS.keys())
def test_with_the_database_cut_off_every_api_path_answers_503_unavailable(
    down: httpx.Client, call: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = call(down)  # type: ignore[operator]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unavailable")
    assert _tracebacks(caplog) == []


def test_with_the_database_cut_off_a_key_in_the_url_is_still_refused_without_a_traceback(
    down: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = down.get(f"/api/v2/keys?api_key={_api_key()}")
    assert response.status_code == 400
    assert response.json()["type"].endswith("/key-in-url")
    assert _tracebacks(caplog) == []


@pytest.mark.parametrize("call", CONSOLE_CALLS.values(), ids=CONSOLE_CALLS.keys())
def test_with_the_database_cut_off_every_console_page_is_a_503_error_page(
    down: httpx.Client, call: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = call(down)  # type: ignore[operator]
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Service unavailable" in response.text
    assert _tracebacks(caplog) == []


@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "1"], ["migrate"], ["keys", "list", "--org", "acme"]],
    ids=["serve", "migrate", "keys list"],
)
def test_a_cli_command_with_the_database_cut_off_says_so_in_one_line_and_exits_1(
    unreachable_url: str, tmp_path: Path, command: list[str]
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYRACK_")}
    env |= {"KEYRACK_DATABASE_URL": unreachable_url, "KEYRACK_SECRET_KEY": TEST_SECRET}
    done = subprocess.run(
        [sys.executable, "-c", "from keyrack.cli import main; main()", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, said
    assert len(said) == 1, said
    assert said[0].startswith("error (unavailable): the database is unreachable")


def test_the_worker_with_the_database_cut_off_logs_one_line_per_try_and_keeps_trying(
    unreachable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(unreachable_url, job_poll_seconds=0.05)
    ctx = Context(settings=settings, db=Database(unreachable_url))
    worker = jobs.worker(ctx)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("job dispatch failed")]

    with caplog.at_level(logging.INFO):
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while len(failures()) < 2 and time.monotonic() < deadline:  # it keeps trying
                time.sleep(0.02)
        finally:
            worker.stop()
    assert len(failures()) >= 2
    assert all("the database is unreachable" in r.getMessage() for r in failures())
    assert _tracebacks(caplog) == []
    ctx.db.dispose()
