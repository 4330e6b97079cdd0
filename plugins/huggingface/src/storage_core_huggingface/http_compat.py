"""huggingface_hub's shared HTTP session, whichever client it is: ``requests`` (0.2x, subnet 13's pin 0.27.1)
or ``httpx2`` (2.x).

Only public API is used: ``huggingface_hub.utils.get_session()`` returns the session the library itself
sends with, and this module branches on what it is. The store needs three things from it: a streamed
``GET`` whose body is read raw (never decoded, so a declared ``Content-Encoding`` cannot change the stored
bytes), a response hook for metering, and the exception types that mean "the network failed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from huggingface_hub.utils import get_session

try:  # huggingface_hub 2.x
    import httpx2

    _HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx2.HTTPError,)
    _HTTPX_TRANSPORT: tuple[type[Exception], ...] = (httpx2.TransportError,)
except ImportError:  # pragma: no cover - huggingface_hub 0.2x
    _HTTPX_ERRORS = _HTTPX_TRANSPORT = ()

try:  # huggingface_hub 0.2x (and anything else that brings requests)
    import requests

    _REQUESTS_ERRORS: tuple[type[Exception], ...] = (requests.RequestException,)
    _REQUESTS_TRANSPORT: tuple[type[Exception], ...] = (
        requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
except ImportError:  # pragma: no cover
    _REQUESTS_ERRORS = _REQUESTS_TRANSPORT = ()

#: Any failure of the HTTP client itself (not an HTTP status): the backend failed, not the miner.
HTTP_ERRORS: tuple[type[Exception], ...] = _HTTPX_ERRORS + _REQUESTS_ERRORS
#: Network-level failures worth retrying.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = _HTTPX_TRANSPORT + _REQUESTS_TRANSPORT

RAW_CHUNK = 1 << 16


def _is_httpx(session: Any) -> bool:
    return hasattr(session, "event_hooks")


def add_response_hook(session: Any, hook: Callable[[Any], None]) -> None:
    """Call ``hook(response)`` for every response the session receives (redirects and errors included)."""
    if _is_httpx(session):
        hooks = session.event_hooks
        hooks.setdefault("response", []).append(hook)
        session.event_hooks = hooks
    else:
        session.hooks.setdefault("response", []).append(lambda response, *_args, **_kwargs: hook(response))


class RawResponse:
    """A streamed response: ``status_code``, ``headers``, the library's own ``response``, and raw chunks."""

    def __init__(self, response: Any, httpx: bool) -> None:
        self.response = response
        self.status_code: int = response.status_code
        self.headers = response.headers
        self._httpx = httpx

    def iter_raw(self) -> Iterator[bytes]:
        """The body as sent (no content decoding)."""
        if self._httpx:
            yield from self.response.iter_raw()
        else:
            while chunk := self.response.raw.read(RAW_CHUNK, decode_content=False):
                yield chunk

    def read(self) -> None:
        """Load the body (error answers), so the library's error helpers can show it."""
        if self._httpx:
            self.response.read()
        else:
            _ = self.response.content


@contextmanager
def stream_get(url: str, *, headers: dict[str, str], timeout: float | None) -> Iterator[RawResponse]:
    """One streamed ``GET`` through huggingface_hub's session; the connection is released on exit."""
    session: Any = get_session()  # requests.Session (0.2x) or httpx2.Client (2.x)
    if _is_httpx(session):
        with session.stream("GET", url, headers=headers, timeout=timeout) as response:
            yield RawResponse(response, httpx=True)
        return
    response = session.get(url, headers=headers, timeout=timeout, stream=True)
    try:
        yield RawResponse(response, httpx=False)
    finally:
        response.close()
