"""Run an ASGI app under uvicorn on a real loopback socket, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", **options: Any) -> Iterator[str]:
    """Serve ``app`` on a free port; yields its base URL and stops the server after.

    ``options`` go to ``uvicorn.Config`` (e.g. ``proxy_headers=False``, as ``keyrack serve``
    runs unless the operator trusts a proxy; or all of ``keyrack serve``'s, from
    ``keyrack.http.protocol.uvicorn_options``).
    """
    defaults: dict[str, Any] = {"log_config": None, "lifespan": "on", "ws": "none"}
    config = uvicorn.Config(app, host=host, port=0, **(defaults | options))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
