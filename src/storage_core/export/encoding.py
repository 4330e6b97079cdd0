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
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from storage_core.export import fernet_batch

log = logging.getLogger(__name__)

ENCODABLE_FIELDS = ("url", "username")


def _key_material(key: Any) -> bytes | str | None:
    """The Fernet key itself, where ``key`` carries one: a key (str/bytes) or a manager's ``sym_key``.

    A ready-made ``Fernet``/``MultiFernet`` (or a manager that only hands one out) does not expose its
    key through any public name, so it gets None and is used as it is, one value at a time.
    """
    if isinstance(key, (bytes, str)):
        return key
    material = getattr(key, "sym_key", None)  # subnet 13's EncodingKeyManager keeps the key here
    return material if isinstance(material, (bytes, str)) else None


def _fernet(key: Any) -> Fernet | MultiFernet:
    """Accept a Fernet, a key (str/bytes), or a key manager with ``sym_key`` / ``get_fernet()`` / ``fernet``."""
    if isinstance(key, (Fernet, MultiFernet)):
        return key
    material = _key_material(key)
    if material is None:
        found = key.get_fernet() if hasattr(key, "get_fernet") else getattr(key, "fernet", None)
        if isinstance(found, (Fernet, MultiFernet)):
            return found
        raise ValueError(f"not a Fernet key or key manager: {type(key).__name__}")
    try:
        return Fernet(material)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a Fernet key (32 url-safe base64-encoded bytes): {error}") from None


def _batch_encrypter(key: Any) -> fernet_batch.BatchFernet | None:
    """The batched encrypter for ``key`` when its key material is at hand (checked by ``_fernet`` first)."""
    material = _key_material(key)
    return None if material is None else fernet_batch.BatchFernet.from_key(material)


@attrs.frozen
class FieldEncoder:
    """Which columns to encrypt, and with which key. An empty encoder changes nothing.

    ``fernets`` encrypt one value at a time; ``batch`` holds the batched encrypters for the columns whose
    key material is known (every key given as a key or through ``sym_key``), which make the same tokens.
    """

    fernets: Mapping[str, Fernet | MultiFernet] = attrs.field(factory=dict, repr=False)
    batch: Mapping[str, fernet_batch.BatchFernet] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_keys(cls, url: Any = None, username: Any = None) -> FieldEncoder:
        """From Fernet keys or the subnet's key managers (``encoding_key_manager`` -> url, private -> username)."""
        given = {name: key for name, key in (("url", url), ("username", username)) if key is not None}
        fernets = {name: _fernet(key) for name, key in given.items()}
        batch: dict[str, fernet_batch.BatchFernet] = {}
        if fernet_batch.available():
            found = {name: _batch_encrypter(key) for name, key in given.items()}
            batch = {name: encrypter for name, encrypter in found.items() if encrypter is not None}
        elif given:
            log.warning("numpy is not importable: field encoding falls back to per-value Fernet (~8 us a value)")
        return cls(fernets, batch)

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
        batch = self.batch.get(name)
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
