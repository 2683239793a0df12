"""localstripe (PyPI ``localstripe``, a stateful fake Stripe others maintain) as a test peer,
and a Stripe-shaped auth gate in front of it for credential failures.

``localstripe()`` starts it as a subprocess on a free port (~0.6 s) and yields its base
URL; ``shared_localstripe()`` starts one per test process and keeps it (flush between
tests with ``reset(url)``). Point the official library at it with
``stripe.StripeClient(key, base_addresses={"api": url})``.

The subprocess boots localstripe with its on-disk persistence switched off: localstripe
pickles its whole store to the fixed path ``/tmp/localstripe.pickle`` after every write,
which several test processes would share (and which costs a full pickle per write).

Measured with localstripe 1.15.10 and stripe 16.1 (see ``test_stripe.py``): customers,
products, plans, payment methods and subscriptions create, retrieve and list
(``limit``, ``has_more``, ``auto_paging_iter``) through ``StripeClient.v1``; Prices answer
404 (so subscriptions take ``items=[{"plan": …}]``, not ``price``); a subscription needs
a customer with a default payment method (``4242 4242 4242 4242``), else 400 "This
customer has no payment method"; localstripe accepts any API key.

The last point is why ``stripe_auth_gate()`` exists: an ASGI proxy in front of
localstripe that answers Stripe's own 401 for keys it is told to refuse
(``{"error":{"message":"Invalid API Key provided: sk_test_****1234","type":
"invalid_request_error"}}``; ``api_key_expired`` for expired ones) and 429 ``rate_limit``
for keys it is told to throttle (always, or past ``limit`` requests a window), and
forwards everything else unchanged.
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import SlidingWindow, serve

_BOOT = (
    "import sys\n"
    "import localstripe.resources as resources\n"
    "resources.Store.dump_to_disk = lambda self: None\n"
    "from localstripe.server import start\n"
    "sys.argv = ['localstripe', '--port', sys.argv[1], '--from-scratch']\n"
    "start()\n"
)
_SHARED: list[str] = []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _BOOT, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{url}/v1/customers", auth=("sk_test_probe", ""), timeout=1)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("localstripe did not start") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def localstripe() -> Iterator[str]:
    """A fresh localstripe on a free port for the block; yields its base URL."""
    process, url = _start()
    try:
        yield url
    finally:
        _stop(process)


def shared_localstripe() -> str:
    """One localstripe per test process, started on first use and stopped at exit."""
    if not _SHARED:
        process, url = _start()
        atexit.register(_stop, process)
        _SHARED.append(url)
    return _SHARED[0]


def reset(url: str) -> None:
    """Empty localstripe's store (its own ``DELETE /_config/data``)."""
    httpx.delete(f"{url}/_config/data").raise_for_status()


def masked(key: str) -> str:
    """A key as Stripe quotes it in errors: its prefix, asterisks, its last four."""
    prefix = key[: key.index("_", key.index("_") + 1) + 1] if key.count("_") >= 2 else ""
    return f"{prefix}****{key[-4:]}"


@dataclass
class StripeAuthGate:
    """Stripe's credential answers in front of localstripe; the rest is forwarded."""

    upstream: str
    refused: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    throttled: set[str] = field(default_factory=set)
    limit: tuple[int, float] | None = None  # per key, e.g. (25, 1.0) as Stripe's test mode
    base_url: str = ""
    _window: SlidingWindow | None = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            self._window = SlidingWindow(*self.limit)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        return self._refusal(request) or await self._forward(request)

    def _refusal(self, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:
            return _stripe_error(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.",
            )
        if key in self.refused:
            return _stripe_error(401, f"Invalid API Key provided: {masked(key)}")
        if key in self.expired:
            return _stripe_error(
                401, f"Expired API Key provided: {masked(key)}", code="api_key_expired"
            )
        over = self._window is not None and not self._window.take(key)[0]
        if key in self.throttled or over:
            return _stripe_error(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
        return None

    async def _forward(self, request: Request) -> Response:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with httpx.AsyncClient(base_url=self.upstream) as client:
            upstream = await client.request(
                request.method,
                request.url.path,
                params=request.query_params.multi_items(),
                content=await request.body(),
                headers=headers,
            )
        kept = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=kept)


def _stripe_error(status: int, message: str, *, code: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
    if code is not None:
        error["code"] = code
    return JSONResponse({"error": error}, status_code=status)


@contextmanager
def stripe_auth_gate(upstream: str, **options: Any) -> Iterator[StripeAuthGate]:
    """The gate on a real socket in front of ``upstream``; ``gate.base_url`` is its URL."""
    gate = StripeAuthGate(upstream, **options)
    with serve(gate.app()) as url:
        gate.base_url = url
        yield gate
