"""HTTP plumbing shared by the uploader and the reader: retries with back-off, and the grant-service client."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from storage_core import backoff as core_backoff
from storage_core.backoff import parse_retry_after
from storage_core.chain.http_auth import sign_request
from storage_core.errors import BackendError
from storage_core_s3 import protocol
from storage_core_s3.options import S3Options

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUS = core_backoff.RETRY_STATUSES
RETRYABLE_S3_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"})
_S3_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_S3_MESSAGE = re.compile(rb"<Message>([^<]{0,300})</Message>")


class TransferError(BackendError):
    """One HTTP exchange failed; ``status`` and ``code`` say how (None for a connection error)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, retryable: bool,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def s3_error(response: httpx.Response, what: str, body: bytes | None = None) -> TransferError:
    """A TransferError for an S3 error response (its XML code and message, never its URL's signature).

    ``body`` is the error body when the response was streamed (the reader never decodes a body itself).
    """
    body = (response.content if body is None else body)[:4096]
    code_match, message_match = _S3_CODE.search(body), _S3_MESSAGE.search(body)
    code = code_match.group(1).decode(errors="replace") if code_match else None
    message = message_match.group(1).decode(errors="replace") if message_match else ""
    retryable = response.status_code in RETRYABLE_STATUS or code in RETRYABLE_S3_CODES
    return TransferError(
        f"{what}: HTTP {response.status_code} {code or ''} {message}".strip(),
        status=response.status_code,
        code=code,
        retryable=retryable,
        retry_after=_retry_after(response),
    )


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def _retryable(error: BaseException) -> bool:
    return isinstance(error, TransferError) and error.retryable


class Backoff(core_backoff.Backoff):
    """The core's back-off (full jitter, Retry-After honoured) with S3's errors: a retryable TransferError or a
    connection error is tried again; giving up says so."""

    def run(self, what: str, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` until it returns, retrying retryable TransferErrors and connection errors."""

        def once() -> T:
            try:
                return attempt()
            except httpx.TransportError as error:
                raise TransferError(f"{what}: {type(error).__name__}: {error}", retryable=True) from None

        try:
            return self.call(what, once, retryable=_retryable)
        except TransferError as error:
            if not error.retryable:
                raise error from None
            raise TransferError(
                f"{error} (gave up after {self.attempts} attempts)", status=error.status, code=error.code,
                retryable=True,
            ) from None


def backoff_for(options: S3Options) -> Backoff:
    """The back-off the options ask for."""
    return Backoff(options.max_attempts, options.backoff_base, options.backoff_max)


def make_http_client(options: S3Options) -> httpx.Client:
    """One pooled HTTP client for grant and storage requests (thread-safe)."""
    timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
    limits = httpx.Limits(max_connections=4 * options.concurrency + 8, max_keepalive_connections=2 * options.concurrency + 4)
    return httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)


class Counters:
    """Requests made and body bytes received, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.grant_requests = 0

    def add(self, requests: int = 0, received: int = 0, grant_requests: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += received
            self.grant_requests += grant_requests


_service_hotkeys: dict[str, tuple[str, float]] = {}
_service_hotkeys_lock = threading.Lock()
_SERVICE_HOTKEY_TTL = 600.0


class GrantClient:
    """Signs and sends grant requests; each attempt carries a fresh nonce."""

    def __init__(self, options: S3Options, signer: Any, http: httpx.Client, counters: Counters | None = None,
                 backoff: Backoff | None = None) -> None:
        self.options = options
        self.signer = signer
        self.http = http
        self.counters = counters or Counters()
        self.backoff = backoff or backoff_for(options)
        self.base_url = options.grant_url
        self.base_path = urlsplit(options.grant_url).path.rstrip("/")

    def service_hotkey(self) -> str:
        """The hotkey requests are bound to: the ``grant_hotkey`` option, else the service's /v1/info."""
        if self.options.grant_hotkey:
            return self.options.grant_hotkey
        with _service_hotkeys_lock:
            cached = _service_hotkeys.get(self.base_url)
        if cached is not None and time.monotonic() - cached[1] < _SERVICE_HOTKEY_TTL:
            return cached[0]
        # Ask the service WITHOUT holding the lock: a stalled service (a read can take read_timeout x
        # max_attempts) once held this process-wide lock, so every later upload and validation of the
        # process, for any grant URL, hung behind one abandoned (timed-out) call. Concurrent first calls may
        # each ask /v1/info; that is a cheap public GET.
        hotkey = self.info().get("service_hotkey")
        if not isinstance(hotkey, str) or not hotkey:
            raise TransferError(f"{self.base_url}{protocol.PATH_INFO} names no service_hotkey", retryable=False)
        with _service_hotkeys_lock:
            _service_hotkeys[self.base_url] = (hotkey, time.monotonic())
        return hotkey

    def info(self) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            response = self.http.get(self.base_url + protocol.PATH_INFO)
            self.counters.add(grant_requests=1)
            return self._answer(response, "grant service info")

        return self.backoff.run("grant service info", attempt)

    def health(self) -> dict[str, Any]:
        response = self.http.get(self.base_url + protocol.PATH_HEALTH)
        return self._answer(response, "grant service health")

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a signed JSON request and return the JSON answer (retrying what can be retried)."""
        if self.signer is None:
            raise BackendError("backend 's3' needs the node's hotkey (context.signer) to sign grant requests",
                               retryable=False)
        receiver = self.service_hotkey()
        body = json.dumps(payload, separators=(",", ":")).encode()
        what = f"grant request {path}"

        def attempt() -> dict[str, Any]:
            headers = sign_request(self.signer, "POST", self.base_path + path, body, receiver)
            headers["Content-Type"] = "application/json"
            response = self.http.post(self.base_url + path, content=body, headers=headers)
            self.counters.add(grant_requests=1)
            return self._answer(response, what)

        try:
            return self.backoff.run(what, attempt)
        except TransferError as error:
            if error.code != "wrong_receiver" or self.options.grant_hotkey:
                raise
            # The service at this URL now signs for another hotkey (it was redeployed with a new identity, or
            # a test recycled the port). The process-wide cache kept the old one for up to 10 minutes, so
            # every request failed with 401 until then: forget it, ask /v1/info again, and retry once.
            with _service_hotkeys_lock:
                _service_hotkeys.pop(self.base_url, None)
            fresh = self.service_hotkey()
            if fresh == receiver:
                raise
            receiver = fresh
            return self.backoff.run(what, attempt)

    @staticmethod
    def _answer(response: httpx.Response, what: str) -> dict[str, Any]:
        if response.is_success:
            try:
                answer = response.json()
            except ValueError:
                raise TransferError(f"{what}: the grant service answered with invalid JSON", retryable=True) from None
            if not isinstance(answer, dict):
                raise TransferError(f"{what}: unexpected answer from the grant service", retryable=False)
            return answer
        code, message = None, response.text[:300]
        try:
            error = response.json().get("error", {})
            code, message = error.get("code"), error.get("message", message)
        except (ValueError, AttributeError):
            pass
        retryable = response.status_code in RETRYABLE_STATUS
        raise TransferError(
            f"{what} refused: HTTP {response.status_code} {code or ''}: {message}",
            status=response.status_code, code=code, retryable=retryable, retry_after=_retry_after(response),
        )
