"""Run an ASGI app (the grant service) under uvicorn in a background thread: tests, the demo, benchmarks.

    with ServerThread(app) as server:      # 127.0.0.1, a free port
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    """uvicorn serving ``app`` on ``host``:``port`` (0 = a free port) in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 startup_timeout: float = 20.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
                                     proxy_headers=False)  # the app decides whom to trust (trusted_proxies)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.host}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start within {self.startup_timeout:g}s")
            time.sleep(0.01)
        sockets = [sock for server in self._server.servers for sock in server.sockets]
        self.port = sockets[0].getsockname()[1]
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as error:  # reported by start()
            self._error = error

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish (open connections are closed) and wait for the thread."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> ServerThread:
    """Start ``app`` in a thread and return the running :class:`ServerThread` (``.url``, ``.stop()``)."""
    return ServerThread(app, host, port, **kwargs).start()
