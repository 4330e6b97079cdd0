"""The config document: strict parsing, canonical form, compact chain encoding, layering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage_core.config import (
    COMMITMENT_LIMIT,
    DEFAULT_CONFIG,
    ConfigLayer,
    ConfigPointer,
    decode_chain_payload,
    default_layer,
    encode_compact,
    encode_for_chain,
    environment_layer,
    parse_config,
    parse_config_json,
    resolve,
    split_commitment_fields,
)
from storage_core.errors import ConfigError

LONG_BUCKET = "sn13-data-universe-miner-uploads-" + "x" * 30  # 63 characters, S3's maximum
GRANT_URL = "https://storage-grant.datauniverse-subnet13.example.io/grant"


def realistic():
    config = DEFAULT_CONFIG.evolve_backend(
        "s3", rollout_percent=25, options={"bucket": LONG_BUCKET, "region": "us-east-1", "grant_url": GRANT_URL}
    )
    return config.evolve_backend("huggingface", options={"namespace": "macrocosmos-sn13-miners"})


def test_realistic_config_fits_the_commitment_inline() -> None:
    assert len(LONG_BUCKET) == 63 and len(GRANT_URL) == 60
    payload = encode_for_chain(realistic())
    assert payload.startswith("sc1;")
    assert len(payload.encode()) <= COMMITMENT_LIMIT
    assert decode_chain_payload(payload) == realistic()
    fields = split_commitment_fields(payload)
    assert len(fields) <= 3 and all(len(f) <= 128 for f in fields)
    assert b"".join(fields).decode() == payload


def test_large_config_becomes_a_pointer_that_verifies() -> None:
    config = realistic().evolve_backend("s3", options={f"extra_{i}": "v" * 40 for i in range(10)})
    with pytest.raises(ConfigError, match="give its URL"):
        encode_for_chain(config)
    payload = encode_for_chain(config, pointer_url="https://example.invalid/config.json")
    pointer = decode_chain_payload(payload)
    assert isinstance(pointer, ConfigPointer) and pointer.sha256 == config.sha256()
    assert pointer.verify(config.canonical_json().encode()) == config
    tampered = config.canonical_json().replace('"rollout_percent":25', '"rollout_percent":99').encode()
    with pytest.raises(ConfigError, match="sha256"):
        pointer.verify(tampered)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"backends": {"s3": {"rollout_percent": 150}}}, "backends.s3.rollout_percent"),
        ({"backends": {"s3": {"rollout_percent": -1}}}, "backends.s3.rollout_percent"),
        ({"backends": {"s3": {"rollout_percent": "25"}}}, "backends.s3.rollout_percent"),
        ({"backends": {"s3": {"enabled": "yes"}}}, "backends.s3.enabled"),
        ({"backends": {"s3": {"colour": "red"}}}, "backends.s3.colour"),
        ({"bogus": 1}, "bogus"),
        ({"validation_policy": "most"}, "validation_policy"),
        ({"backends": {"s3": {}}, "fallback_order": ["s3", "r2"]}, "fallback_order[1]"),
        ({"backends": {"S3!": {}}}, "backends"),
        ({"backends": {"s3": {"options": {"nested": {"a": 1}}}}}, "backends.s3.options.nested"),
        ({"version": 2}, "version"),
    ],
)
def test_bad_documents_name_the_field(document, field) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_bad_json_and_utf8_are_clear() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config_json("{nope")
    with pytest.raises(ConfigError, match="UTF-8"):
        decode_chain_payload(b"sc1;p=any;\xff\xfe")
    with pytest.raises(ConfigError, match="more than the chain"):
        decode_chain_payload("sc1;" + "x" * 400)
    with pytest.raises(ConfigError, match="does not start with"):
        decode_chain_payload("hello world")


def test_canonical_json_is_stable() -> None:
    a = parse_config({"backends": {"b": {"enabled": True}, "a": {"rollout_percent": 5.0}}})
    b = parse_config({"backends": {"a": {"rollout_percent": 5}, "b": {"enabled": True}}})
    assert a.canonical_json() == b.canonical_json() and a.sha256() == b.sha256()
    assert json.loads(a.canonical_json())["backends"]["a"]["rollout_percent"] == 5


def test_layers_merge_by_precedence_and_record_sources() -> None:
    chain = ConfigLayer("chain", {"backends": {"s3": {"rollout_percent": 25, "options": {"bucket": "chain-b"}}}})
    env = environment_layer({"STORAGE_CORE_S3_ROLLOUT": "5", "STORAGE_CORE_S3_OPTION_REGION": "eu-west-1"})
    override = ConfigLayer("override", {"backends": {"s3": {"options": {"bucket": "mine"}}}})
    resolved = resolve([default_layer(), env, chain, override])
    s3 = resolved.config.backends["s3"]
    assert s3.rollout_percent == 25 and s3.options == {"bucket": "mine", "region": "eu-west-1"}
    assert resolved.source_of("backends.s3.rollout_percent") == "chain"
    assert resolved.source_of("backends.s3.options.bucket") == "override"
    assert resolved.source_of("backends.s3.options.region") == "environment"
    assert resolved.source_of("backends.huggingface.enabled") == "default"


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="STORAGE_CORE_S3_ROLLOUT"):
        environment_layer({"STORAGE_CORE_S3_ROLLOUT": "lots"})
    with pytest.raises(ConfigError, match="STORAGE_CORE_S3_ENABLED"):
        environment_layer({"STORAGE_CORE_S3_ENABLED": "maybe"})


option_values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
backend_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
option_keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def documents(draw):
    names = draw(st.lists(backend_ids, min_size=0, max_size=3, unique=True))
    backends = {
        name: {
            "enabled": draw(st.booleans()),
            "rollout_percent": draw(st.integers(0, 10000)) / 100,
            "options": draw(st.dictionaries(option_keys, option_values, max_size=3)),
        }
        for name in names
    }
    order = draw(st.permutations(names))[: draw(st.integers(0, len(names)))]
    return {"backends": backends, "validation_policy": draw(st.sampled_from(["any", "all", "primary"])),
            "fallback_order": list(order)}


@settings(max_examples=200, deadline=None)
@given(documents())
def test_compact_encoding_round_trips(document) -> None:
    config = parse_config(document)
    assert decode_chain_payload(encode_compact(config)) == config if len(encode_compact(config)) <= COMMITMENT_LIMIT else True
    assert parse_config_json(config.canonical_json()) == config


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_payload_decodes_or_fails_clearly(payload: bytes) -> None:
    try:
        decode_chain_payload(payload)
    except ConfigError as error:
        assert str(error)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="sc1p;=:,abf0-9%\"{}", max_size=60))
def test_compact_lookalikes_decode_or_fail_clearly(text: str) -> None:
    try:
        decode_chain_payload("sc1;" + text)
    except ConfigError as error:
        assert str(error)
