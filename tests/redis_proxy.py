"""A TCP proxy in front of the test Redis, to cut or partition a client's connection."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlparse


class RedisProxy:
    """``async with RedisProxy(url) as proxy``: clients connect to ``proxy.port``.

    ``cut()`` closes every connection and turns new ones away until ``mend()``;
    ``partition()`` keeps the sockets open but lets no byte through (a silent network).
    """

    def __init__(self, redis_url: str) -> None:
        target = urlparse(redis_url)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 6379
        self._writers: list[asyncio.StreamWriter] = []
        self._cut = False
        self.partitioned = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close_all()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def cut(self) -> None:
        self._cut = True
        await self._close_all()

    def mend(self) -> None:
        self._cut = False

    def partition(self) -> None:
        self.partitioned.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._cut:
            client_w.close()
            return
        server_r, server_w = await asyncio.open_connection(self._host, self._port)
        self._writers.extend((client_w, server_w))
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.partitioned.is_set():  # partitioned: bytes vanish, sockets stay open
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _close_all(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
