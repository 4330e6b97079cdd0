"""storage_core.options: one typed parser for every backend's options, and the same rules in `config set`."""

from __future__ import annotations

import logging

import pytest

from storage_core.config import check_options, parse_config
from storage_core.errors import BackendError, ConfigError
from storage_core.options import bucket_problem, convert, parse_options
from storage_core.values import OptionSpec

SPECS = (
    OptionSpec("bucket", required=True),
    OptionSpec("endpoint_url"),
    OptionSpec("private", type="bool", default=False),
    OptionSpec("concurrency", type="int", default=4),
    OptionSpec("timeout", type="float", default=2.5),
    OptionSpec("label", default="x"),
)


def test_values_are_typed_and_defaults_filled():
    values = parse_options("r2", SPECS, {"bucket": "sn13-data", "concurrency": "8", "timeout": 3, "private": "YES"})
    assert values == {"bucket": "sn13-data", "endpoint_url": None, "private": True, "concurrency": 8, "timeout": 3.0,
                      "label": "x"}
    assert type(values["timeout"]) is float and type(values["concurrency"]) is int


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), (" Yes ", True), (True, True), (1, True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False), (False, False), (0, False),
])
def test_one_spelling_of_booleans(text, expected):
    assert convert("r2", SPECS[2], text) is expected


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("private", "maybe", "must be true or false"),
    ("private", 2, "must be true or false"),
    ("concurrency", "many", "must be a whole number"),
    ("concurrency", 2.5, "must be a whole number"),
    ("concurrency", True, "must be a whole number"),
    ("timeout", "soon", "must be a number"),
    ("timeout", "nan", "finite"),
    ("timeout", False, "must be a number"),
    ("label", True, "must be text"),
    ("endpoint_url", "storage.example.org", "http(s):// URL"),
    ("bucket", "Sn13_Data", "not a valid bucket name"),
])
def test_errors_name_the_option_and_are_not_retryable(name, value, problem):
    with pytest.raises(ConfigError) as raised:
        parse_options("r2", SPECS, {"bucket": "sn13-data", name: value})
    assert raised.value.field == f"backends.r2.options.{name}" and problem in raised.value.problem
    assert isinstance(raised.value, BackendError) and not raised.value.retryable


def test_a_missing_required_option_is_named_and_unknown_ones_are_logged(caplog):
    with pytest.raises(ConfigError, match="backends.r2.options.bucket") as raised:
        parse_options("r2", SPECS, {"concurrency": 2})
    assert raised.value.problem.startswith("is required")
    with caplog.at_level(logging.WARNING):
        assert parse_options("r2", SPECS, {"bucket": "abc", "from_a_newer_plugin": 1})["bucket"] == "abc"
    assert "from_a_newer_plugin" in caplog.text


def test_numbers_given_for_text_stay_text():
    assert convert("r2", SPECS[0], 123) == "123"  # "123" is a valid bucket name


@pytest.mark.parametrize("name", ["abc", "sn13-data", "sn13.data.v2", "a" * 63, "123", "1-2.x-y"])
def test_valid_bucket_names(name):
    assert bucket_problem(name) is None


@pytest.mark.parametrize(("name", "why"), [
    ("ab", "3 to 63"), ("a" * 64, "3 to 63"), ("Sn13", "lower-case"), ("sn13_data", "lower-case"),
    ("sn 13", "lower-case"), ("-sn13", "start and end"), ("sn13-", "start and end"), (".sn13", "start and end"),
    ("sn13..data", "'..'"), ("sn13.-data", "'..'"), ("sn13-.data", "'..'"), ("192.168.5.4", "IP address"),
    ("xn--sn13", "reserved"), ("sthree-sn13", "reserved"), ("sn13-s3alias", "reserved"), ("sn13--ol-s3", "reserved"),
])
def test_invalid_bucket_names(name, why):
    problem = bucket_problem(name)
    assert problem is not None and why in problem and "\n" not in problem


def test_config_checks_use_the_same_rules():
    config = parse_config({"version": 1, "backends": {"r2": {"enabled": True, "options": {
        "bucket": "sn13-data", "private": "yes", "concurrency": "3"}}}})
    checked, errors, warnings = check_options(config, {"r2": SPECS})
    assert errors == [] and warnings == []
    assert dict(checked.backends["r2"].options) == {"bucket": "sn13-data", "private": True, "concurrency": 3}
    bad = parse_config({"version": 1, "backends": {"r2": {"enabled": True, "options": {"bucket": "My_Bucket"}}}})
    _, errors, _ = check_options(bad, {"r2": SPECS})
    assert [error.field for error in errors] == ["backends.r2.options.bucket"]
