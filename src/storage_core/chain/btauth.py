"""``btauth/1`` signed requests for SDKs without ``bt.http_auth`` (bittensor 10.3, subnet 13's pin).

The same wire format as bittensor 11's ``bt.http_auth`` (payload, headers, checks and their order), built
on the SDK's sr25519 ``Keypair`` only, so a 10.3 miner's requests verify on an 11.x grant service and the
reverse. Only sr25519 is supported (the default scheme; no ``X-Bittensor-Crypto`` header). The names
mirror ``bt.http_auth`` so ``storage_core.chain.http_auth`` can use either module unchanged.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from storage_core.chain import sdk

PROTOCOL = "btauth/1"
VERSION = "1"
HEADER_VERSION = "X-Bittensor-Version"
HEADER_HOTKEY = "X-Bittensor-Hotkey"
HEADER_RECEIVER = "X-Bittensor-Receiver"
HEADER_NONCE = "X-Bittensor-Nonce"
HEADER_CRYPTO = "X-Bittensor-Crypto"
HEADER_SIGNATURE = "X-Bittensor-Signature"
_SCHEME = "sr25519"
_NO_RECEIVER = "-"


class AuthError(Exception):
    """A signed request failed authentication (messages never echo the signature or payload)."""


class MalformedAuth(AuthError):
    """A required header is missing or unparseable."""


class WrongReceiver(AuthError):
    """The request was signed for a different (or no) receiving hotkey."""


class StaleRequest(AuthError):
    """The nonce is outside the freshness window."""


class ReplayedRequest(AuthError):
    """This (hotkey, nonce) pair was already accepted inside the window."""


class BadSignature(AuthError):
    """The signature does not verify against the claimed hotkey."""


@attrs.frozen
class Caller:
    """The authenticated sender of a verified request."""

    hotkey_ss58: str
    nonce_ns: int


class NonceStore(Protocol):
    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool: ...


class InMemoryNonceStore:
    """Per-process replay state with time-based expiry (``retention`` >= max_age + allowed_skew)."""

    def __init__(self, retention: float = 60.0) -> None:
        self.retention = retention
        self._seen: set[tuple[str, int]] = set()
        self._expiry: deque[tuple[float, tuple[str, int]]] = deque()
        self._lock = threading.Lock()

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        key, now = (hotkey_ss58, nonce_ns), time.monotonic()
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                self._seen.discard(self._expiry.popleft()[1])
            if key in self._seen:
                return False
            self._seen.add(key)
            self._expiry.append((now + self.retention, key))
            return True


def build_payload(
    *, method: str, path: str, body: bytes, nonce_ns: int, sender_ss58: str, receiver_ss58: str | None
) -> bytes:
    """The signed bytes: version, scheme, METHOD, target, sha256(body) hex, nonce, sender, receiver or ``-``."""
    lines = (PROTOCOL, _SCHEME, method.upper(), path, hashlib.sha256(body).hexdigest(), str(nonce_ns),
             sender_ss58, receiver_ss58 or _NO_RECEIVER)
    return "\n".join(lines).encode()


def sign(
    wallet: Any, *, method: str, path: str, body: bytes = b"", receiver_ss58: str | None = None,
    nonce_ns: int | None = None,
) -> dict[str, str]:
    """The auth headers for one request, signed by a Wallet's hotkey or a Keypair."""
    keypair = sdk.signing_keypair(wallet)
    if getattr(keypair, "crypto_type", 1) != 1:
        raise ValueError("btauth/1 without bt.http_auth supports sr25519 hotkeys only")
    nonce = time.time_ns() if nonce_ns is None else int(nonce_ns)
    payload = build_payload(method=method, path=path, body=body, nonce_ns=nonce,
                            sender_ss58=keypair.ss58_address, receiver_ss58=receiver_ss58)
    headers = {
        HEADER_VERSION: VERSION,
        HEADER_HOTKEY: keypair.ss58_address,
        HEADER_NONCE: str(nonce),
        HEADER_SIGNATURE: "0x" + bytes(keypair.sign(payload)).hex(),
    }
    if receiver_ss58 is not None:
        headers[HEADER_RECEIVER] = receiver_ss58
    return headers


def verify(
    headers: Mapping[str, str], body: bytes, *, method: str, path: str, self_hotkey_ss58: str,
    max_age: float = 10.0, allowed_skew: float = 2.0, require_receiver: bool = True,
    nonce_store: NonceStore | None = None, now_ns: int | None = None,
) -> Caller:
    """Authenticate a request (checks in ``bt.http_auth``'s order); raises an :class:`AuthError` subclass."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if lowered.get(HEADER_VERSION.lower()) != VERSION:
        raise MalformedAuth(f"missing or unsupported {HEADER_VERSION} (expected {VERSION!r})")
    sender = lowered.get(HEADER_HOTKEY.lower())
    if not sender:
        raise MalformedAuth(f"missing {HEADER_HOTKEY}")
    raw_nonce = lowered.get(HEADER_NONCE.lower())
    if raw_nonce is None:
        raise MalformedAuth(f"missing {HEADER_NONCE}")
    try:
        nonce = int(raw_nonce)
    except ValueError:
        raise MalformedAuth(f"{HEADER_NONCE} is not a decimal integer") from None
    if lowered.get(HEADER_CRYPTO.lower(), _SCHEME) != _SCHEME:
        raise MalformedAuth(f"unsupported {HEADER_CRYPTO}")
    raw_signature = lowered.get(HEADER_SIGNATURE.lower())
    if raw_signature is None:
        raise MalformedAuth(f"missing {HEADER_SIGNATURE}")
    try:
        signature = bytes.fromhex(raw_signature.removeprefix("0x"))
    except ValueError:
        raise MalformedAuth(f"{HEADER_SIGNATURE} is not hex") from None
    receiver = lowered.get(HEADER_RECEIVER.lower())
    if receiver is None:
        if require_receiver:
            raise WrongReceiver(f"missing {HEADER_RECEIVER}: this server requires receiver-bound requests")
    elif receiver != self_hotkey_ss58:
        raise WrongReceiver("request was signed for a different receiving hotkey")
    now = time.time_ns() if now_ns is None else now_ns
    if now - nonce > max_age * 1e9:
        raise StaleRequest(f"nonce is older than the {max_age:g}s freshness window")
    if nonce - now > allowed_skew * 1e9:
        raise StaleRequest(f"nonce is more than {allowed_skew:g}s in the future")
    payload = build_payload(method=method, path=path, body=body, nonce_ns=nonce, sender_ss58=sender,
                            receiver_ss58=receiver)
    try:
        if len(signature) != 64:
            raise ValueError("an sr25519 signature is 64 bytes")
        valid = sdk.verify_signature(payload, signature, sender)
    except (ValueError, TypeError):
        raise MalformedAuth("invalid hotkey address or signature encoding") from None
    if not valid:
        raise BadSignature("signature does not verify against the claimed hotkey")
    store = nonce_store if nonce_store is not None else InMemoryNonceStore()
    if not store.check_and_store(sender, nonce):
        raise ReplayedRequest("this nonce was already accepted from this hotkey")
    return Caller(hotkey_ss58=sender, nonce_ns=nonce)
