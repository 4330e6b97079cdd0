"""Field encoding: the batched Fernet path makes exactly the tokens ``Fernet.encrypt`` makes, for any column."""

from __future__ import annotations

import base64
import os
import time

import pyarrow as pa
import pytest
from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_core.export import fernet_batch
from storage_core.export.encoding import FieldEncoder, decode_value

KEY = Fernet.generate_key()
FERNET = Fernet(KEY)
ENCODER = FieldEncoder.from_keys(url=KEY, username=Fernet.generate_key())


def _decrypt(text: str, fernet: Fernet = FERNET, ttl: int | None = None) -> str:
    """What the subnet's validator does with an encoded field."""
    return fernet.decrypt(base64.urlsafe_b64decode(text), ttl=ttl).decode()


def _spec_token(key: bytes, plain: bytes, timestamp: int, iv: bytes) -> bytes:
    """A Fernet token (its url-safe base64 text) written straight from the specification: the reference."""
    raw = base64.urlsafe_b64decode(key)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(raw[16:]), modes.CBC(iv)).encryptor()
    signed = b"\x80" + timestamp.to_bytes(8, "big") + iv + encryptor.update(padded) + encryptor.finalize()
    mac = hmac.HMAC(raw[:16], hashes.SHA256())
    mac.update(signed)
    return base64.urlsafe_b64encode(signed + mac.finalize())


def _assert_encodes(values: pa.Array, out: pa.Array) -> None:
    assert len(out) == len(values)
    assert out.null_count == values.null_count
    out.validate(full=True)
    for plain, coded in zip(values.to_pylist(), out.to_pylist(), strict=True):
        if plain is None:
            assert coded is None
        else:
            assert isinstance(coded, str) and coded != plain
            assert _decrypt(coded) == plain


def test_the_batched_path_is_used_for_plain_fernet_keys():
    assert fernet_batch.available()
    assert set(ENCODER.batch) == {"url", "username"}  # otherwise the tests below only test the fallback


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.none() | st.text(max_size=80), max_size=60),
    bounds=st.tuples(st.integers(0, 60), st.integers(0, 60)),
    large=st.booleans(),
)
def test_every_value_decrypts_to_its_input_and_nulls_stay_null(values, bounds, large):
    array = pa.array(values, pa.large_string() if large else pa.string())
    start, stop = min(bounds), max(bounds)
    array = array.slice(start, max(0, stop - start))  # offsets into the parent's buffers
    out = ENCODER.encode_array("url", array)
    assert out.type == array.type
    _assert_encodes(array, out)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 33, 48, 64, 100, 255, 256, 1000])
def test_block_boundaries_and_multibyte_text(length):
    values = ["a" * length, "é" * (length // 2), "€" * (length // 3), "🙂" * (length // 4)]
    out = ENCODER.encode_array("url", pa.array(values))
    _assert_encodes(pa.array(values), out)
    # the same token size as the per-value path (PKCS7 always adds a block when the text fills one)
    assert [len(text) for text in out.to_pylist()] == [
        len(base64.urlsafe_b64encode(FERNET.encrypt(value.encode()))) for value in values
    ]


def test_tokens_are_byte_for_byte_fernets_own(monkeypatch):
    """With the IVs and the clock fixed, every row is exactly the token the Fernet specification defines."""
    monkeypatch.setattr(fernet_batch, "_BATCH_ROWS", 7)  # many batches, each with rows of mixed block counts
    stream = bytes(range(256)) * 64
    taken: list[int] = []

    def urandom(size: int) -> bytes:  # a reproducible IV stream, in the order the rows draw from it
        start = sum(taken)
        taken.append(size)
        return stream[start : start + size]

    monkeypatch.setattr(os, "urandom", urandom)
    values = [None if index % 5 == 3 else "x" * (index * 7 % 70) + "ü" * (index % 3) for index in range(60)]
    out = fernet_batch.BatchFernet.from_key(KEY).encrypt_array(pa.array(values), now=1_700_000_000)
    monkeypatch.undo()
    ivs = iter(stream[offset : offset + 16] for offset in range(0, len(stream), 16))
    for plain, coded in zip(values, out.to_pylist(), strict=True):
        if plain is None:
            assert coded is None
            continue
        token = _spec_token(KEY, plain.encode(), 1_700_000_000, next(ivs))
        assert coded == base64.urlsafe_b64encode(token).decode()
        assert FERNET.decrypt(token) == plain.encode()  # and cryptography's Fernet agrees it is one of its own


def test_equal_inputs_get_distinct_tokens():
    out = ENCODER.encode_array("url", pa.array(["https://x.com/a/status/1"] * 1000)).to_pylist()
    assert len(set(out)) == 1000  # a fresh IV per value
    ivs = {base64.urlsafe_b64decode(base64.urlsafe_b64decode(text))[9:25] for text in out}
    assert len(ivs) == 1000


def test_the_token_timestamp_is_now():
    before = int(time.time())
    out = ENCODER.encode_array("url", pa.array(["https://x.com/a", "bob", ""])).to_pylist()
    after = int(time.time())
    for text in out:
        token = base64.urlsafe_b64decode(text)
        assert before <= FERNET.extract_timestamp(token) <= after
        _decrypt(text, ttl=60)  # a validator checking freshness accepts it


def test_no_key_leaves_the_column_alone():
    array = pa.array(["a", None, "c"])
    assert FieldEncoder().encode_array("url", array) is array
    assert FieldEncoder.from_keys(url=KEY).encode_array("username", array) is array
    assert FieldEncoder.from_keys(url=KEY).encode_column("username", ["a", None]) == ["a", None]


def test_a_wrong_key_does_not_decode():
    text = ENCODER.encode_array("url", pa.array(["https://x.com/a"]))[0].as_py()
    assert decode_value(text, KEY) == "https://x.com/a"
    with pytest.raises(ValueError, match="not an encoded field"):
        decode_value(text, Fernet.generate_key())
    with pytest.raises(ValueError, match="not an encoded field"):
        decode_value("not base64 at all!", KEY)


def test_encode_column_matches_encode_array():
    values = ["https://reddit.com/r/x/comments/1", None, "", "ünïcode", "b" * 16]
    coded = ENCODER.encode_column("url", values)
    assert [value is None for value in coded] == [value is None for value in values]
    assert [None if text is None else decode_value(text, KEY) for text in coded] == values
    arrayed = ENCODER.encode_array("url", pa.array(values)).to_pylist()
    lengths = [None if text is None else len(text) for text in arrayed]
    assert [None if text is None else len(text) for text in coded] == lengths


def test_all_null_empty_and_chunked_columns():
    assert ENCODER.encode_array("url", pa.array([], pa.string())).to_pylist() == []
    assert ENCODER.encode_array("url", pa.array([None, None], pa.string())).to_pylist() == [None, None]
    chunked = pa.chunked_array([pa.array(["a", None]), pa.array([]).cast(pa.string()), pa.array(["ccc"]).slice(0)])
    out = ENCODER.encode_array("url", chunked)
    assert isinstance(out, pa.ChunkedArray) and out.num_chunks == 3
    _assert_encodes(chunked.combine_chunks(), out.combine_chunks())


def test_string_views_are_encoded_and_other_types_refused():
    views = pa.array(["x" * 40, None, "short"], pa.string_view())
    out = ENCODER.encode_array("url", views)
    assert out.type == pa.string()
    _assert_encodes(pa.array(views.to_pylist(), pa.string()), out)  # (pyarrow 17 cannot cast string_view)
    with pytest.raises(TypeError, match="not a string array"):
        ENCODER.encode_array("url", pa.array([1, 2]))


def test_keys_without_readable_halves_use_per_value_fernet():
    """A key manager may hand back a MultiFernet: still encoded, in the same format, just slower."""

    class Manager:
        def get_fernet(self) -> MultiFernet:
            return MultiFernet([FERNET])

    encoder = FieldEncoder.from_keys(url=Manager())
    assert "url" not in encoder.batch
    values = pa.array(["https://x.com/a", None, ""])
    _assert_encodes(values, encoder.encode_array("url", values))
    assert [decode_value(text, KEY) for text in encoder.encode_column("url", ["a", "b"])] == ["a", "b"]


def test_bytes_under_a_null_slot_are_ignored():
    """Arrow lets a null slot span bytes (e.g. after a filter); they must not shift or leak into other rows."""
    offsets = pa.py_buffer(pa.array([0, 3, 6, 9], pa.int32()).buffers()[1])
    validity = pa.py_buffer(bytes([0b101]))
    array = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, pa.py_buffer(b"abcdefghi")], null_count=1)
    out = ENCODER.encode_array("url", array)
    assert out.to_pylist()[1] is None
    assert [_decrypt(out[0].as_py()), _decrypt(out[2].as_py())] == ["abc", "ghi"]
    assert [value.as_py() is None for value in ENCODER.encode_array("url", array.slice(1))] == [True, False]


def test_a_key_manager_with_sym_key_takes_the_batched_path():
    """Subnet 13's EncodingKeyManager keeps its key in ``sym_key`` (and a Fernet in ``fernet``)."""

    class EncodingKeyManager:
        def __init__(self) -> None:
            self.sym_key = KEY
            self.fernet = Fernet(KEY)

    encoder = FieldEncoder.from_keys(url=EncodingKeyManager())
    assert set(encoder.batch) == {"url"}
    values = pa.array(["https://x.com/a/status/1", None, "é" * 40])
    _assert_encodes(values, encoder.encode_array("url", values))


def test_a_ready_made_fernet_is_used_one_value_at_a_time():
    encoder = FieldEncoder.from_keys(url=FERNET)
    assert encoder.batch == {}
    values = pa.array(["https://x.com/a", None])
    _assert_encodes(values, encoder.encode_array("url", values))


@pytest.mark.parametrize("key", [b"short", "!" * 44, base64.urlsafe_b64encode(b"x" * 31), object()])
def test_what_is_not_a_key_is_refused_by_name(key):
    with pytest.raises(ValueError, match="Fernet key"):
        FieldEncoder.from_keys(url=key)
