"""sha256 checksums in S3's base64 form and back: shared by the grant service, the uploader and the reader.

A module of its own so that the validator's reader does not import the grant service (a Starlette app).
"""

from __future__ import annotations

import base64
import binascii


def sha256_b64(hex_digest: str) -> str:
    """The base64 form S3 wants in ``x-amz-checksum-sha256`` of a hex sha256."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def b64_to_hex(value: str) -> str | None:
    """The hex form of a base64 sha256 checksum, or None for a composite (``...-N``) or bad value."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
