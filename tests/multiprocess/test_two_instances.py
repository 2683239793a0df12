"""Two real server processes sharing PostgreSQL and Redis, as a deployment runs them.

Revocations reach the other instance within a second, limits hold across both,
and a crashed process's in-flight slot frees itself when its lease runs out.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from keyrack.domain.tenancy import Scope
from keyrack.services import keys, tenancy
from keyrack.services.context import Context
from keyrack.storage.database import normalize_url
from keyrack.storage.migrate import upgrade
from tests.conftest import (
    OPERATOR,
    PG_SKIP,
    PG_URL,
    REDIS_SKIP,
    REDIS_URL,
    TEST_SECRET,
    make_settings,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PG_URL and REDIS_URL),
        reason=f"needs PostgreSQL and Redis: {PG_SKIP if not PG_URL else REDIS_SKIP}",
    ),
]

LEASE_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


def start_server(database_url: str, log: Path) -> Server:
    port = _free_port()
    env = {
        **os.environ,
        "KEYRACK_DATABASE_URL": database_url,
        "KEYRACK_REDIS_URL": str(REDIS_URL),
        "KEYRACK_SECRET_KEY": TEST_SECRET,
        "KEYRACK_ENVIRONMENT": "test",
        "KEYRACK_CONCURRENCY_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    command = [sys.executable, "-m", "uvicorn", "keyrack.server:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, process)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not start")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@dataclass
class Deployment:
    ctx: Context
    scope: Scope
    admin_secret: str
    one: Server
    two: Server
    database_url: str
    logs: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    assert PG_URL
    schema = f"kr_mp_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    servers: list[Server] = []
    ctx = Context.from_settings(make_settings(url))
    try:
        upgrade(url)
        org = tenancy.create_org(ctx, OPERATOR, name="Two", slug="two")
        _, admin_secret = keys.create_key(
            ctx,
            OPERATOR,
            Scope(org.id),
            name="Admin",
            permissions=["keys:manage"],
            rate_per_second=1000,
            concurrency=100,
        )
        logs = tmp_path_factory.mktemp("servers")
        servers.append(start_server(url, logs / "one.log"))
        servers.append(start_server(url, logs / "two.log"))
        yield Deployment(ctx, Scope(org.id), admin_secret, servers[0], servers[1], url, logs)
    finally:
        for server in servers:
            stop(server)
        ctx.db.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_key_revoked_through_one_instance_is_refused_by_the_other_within_a_second(
    deployment: Deployment,
) -> None:
    view, secret = keys.create_key(
        deployment.ctx, OPERATOR, deployment.scope, name="Victim", rate_per_second=1000
    )
    with httpx.Client(timeout=5) as client:
        other = f"{deployment.two.url}/api/v2/health"
        assert client.get(other, headers={"X-API-Key": secret}).status_code == 200  # cached
        revoked = client.post(
            f"{deployment.one.url}/api/v2/keys/{view.ref}/revoke",
            headers={"X-API-Key": deployment.admin_secret},
            json={"reason": "compromised"},
        )
        assert revoked.status_code == 200
        started = time.monotonic()
        while (status := client.get(other, headers={"X-API-Key": secret}).status_code) == 200:
            if time.monotonic() - started > 1.0:
                break
        elapsed = time.monotonic() - started
    assert status == 401 and elapsed <= 1.0


async def _hammer(url: str, secret: str, until: float, seen: Counter[int]) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < until:
            response = await client.get(url, headers={"X-API-Key": secret})
            seen[response.status_code] += 1


def test_twenty_clients_through_both_instances_get_at_most_the_limit(
    deployment: Deployment,
) -> None:
    _, secret = keys.create_key(deployment.ctx, OPERATOR, deployment.scope, name="Hammered")
    seen: Counter[int] = Counter()
    seconds = 3.0

    async def run() -> None:
        until = time.monotonic() + seconds
        servers = (deployment.one.url, deployment.two.url)
        await asyncio.gather(
            *(_hammer(f"{servers[i % 2]}/api/v2/health", secret, until, seen) for i in range(20))
        )

    asyncio.run(run())
    assert set(seen) <= {200, 429}
    assert 0 < seen[200] <= 5 * seconds + 5
    assert seen[429] > seen[200]


def _hold_open(url: str, secret: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /api/v2/keys HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {secret}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"name": '
    )
    return sock


def test_a_crashed_instances_in_flight_slot_is_released_by_its_lease(
    deployment: Deployment,
) -> None:
    _, secret = keys.create_key(
        deployment.ctx,
        OPERATOR,
        deployment.scope,
        name="Crash",
        permissions=["keys:manage"],
        rate_per_second=1000,
        concurrency=1,
    )
    doomed = start_server(deployment.database_url, deployment.logs / "doomed.log")
    held: socket.socket | None = None
    try:
        with httpx.Client(timeout=5) as client:
            warm = client.get(f"{doomed.url}/api/v2/health", headers={"X-API-Key": secret})
            assert warm.status_code == 200
            health = f"{deployment.two.url}/api/v2/health"
            deadline = time.monotonic() + 15
            while True:
                assert time.monotonic() < deadline, "the held request never took its slot"
                if held is None or _answered(held):  # refused: our poll had the slot
                    if held is not None:
                        held.close()
                    held = _hold_open(doomed.url, secret)
                response = client.get(health, headers={"X-API-Key": secret})
                if response.status_code == 429 and not _answered(held):
                    break
            assert response.json()["type"].endswith("/concurrency-limited")
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
            killed_at = time.monotonic()
            while client.get(health, headers={"X-API-Key": secret}).status_code != 200:
                assert time.monotonic() - killed_at < LEASE_SECONDS + 5
    finally:
        if held is not None:
            held.close()
        stop(doomed)


def _answered(sock: socket.socket) -> bool:
    """Whether the server already answered the held request (it was refused)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_a_sequential_client_alternating_instances_never_finds_its_one_slot_held(
    deployment: Deployment,
) -> None:
    """With one request in flight allowed, a client that waits for each answer before its
    next request is always within the limit, whichever instance each request reaches."""
    _, secret = keys.create_key(
        deployment.ctx, OPERATOR, deployment.scope, name="Sequential", rate_per_second=1000
    )
    statuses: Counter[int] = Counter()
    with httpx.Client(headers={"X-API-Key": secret}, timeout=10) as client:
        for n in range(300):
            server = (deployment.one, deployment.two)[n % 2]
            statuses[client.get(f"{server.url}/api/v2/health").status_code] += 1
    assert statuses == {200: 300}
