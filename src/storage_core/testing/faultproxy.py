"""A TCP proxy on 127.0.0.1 that injects faults between a client and a server, for reliability tests.

Modes (switchable while it runs): ``pass`` forwards bytes; ``drop`` closes the connection after
``drop_after`` response bytes (mid-body); ``stall`` accepts and never answers; ``error`` answers every
request with an HTTP ``error_status`` and closes; ``throttle`` forwards at ``rate`` bytes per second;
``refuse`` closes each connection at once (a server that is down). ``fail_next(n, mode)`` applies a mode
to the next n connections only, then returns to ``pass``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
MODES = ("pass", "drop", "stall", "error", "throttle", "refuse")
_CHUNK = 64 * 1024


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port`` with injectable faults."""

    def __init__(self, target_host: str, target_port: int) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"FaultProxy only proxies to loopback, not {target_host!r}")
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.drop_after = 1024
        self.error_status = 503
        self.rate = 256 * 1024
        self.connections = 0
        self._scheduled: list[str] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._stalled: list[asyncio.StreamWriter] = []
        self.port = 0

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, **settings: int) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        with self._lock:
            self.mode = mode
            self._scheduled.clear()
            for name, value in settings.items():
                setattr(self, name, value)

    def fail_next(self, count: int, mode: str = "error", **settings: int) -> None:
        """The next ``count`` connections get ``mode``; later ones pass."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self.mode = "pass"
            self._scheduled = [mode] * count
            for name, value in settings.items():
                setattr(self, name, value)

    def _next_mode(self) -> str:
        with self._lock:
            self.connections += 1
            return self._scheduled.pop(0) if self._scheduled else self.mode

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for writer in self._stalled:
                writer.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._server = None

    # ------------------------------------------------------------------ proxying

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._next_mode()
        try:
            if mode == "refuse":
                writer.transport.abort()
                return
            if mode == "stall":
                self._stalled.append(writer)
                await asyncio.sleep(3600)
                return
            if mode == "error":
                await reader.read(_CHUNK)
                body = b"injected fault\n"
                writer.write(
                    f"HTTP/1.1 {self.error_status} Injected\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\nRetry-After: 0\r\n\r\n".encode() + body
                )
                await writer.drain()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            try:
                await asyncio.gather(
                    self._pipe(reader, upstream_writer, None, None),
                    self._pipe(upstream_reader, writer, mode, writer),
                )
            finally:
                upstream_writer.close()
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, mode: str | None,
                    client: asyncio.StreamWriter | None) -> None:
        sent = 0
        while data := await source.read(_CHUNK):
            if mode == "drop" and sent + len(data) > self.drop_after:
                sink.write(data[: max(0, self.drop_after - sent)])
                await sink.drain()
                if client is not None:
                    client.transport.abort()
                return
            if mode == "throttle":
                for start in range(0, len(data), 4096):
                    sink.write(data[start : start + 4096])
                    await sink.drain()
                    await asyncio.sleep(4096 / self.rate)
            else:
                sink.write(data)
                await sink.drain()
            sent += len(data)
        if sink.can_write_eof():
            sink.write_eof()


@contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    """Run a FaultProxy for the duration of a ``with`` block."""
    proxy = FaultProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
