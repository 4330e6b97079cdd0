"""Optional field encoding: encrypt ``url`` and ``username`` with Fernet keys, as the subnet's uploader does.

The subnet's integration guide passes an ``encoding_key_manager`` (for ``url``) and a
``private_encoding_key_manager`` (for ``username``); each holds a Fernet key, and a value is stored as
``urlsafe_b64encode(Fernet(key).encrypt(value.encode()))`` (see its ``encode_url``). Off by default:
encrypted columns do not compress (about 2.5x larger files) and cost ~10 us per value. The ``uri``
column always stays in clear, because validators look rows up by it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from cryptography.fernet import Fernet, InvalidToken

ENCODABLE_FIELDS = ("url", "username")


def _fernet(key: Any) -> Fernet:
    """Accept a Fernet, a key (str/bytes), or a key manager with ``get_fernet()`` / ``sym_key``."""
    if isinstance(key, Fernet):
        return key
    if hasattr(key, "get_fernet"):
        return key.get_fernet()
    if hasattr(key, "sym_key"):
        key = key.sym_key
    try:
        return Fernet(key)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a Fernet key (32 url-safe base64-encoded bytes): {error}") from None


@attrs.frozen
class FieldEncoder:
    """Which columns to encrypt, and with which key. An empty encoder changes nothing."""

    fernets: Mapping[str, Fernet] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_keys(cls, url: Any = None, username: Any = None) -> FieldEncoder:
        """From Fernet keys or the subnet's key managers (``encoding_key_manager`` -> url, private -> username)."""
        fernets = {name: _fernet(key) for name, key in (("url", url), ("username", username)) if key is not None}
        return cls(fernets)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name in ENCODABLE_FIELDS if name in self.fernets)

    def encode_column(self, name: str, values: Sequence[str | None]) -> list[str | None]:
        """Encrypt every non-null value of column ``name`` (unchanged when no key is set for it)."""
        fernet = self.fernets.get(name)
        if fernet is None:
            return list(values)
        encrypt, b64 = fernet.encrypt, base64.urlsafe_b64encode
        return [None if value is None else b64(encrypt(value.encode())).decode() for value in values]


def decode_value(value: str, key: Any) -> str:
    """Reverse ``encode_column`` for one value (what a validator holding the key does)."""
    try:
        return _fernet(key).decrypt(base64.urlsafe_b64decode(value.encode())).decode()
    except (InvalidToken, ValueError) as error:
        raise ValueError(f"value is not an encoded field for this key: {error!r}") from None
