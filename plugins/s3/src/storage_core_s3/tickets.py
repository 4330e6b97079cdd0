"""Multipart tickets: HMAC-signed claims the service hands out with a multipart grant and checks at completion.

The ticket carries what the service decided (key, upload id, size, part size, parts digest, whole-object
sha256), so completion needs no server-side state and works on any worker sharing the ticket key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from storage_core_s3.checks import GrantError


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts_digest(part_sha256: list[str]) -> str:
    return hashlib.sha256("\n".join(part_sha256).encode()).hexdigest()


class Tickets:
    """Make and read tickets under one HMAC key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def make(self, claims: dict[str, Any]) -> str:
        body = _b64url(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64url(mac)}"

    def read(self, ticket: str, now: float) -> dict[str, Any]:
        invalid = GrantError(403, "invalid_ticket", "the multipart ticket is invalid or was not issued by this service")
        try:
            body, mac = ticket.split(".", 1)
            expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64url(mac)):
                raise invalid
            claims = json.loads(_unb64url(body))
        except (ValueError, binascii.Error):
            raise invalid from None
        if not isinstance(claims, dict):
            raise invalid
        if claims.get("e", 0) < now:
            raise GrantError(403, "expired_ticket", "the multipart ticket has expired; start a new upload")
        return claims
