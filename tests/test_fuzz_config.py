"""Property tests of the config document beyond tests/test_config.py: any JSON value through
``parse_config`` gives a config or a ConfigError naming a field (never another exception); a parsed config
survives canonical JSON and the chain encoding unchanged; any environment map gives a layer or a
ConfigError naming the variable."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage_core.config import (
    COMMITMENT_LIMIT,
    ConfigLayer,
    decode_chain_payload,
    default_layer,
    encode_for_chain,
    environment_layer,
    parse_config,
    parse_config_json,
    resolve,
)
from storage_core.errors import ConfigError

KNOWN_KEYS = ["backends", "validation_policy", "fallback_order", "version", "enabled", "rollout_percent",
              "options", "s3", "huggingface", "any", "all", "primary", "bucket"]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(KNOWN_KEYS),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8)), children, max_size=4),
    ),
    max_leaves=25,
)


@st.composite
def near_valid_documents(draw):
    """Documents shaped like configs, with any field possibly replaced by an arbitrary JSON value."""
    def maybe(value):
        return draw(json_values) if draw(st.integers(0, 9)) == 0 else value

    names = draw(st.lists(st.one_of(st.sampled_from(["s3", "huggingface", "local"]),
                                    st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)), max_size=3, unique=True))
    backends = {
        name: maybe({
            "enabled": maybe(draw(st.booleans())),
            "rollout_percent": maybe(draw(st.floats(0, 100, allow_nan=False))),
            "options": maybe(draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
                                                  st.one_of(st.text(max_size=20), st.integers(), st.booleans(),
                                                            st.floats(allow_nan=False, allow_infinity=False)),
                                                  max_size=3))),
        })
        for name in names
    }
    document = {"backends": maybe(backends), "validation_policy": maybe(draw(st.sampled_from(["any", "all", "primary"]))),
                "fallback_order": maybe(list(draw(st.permutations(names))))}
    if draw(st.booleans()):
        document[draw(st.sampled_from(KNOWN_KEYS + ["extra"]))] = draw(json_values)
    return document


def check_round_trips(document) -> None:
    try:
        config = parse_config(document)
    except ConfigError as error:
        assert error.args and str(error), "a ConfigError must say what is wrong"
        return
    canonical = config.canonical_json()
    assert parse_config_json(canonical) == config
    assert parse_config(json.loads(canonical)).canonical_json() == canonical  # canonical is a fixed point
    try:
        payload = encode_for_chain(config)
    except ConfigError as error:  # too large for an inline commitment without a pointer: said clearly
        assert str(error)
        return
    if len(payload.encode()) <= COMMITMENT_LIMIT:
        assert decode_chain_payload(payload) == config


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_is_a_config_or_a_config_error(document) -> None:
    check_round_trips(document)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid_documents())
def test_near_valid_documents_round_trip_or_fail_clearly(document) -> None:
    check_round_trips(document)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_json_document_fail_clearly(raw: bytes) -> None:
    try:
        parse_config_json(raw)
    except ConfigError as error:
        assert str(error)


env_names = st.one_of(
    st.sampled_from(["STORAGE_CORE_POLICY", "STORAGE_CORE_FALLBACK_ORDER", "STORAGE_CORE_S3_ENABLED",
                     "STORAGE_CORE_S3_ROLLOUT", "STORAGE_CORE_HUGGINGFACE_ENABLED", "STORAGE_CORE_S3_OPTION_BUCKET",
                     "STORAGE_CORE_HUGGINGFACE_OPTION_NAMESPACE", "STORAGE_CORE_LOCAL_ROLLOUT", "HOME", "PATH"]),
    st.from_regex(r"STORAGE_CORE_[A-Z0-9_]{1,12}_(ENABLED|ROLLOUT|OPTION_[A-Z0-9_]{1,8})", fullmatch=True),
    st.text(alphabet=string.ascii_uppercase + "_", min_size=1, max_size=20),
)
env_values = st.one_of(
    st.sampled_from(["1", "0", "true", "yes", "no", "maybe", "50", "100.5", "-3", "nan", "inf", "1e400", "",
                     "any", "all", "primary", "s3,huggingface", "s3,s3", ",", "{}", "[]", '{"backends": []}']),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(env_names, env_values, max_size=6), st.one_of(st.none(), st.sampled_from(
    ['{"validation_policy": "all"}', "{not json", '{"backends": {"s3": {"enabled": "x"}}}', "[1, 2]", "{}"])))
def test_any_environment_gives_a_layer_or_names_the_variable(environ: dict[str, str], document: str | None) -> None:
    if document is not None:
        environ = {**environ, "STORAGE_CORE_CONFIG": document}
    try:
        layer = environment_layer(environ)
    except ConfigError as error:
        assert str(error)
        return
    assert isinstance(layer, ConfigLayer)
    try:
        resolved = resolve([default_layer(), layer])
    except ConfigError as error:  # a well-formed variable whose value the document rules refuse
        assert str(error)
        return
    assert parse_config_json(resolved.config.canonical_json()) == resolved.config
