"""The fault-injection proxy itself does what each mode says, against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request

import pytest

from storage_core.testing.faultproxy import fault_proxy

BODY = b"x" * 200_000


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def test_modes(server: int) -> None:
    with fault_proxy("127.0.0.1", server) as proxy:
        assert fetch(proxy.url) == BODY
        proxy.set_mode("error", error_status=503)
        with pytest.raises(urllib.error.HTTPError) as caught:
            fetch(proxy.url)
        assert caught.value.code == 503
        proxy.set_mode("drop", drop_after=1000)
        with pytest.raises(Exception):  # IncompleteRead / connection reset: the body is cut
            fetch(proxy.url)
        proxy.set_mode("stall")
        with pytest.raises(Exception):  # time-out
            fetch(proxy.url, timeout=0.5)
        proxy.set_mode("refuse")
        with pytest.raises(Exception):
            fetch(proxy.url)
        proxy.fail_next(2, "error", error_status=500)
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError):
                fetch(proxy.url)
        assert fetch(proxy.url) == BODY
        proxy.set_mode("throttle", rate=2_000_000)
        assert fetch(proxy.url) == BODY
        assert proxy.connections == 9


def test_only_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        fault_proxy("10.0.0.1", 80).__enter__()
