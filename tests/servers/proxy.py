"""A TCP proxy on 127.0.0.1 that cuts chosen connections mid-response: faults in front of a real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class DroppingProxy:
    """Forwards a free 127.0.0.1 port to a real server, cutting chosen responses after some bytes.

    Args:
        upstream_host: Host of the real server.
        upstream_port: Its port.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cuts: deque[int] = deque()
        """Response bytes after which the connection is cut, one entry per request, for the next requests."""
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> DroppingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        state: dict[str, int | None] = {"limit": None, "sent": 0}

        async def requests() -> None:
            while data := await reader.read(65536):
                if self.cuts:  # a new request: the next cut applies to its response
                    state["limit"], state["sent"] = self.cuts.popleft(), 0
                up_writer.write(data)
                await up_writer.drain()

        async def responses() -> None:
            while data := await up_reader.read(4096):
                limit, sent = state["limit"], state["sent"] or 0
                if limit is not None and sent + len(data) >= limit:
                    writer.write(data[: max(limit - sent, 0)])
                    await writer.drain()
                    return
                writer.write(data)
                await writer.drain()
                state["sent"] = sent + len(data)

        tasks = [asyncio.create_task(requests()), asyncio.create_task(responses())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.transport.abort()
