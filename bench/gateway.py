"""Gateway overhead: authenticated vs unauthenticated throughput on one server process,
and Keyrack's authenticated route beside its peers'.

    .venv/bin/python bench/gateway.py [--seconds 4] [--rounds 2] [--connections 32]
                                      [--peers-python PATH]

Starts ``keyrack serve`` (one process, as an operator runs it, server limits
included; SQLite in a temporary directory; pinned to CPU 0 with ``taskset`` when
installed), then drives it from another process (CPU 1) with 32 keep-alive
connections: ``wrk`` when installed (``apt-get install wrk``), else a small asyncio
HTTP/1.1 client. Endpoints: ``GET /healthz`` (no auth) and ``GET /api/v2/keys/self``
with a valid key whose limits are raised out of the way, interleaved; first with the
in-process limiter, then with the Redis limiter (``KEYRACK_BENCH_REDIS_URL``, else
``KEYRACK_TEST_REDIS_URL``, else redis://127.0.0.1:6379/0; skipped if unreachable).
Prints req/s, p50/p99 latency, the server's CPU time per request (``/proc``) and the
authenticated/unauthenticated ratios, each with the access log on
(``KEYRACK_LOG_LEVEL=INFO``, the default) and off (``WARNING``), and what one access
line costs, against the same line through ``logging``.
Targets: >= 0.85 in-process, >= 0.6 with Redis.

Then the peers, when their venv exists (``bench/peers/setup.sh`` makes
``.venv-peers``) or ``--peers-python`` names its python: each app of
``bench/peers/`` under uvicorn as ``keyrack serve`` runs it (httptools, uvloop, on
CPU 0), its access log on or off as Keyrack's, beside a fresh Keyrack with the
matching limiter, the two ``keys/self`` interleaved: a bare FastAPI route without
auth, the hand-written ``APIKeyHeader`` + SQLAlchemy lookup (both against the
in-process limiter), slowapi in memory and slowapi on Redis (the key checked in a
dict). Prints Keyrack's ratios against each, by server CPU per request (what the
targets judge) and by throughput. Targets: >= 0.9 against the bare route, >= 5
against the hand-written one, >= 1 (ahead) against slowapi.
A missed target, or any non-2xx answer, makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from keyrack.config import Settings
from keyrack.domain.tenancy import Scope
from keyrack.services import keys, tenancy
from keyrack.services.context import Actor, Context
from keyrack.storage.migrate import upgrade

SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
TARGETS = {"memory": 0.85, "redis": 0.6}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float = 0.0
    """Server CPU time (user + system, all its threads) per request, in µs."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def merge(results: list[Result]) -> Result:
    """Several interleaved runs as one: totals, request-weighted latencies."""
    total = sum(r.requests for r in results)
    return Result(
        sum(r.rps for r in results) / len(results),
        sum(r.p50_ms * r.requests for r in results) / total,
        max(r.p99_ms for r in results),
        sum(r.errors for r in results),
        total,
        sum(r.cpu_us * r.requests for r in results) / total,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(database_url: str) -> str:
    """Migrate, create an org and a key with limits out of the way; return the secret."""
    upgrade(database_url)
    ctx = Context.from_settings(Settings(database_url=database_url, secret_key=SECRET_KEY))
    operator = Actor(label="bench", is_staff=True)
    org = tenancy.create_org(ctx, operator, name="Bench", slug="bench")
    _, secret = keys.create_key(
        ctx, operator, Scope(org.id), name="Bench key", rate_per_second=100_000, concurrency=10_000
    )
    ctx.db.dispose()
    return secret


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from keyrack.cli import main; main()"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    return start("keyrack serve", command, env, port, "/healthz", {})


def start(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    headers: dict[str, str],
    stderr: int | IO[bytes] = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start a server on CPU 0 and wait until ``ready_path`` answers 200."""
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    seconds = 90  # a loaded shared machine can take most of a minute
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            url = f"http://127.0.0.1:{port}{ready_path}"
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    if proc.poll() is not None:
        raise RuntimeError(f"{name} exited with status {proc.returncode}")
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{name} did not answer {ready_path} with 200 within {seconds} s")


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> Result:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = {m[0]: float(m[1]) * _UNITS[m[2]] for m in _WRK_LATENCY.findall(out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Result(rps, latency["50"], latency["99"], int(bad.group(1)) if bad else 0, total)


async def _client(
    port: int, request: bytes, stop: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 2"):
                errors.append(1)
    finally:
        writer.close()
        await writer.wait_closed()


def run_asyncio(port: int, path: str, headers: dict[str, str], seconds: int, conns: int) -> Result:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        stop = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            *(_client(port, request, stop, latencies, errors) for _ in range(conns))
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    return Result(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        len(errors),
        len(latencies),
    )


def measure(
    pid: int, port: int, path: str, headers: dict[str, str], seconds: int, conns: int
) -> Result:
    """One run (after a 1 s warm-up), with the server's CPU time per request."""
    if shutil.which("wrk"):
        url = f"http://127.0.0.1:{port}{path}"
        run_wrk(url, headers, 1, conns)
        before = cpu_seconds(pid)
        result = run_wrk(url, headers, seconds, conns)
    else:
        run_asyncio(port, path, headers, 1, conns)
        before = cpu_seconds(pid)
        result = run_asyncio(port, path, headers, seconds, conns)
    result.cpu_us = (cpu_seconds(pid) - before) / max(1, result.requests) * 1e6
    return result


def redis_url() -> str | None:
    url = (
        os.environ.get("KEYRACK_BENCH_REDIS_URL")
        or os.environ.get("KEYRACK_TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/0"
    )
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        return None
    return url


def print_row(name: str, result: Result, width: int = 24) -> None:
    print(
        f"  {name:<{width}} {result.rps:>7.0f} req/s   p50 {result.p50_ms:6.2f} ms"
        f"   p99 {result.p99_ms:7.2f} ms   server CPU {result.cpu_us:5.0f} µs/req"
        f"   non-2xx {result.errors}"
    )


def run_pair(label: str, target: float, env: dict[str, str], secret: str, args: Any) -> bool:
    """The unauthenticated and authenticated endpoints on one server, interleaved; prints
    them and their ratios, and returns whether the target was missed."""
    port = free_port()
    server = start_server(env, port)
    plain_runs: list[Result] = []
    authed_runs: list[Result] = []
    try:
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            plain_runs.append(
                measure(server.pid, port, "/healthz", {}, args.seconds, args.connections)
            )
            authed_runs.append(
                measure(
                    server.pid,
                    port,
                    "/api/v2/keys/self",
                    {"X-API-Key": secret},
                    args.seconds,
                    args.connections,
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=20)
    plain, authed = merge(plain_runs), merge(authed_runs)
    ratio = authed.rps / plain.rps
    capacity = plain.cpu_us / authed.cpu_us
    print(f"\nlimiter: {label}")
    print_row("GET /healthz", plain)
    print_row("GET /api/v2/keys/self", authed)
    print(
        f"  ratio authenticated/unauthenticated: throughput {ratio:.2f}, "
        f"CPU capacity {capacity:.2f} (target >= {target})"
    )
    return ratio < target or bool(plain.errors or authed.errors)


@dataclass(frozen=True)
class Peer:
    label: str
    module: str
    """``bench/peers/<module>.py``, served as ``<module>:app``."""
    limiter: str
    """``memory`` or ``redis``: Keyrack's limiter beside it, and slowapi's storage."""
    target: float
    """For Keyrack's CPU capacity against the peer: its CPU per request over Keyrack's."""


PEERS = (
    Peer("bare FastAPI route, no auth", "bare_fastapi", "memory", 0.9),
    Peer("hand-written APIKeyHeader + SQLAlchemy", "handwritten", "memory", 5.0),
    Peer("slowapi, in memory", "slowapi_app", "memory", 1.0),
    Peer("slowapi on Redis", "slowapi_app", "redis", 1.0),
)
PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEERS_PYTHON = PEERS_DIR.parents[1] / ".venv-peers" / "bin" / "python"


def peer_command(python: Path, peer: Peer, port: int, access_log: bool) -> list[str]:
    """uvicorn as ``keyrack serve`` runs it: httptools, uvloop, no server header, no
    proxy headers; its own access log on or off to match Keyrack's."""
    command = [str(python), "-m", "uvicorn", f"{peer.module}:app", "--app-dir", str(PEERS_DIR)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--http", "httptools"]
    command += ["--loop", "uvloop", "--no-server-header", "--no-proxy-headers"]
    return command if access_log else [*command, "--no-access-log"]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def run_peer(
    peer: Peer,
    python: Path,
    keyrack_env: dict[str, str],
    peer_env: dict[str, str],
    access_log: bool,
    secret: str,
    args: Any,
) -> bool:
    """Keyrack's ``keys/self`` and the peer's, each on its own server, interleaved; prints
    both and Keyrack's ratios against the peer, and returns whether the target was missed."""
    path, headers = "/api/v2/keys/self", {"X-API-Key": secret}
    keyrack_port, peer_port = free_port(), free_port()
    keyrack_runs: list[Result] = []
    peer_runs: list[Result] = []
    with tempfile.TemporaryFile() as peer_stderr, contextlib.ExitStack() as servers:
        try:
            keyrack = start_server(keyrack_env, keyrack_port)
            servers.callback(stop, keyrack)
            command = peer_command(python, peer, peer_port, access_log)
            server = start(
                f"uvicorn {peer.module}:app",
                command,
                peer_env,
                peer_port,
                path,
                headers,
                peer_stderr,
            )
            servers.callback(stop, server)
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                keyrack_runs.append(
                    measure(
                        keyrack.pid, keyrack_port, path, headers, args.seconds, args.connections
                    )
                )
                peer_runs.append(
                    measure(server.pid, peer_port, path, headers, args.seconds, args.connections)
                )
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            peer_stderr.seek(0)
            tail = peer_stderr.read().decode(errors="replace").strip().splitlines()[-3:]
            print(f"  {peer.label}: failed: {error}", *(f"    {line}" for line in tail), sep="\n")
            return True
    ours, theirs = merge(keyrack_runs), merge(peer_runs)
    capacity = theirs.cpu_us / ours.cpu_us
    missed = capacity < peer.target
    print_row(f"Keyrack, {peer.limiter} limiter", ours, 40)
    print_row(peer.label, theirs, 40)
    print(
        f"  Keyrack against it: CPU capacity {capacity:.2f}, throughput "
        f"{ours.rps / theirs.rps:.2f} (target >= {peer.target} by CPU)"
        + (": missed" if missed else "")
    )
    return missed or bool(ours.errors or theirs.errors)


def run_peers(
    python: Path, base_env: dict[str, str], redis: str | None, secret: str, tmp: str, args: Any
) -> bool:
    """Every peer beside a Keyrack with the matching limiter and access log; returns whether
    a target was missed."""
    failed = False
    peer_env = {
        **base_env,
        "PEER_API_KEY": secret,
        "PEER_DATABASE_URL": f"sqlite:///{Path(tmp) / 'peer.db'}",
    }
    for logging_label, level in (("on", "INFO"), ("off", "WARNING")):
        print(
            f"\npeers, access log {logging_label} (GET /api/v2/keys/self, each beside a Keyrack):"
        )
        for peer in PEERS:
            env, own_env = dict(base_env, KEYRACK_LOG_LEVEL=level), dict(peer_env)
            if peer.limiter == "redis":
                if redis is None:
                    print(f"  {peer.label}: redis unreachable, skipped")
                    continue
                env["KEYRACK_REDIS_URL"] = own_env["PEER_REDIS_URL"] = redis
            failed |= run_peer(peer, python, env, own_env, logging_label == "on", secret, args)
    return failed


def print_line_cost(n: int = 50_000) -> None:
    """µs per access line: the gateway's ``AccessLog`` against the same line through
    ``logging`` (record, JSON formatter, stream handler), both to /dev/null."""
    import logging

    from keyrack.logging import AccessLog, JsonFormatter

    with open(os.devnull, "w") as sink:
        fast = AccessLog(sink.fileno())
        started = time.perf_counter()
        for _ in range(n):
            fast.write(
                "GET",
                "/api/v2/keys/self",
                200,
                0.000123,
                "key_01JD0000000000000000000001",
                "ab" * 16,
            )
            fast.flush()  # the worst case: one write per line (the server batches a tick's)
        fast_us = (time.perf_counter() - started) / n * 1e6
        logger = logging.getLogger("bench.access")
        logger.propagate = False
        handler = logging.StreamHandler(sink)
        handler.setFormatter(JsonFormatter())
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        started = time.perf_counter()
        for _ in range(n):
            logger.info(
                "%s %s %s",
                "GET",
                "/api/v2/keys/self",
                200,
                extra={
                    "status": 200,
                    "duration_ms": 0.123,
                    "key": "key_01JD0000000000000000000001",
                },
            )
        slow_us = (time.perf_counter() - started) / n * 1e6
    print(
        f"\naccess line: {fast_us:.1f} µs (AccessLog, a write per line) vs {slow_us:.1f} µs "
        f"through logging: ratio {slow_us / fast_us:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--peers-python",
        type=Path,
        help="python of the peers' venv (default: .venv-peers/bin/python, if it exists)",
    )
    args = parser.parse_args()
    tool = "wrk" if shutil.which("wrk") else "asyncio client"
    print(
        f"load generator: {tool}, {args.connections} connections, "
        f"{args.rounds} x {args.seconds}s per endpoint; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        secret = seed(database_url)
        base_env = {
            **os.environ,
            "KEYRACK_DATABASE_URL": database_url,
            "KEYRACK_SECRET_KEY": SECRET_KEY,
            "KEYRACK_REDIS_URL": "",
        }
        base_env.pop("KEYRACK_REDIS_URL")
        limiters = {"memory": None, "redis": redis_url()}
        for name, url in limiters.items():
            if name == "redis" and url is None:
                print("redis: unreachable, skipped")
                continue
            for logging_label, level in (("on", "INFO"), ("off", "WARNING")):
                env = dict(base_env, KEYRACK_LOG_LEVEL=level)
                if url:
                    env["KEYRACK_REDIS_URL"] = url
                failed |= run_pair(
                    f"{name}, access log {logging_label}", TARGETS[name], env, secret, args
                )
        python = args.peers_python or PEERS_PYTHON
        if python.exists():
            failed |= run_peers(python, base_env, limiters["redis"], secret, tmp, args)
        elif args.peers_python:
            print(f"\npeers: {python} not found")
            failed = True
        else:
            print(
                "\npeers: skipped; create their venv with make bench-peers-venv "
                "(bench/peers/setup.sh) to add them"
            )
    print_line_cost()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
