"""Hotkey-signed HTTP requests (protocol ``btauth/1``): bittensor 11's ``bt.http_auth``, or under bittensor
10.3 (which has none) ``storage_core.chain.btauth``, the same bytes signed with the SDK's Keypair.

Plugins (the S3 grant service and its clients) sign and verify requests through this module and never
import bittensor themselves. A request is signed over its method, request target (path plus query),
the sha256 of its raw body, a nanosecond timestamp nonce, the sender's and the receiver's ss58
addresses. The verifier checks the receiver binding, the freshness window in both directions, the
sr25519 signature and, last, that the (hotkey, nonce) pair was never accepted before.

Every failure raises an :class:`AuthenticationError` subclass whose message names the problem and is
safe to return to the (unauthenticated) caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from storage_core.chain import sdk
from storage_core.errors import StorageCoreError

if sdk.HAS_HTTP_AUTH:
    from bittensor import http_auth as _bt_auth
else:
    from storage_core.chain import btauth as _bt_auth  # type: ignore[no-redef]

#: Header names of the protocol (a gateway in front of a verifier must pass them through unchanged).
HEADER_VERSION = _bt_auth.HEADER_VERSION
HEADER_HOTKEY = _bt_auth.HEADER_HOTKEY
HEADER_RECEIVER = _bt_auth.HEADER_RECEIVER
HEADER_NONCE = _bt_auth.HEADER_NONCE
HEADER_SIGNATURE = _bt_auth.HEADER_SIGNATURE
HEADER_CRYPTO = _bt_auth.HEADER_CRYPTO
AUTH_HEADERS = (HEADER_VERSION, HEADER_HOTKEY, HEADER_RECEIVER, HEADER_NONCE, HEADER_SIGNATURE, HEADER_CRYPTO)
PROTOCOL = _bt_auth.PROTOCOL

DEFAULT_MAX_AGE = 60.0
DEFAULT_ALLOWED_SKEW = 60.0


class AuthenticationError(StorageCoreError):
    """A signed request failed authentication; ``reason`` is a short machine-readable word."""

    reason = "unauthenticated"


class MalformedAuthError(AuthenticationError):
    """An authentication header is missing or cannot be parsed."""

    reason = "malformed_auth"


class WrongReceiverError(AuthenticationError):
    """The request was signed for another receiving hotkey (or for none)."""

    reason = "wrong_receiver"


class StaleRequestError(AuthenticationError):
    """The request's timestamp nonce is outside the freshness window (too old or too far ahead)."""

    reason = "stale_request"


class ReplayedRequestError(AuthenticationError):
    """This hotkey already sent this nonce inside the window."""

    reason = "replayed_request"


class BadSignatureError(AuthenticationError):
    """The signature does not verify against the hotkey the request claims."""

    reason = "bad_signature"


_ERRORS: tuple[tuple[type[Exception], type[AuthenticationError]], ...] = (
    (_bt_auth.MalformedAuth, MalformedAuthError),
    (_bt_auth.WrongReceiver, WrongReceiverError),
    (_bt_auth.StaleRequest, StaleRequestError),
    (_bt_auth.ReplayedRequest, ReplayedRequestError),
    (_bt_auth.BadSignature, BadSignatureError),
)


class NonceStore(Protocol):
    """Replay state: ``check_and_store`` records a (hotkey, nonce) pair and says whether it was new.

    Entries must outlive the freshness window (``max_age + allowed_skew``). A service with several
    worker processes or hosts needs one store they all share.
    """

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool: ...


def memory_nonce_store(retention: float) -> NonceStore:
    """A per-process in-memory nonce store keeping entries for ``retention`` seconds."""
    return _bt_auth.InMemoryNonceStore(retention=retention)


def sign_request(
    signer: Any,
    method: str,
    path: str,
    body: bytes = b"",
    receiver_ss58: str | None = None,
    *,
    nonce_ns: int | None = None,
) -> dict[str, str]:
    """The authentication headers for one request, signed with ``signer``'s hotkey.

    ``signer`` is a bittensor ``Wallet`` (its hotkey signs) or a ``Keypair``. ``path`` must be the
    request target exactly as sent, including any ``?query``. Each request (and each retry) gets a
    fresh nonce unless ``nonce_ns`` is given (tests).
    """
    if signer is None:
        raise StorageCoreError("cannot sign the request: no signer (hotkey) was given")
    if nonce_ns is None:
        nonce_ns = _next_nonce()
    try:
        return _bt_auth.sign(
            signer, method=method, path=path, body=bytes(body), receiver_ss58=receiver_ss58, nonce_ns=nonce_ns
        )
    except (TypeError, ValueError) as error:
        raise StorageCoreError(f"cannot sign the request with {type(signer).__name__}: {error}") from error


def verify_request(
    headers: Mapping[str, str],
    body: bytes,
    method: str,
    path: str,
    self_hotkey_ss58: str,
    max_age: float = DEFAULT_MAX_AGE,
    allowed_skew: float = DEFAULT_ALLOWED_SKEW,
    nonce_store: NonceStore | None = None,
    *,
    now_ns: int | None = None,
) -> str:
    """Authenticate one received request and return the caller's hotkey (ss58).

    ``body`` is the raw received bytes, ``path`` the received request target (with its query). The
    request must be bound to ``self_hotkey_ss58``. Raises an :class:`AuthenticationError` subclass.
    ``nonce_store`` must retain entries for at least ``max_age + allowed_skew`` seconds; without one, a
    per-process store is used.
    """
    store = nonce_store if nonce_store is not None else _default_store(max_age + allowed_skew)
    retention = getattr(store, "retention", None)
    if retention is not None and retention < max_age + allowed_skew:
        raise StorageCoreError(
            f"nonce store keeps entries for {retention:g}s, less than the {max_age + allowed_skew:g}s "
            "freshness window: replays inside the gap would be accepted"
        )
    try:
        caller = _bt_auth.verify(
            headers,
            bytes(body),
            method=method,
            path=path,
            self_hotkey_ss58=self_hotkey_ss58,
            max_age=max_age,
            allowed_skew=allowed_skew,
            require_receiver=True,
            nonce_store=store,
            now_ns=now_ns,
        )
    except _bt_auth.AuthError as error:
        for source, target in _ERRORS:
            if isinstance(error, source):
                raise target(str(error)) from None
        raise AuthenticationError(str(error)) from None
    return caller.hotkey_ss58


_nonce_lock = threading.Lock()
_last_nonce = 0


def _next_nonce() -> int:
    """The current time in nanoseconds, strictly increasing within this process.

    Concurrent requests from one hotkey must never share a nonce, or the second would be refused as a replay.
    """
    global _last_nonce
    with _nonce_lock:
        _last_nonce = max(time.time_ns(), _last_nonce + 1)
        return _last_nonce


_stores: dict[float, NonceStore] = {}


def _default_store(retention: float) -> NonceStore:
    store = _stores.get(retention)
    if store is None:
        store = _stores[retention] = memory_nonce_store(retention)
    return store


__all__ = [
    "AUTH_HEADERS",
    "DEFAULT_ALLOWED_SKEW",
    "DEFAULT_MAX_AGE",
    "HEADER_HOTKEY",
    "HEADER_NONCE",
    "HEADER_RECEIVER",
    "HEADER_SIGNATURE",
    "HEADER_VERSION",
    "AuthenticationError",
    "BadSignatureError",
    "MalformedAuthError",
    "NonceStore",
    "ReplayedRequestError",
    "StaleRequestError",
    "WrongReceiverError",
    "memory_nonce_store",
    "sign_request",
    "verify_request",
]
