"""Optional field encoding: encrypt ``url`` and ``username`` with Fernet keys, as the subnet's uploader does.

The subnet's integration guide passes an ``encoding_key_manager`` (for ``url``) and a
``private_encoding_key_manager`` (for ``username``); each holds a Fernet key, and a value is stored as
``urlsafe_b64encode(Fernet(key).encrypt(value.encode()))`` (see its ``encode_url``). Off by default:
encrypted columns do not compress (about 2.5x larger files). Per-value ``Fernet.encrypt`` costs ~8 us, so
columns are encrypted in batches (:mod:`storage_core.export.fernet_batch`, same tokens, ~1.2-1.6 us per value).
The ``uri`` column always stays in clear, because validators look rows up by it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pyarrow as pa
from cryptography.fernet import Fernet, InvalidToken

from storage_core.export import fernet_batch

log = logging.getLogger(__name__)

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
    _batch: Mapping[str, fernet_batch.BatchFernet] = attrs.field(init=False, repr=False, eq=False)

    @_batch.default
    def _batch_default(self) -> dict[str, fernet_batch.BatchFernet]:
        """The batched encrypters, for the keys whose halves can be read (all plain ``Fernet`` objects)."""
        if not fernet_batch.available():
            log.warning("numpy is not importable: field encoding falls back to per-value Fernet (~8 us a value)")
            return {}
        batch = {name: fernet_batch.BatchFernet.from_fernet(fernet) for name, fernet in self.fernets.items()}
        return {name: encrypter for name, encrypter in batch.items() if encrypter is not None}

    @classmethod
    def from_keys(cls, url: Any = None, username: Any = None) -> FieldEncoder:
        """From Fernet keys or the subnet's key managers (``encoding_key_manager`` -> url, private -> username)."""
        fernets = {name: _fernet(key) for name, key in (("url", url), ("username", username)) if key is not None}
        return cls(fernets)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name in ENCODABLE_FIELDS if name in self.fernets)

    def encode_array(self, name: str, values: pa.Array) -> pa.Array:
        """Encrypt every non-null value of string array ``values`` of column ``name``; nulls stay null.

        ``values`` may be a slice (non-zero offset), a ``large_string`` array (kept large) or a chunked
        column (encoded chunk by chunk); string views come back as plain strings. Returns ``values``
        itself when no key is set for ``name``. The tokens of one call share one timestamp (read once,
        as ``Fernet.encrypt`` reads it per value).
        """
        fernet = self.fernets.get(name)
        if fernet is None:
            return values
        if isinstance(values, pa.ChunkedArray):  # a table's column: encode chunk by chunk
            chunks = [self.encode_array(name, chunk) for chunk in values.chunks]
            out_type = pa.large_string() if pa.types.is_large_string(values.type) else pa.string()
            return pa.chunked_array(chunks, out_type)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
                or pa.types.is_string_view(values.type)):
            raise TypeError(f"column {name!r} is {values.type}, not a string array")
        batch = self._batch.get(name)
        if batch is not None:
            return batch.encrypt_array(values)
        encrypt, b64 = fernet.encrypt, base64.urlsafe_b64encode
        out_type = pa.large_string() if pa.types.is_large_string(values.type) else pa.string()
        return pa.array([None if value is None else b64(encrypt(value.encode())).decode()
                         for value in values.to_pylist()], out_type)

    def encode_column(self, name: str, values: Sequence[str | None]) -> list[str | None]:
        """Encrypt every non-null value of column ``name`` (unchanged when no key is set for it)."""
        if name not in self.fernets:
            return list(values)
        return self.encode_array(name, pa.array(values, pa.string())).to_pylist()


def decode_value(value: str, key: Any) -> str:
    """Reverse ``encode_column`` for one value (what a validator holding the key does)."""
    try:
        return _fernet(key).decrypt(base64.urlsafe_b64decode(value.encode())).decode()
    except (InvalidToken, ValueError) as error:
        raise ValueError(f"value is not an encoded field for this key: {error!r}") from None
