"""Options, repo ids and back-off helpers: bad input gets an error naming the field; tokens stay secret."""

from __future__ import annotations

import attrs
import pytest

from storage_core.backoff import Backoff
from storage_core.chain.keys import keypair_from_uri
from storage_core.errors import ConfigError
from storage_core_huggingface import plugin, uploader
from storage_core_huggingface.identity import repo_id_for
from storage_core_huggingface.options import HfOptions


def keypair(name: str):
    return keypair_from_uri(f"//hf-{name}")


def test_options_are_checked_and_the_token_is_never_shown():
    options = HfOptions.from_mapping({"namespace": "sn13", "token": "hf_secret", "private": "true"})
    assert options.private is True and options.endpoint == "https://huggingface.co"
    assert "hf_secret" not in repr(options)
    for bad, field in [({}, "namespace"), ({"namespace": "a b"}, "namespace"),
                       ({"namespace": "x", "endpoint": "ftp://x"}, "endpoint"),
                       ({"namespace": "x", "max_attempts": 0}, "max_attempts"),
                       ({"namespace": "x", "private": "maybe"}, "private")]:
        with pytest.raises(ConfigError, match=f"backends.huggingface.options.{field}"):
            HfOptions.from_mapping(bad)


def test_unknown_options_are_ignored_with_a_warning(caplog):
    assert HfOptions.from_mapping({"namespace": "x", "future_option": 1}).namespace == "x"
    assert "future_option" in caplog.text


def test_the_descriptor_marks_the_token_secret():
    [descriptor] = plugin.storage_backends()
    specs = {spec.name: spec for spec in descriptor.options}
    assert specs["token"].secret and specs["namespace"].required
    assert {"endpoint", "repo_prefix", "private"} <= set(specs)


def test_repo_ids_are_derived_and_hotkeys_checked():
    miner = keypair("miner-a")
    assert repo_id_for("sn13", "p", miner.ss58_address) == f"sn13/p-{miner.ss58_address}"
    with pytest.raises(ValueError, match="ss58"):
        repo_id_for("sn13", "p", "../evil")


def test_backoff_stops_at_once_on_errors_that_are_not_transient():
    calls = []

    def fails():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        uploader.backoff_for(HfOptions.from_mapping({"namespace": "x"})).call("x", fails)
    assert len(calls) == 1


def test_the_back_off_is_the_cores_with_the_hubs_errors():
    backoff = uploader.backoff_for(HfOptions.from_mapping({"namespace": "x", "max_attempts": "3",
                                                           "backoff_max_s": 9}))
    assert isinstance(backoff, Backoff) and backoff.attempts == 3 and backoff.cap == backoff.max_retry_after == 9
    waits: list[float] = []
    with pytest.raises(ConnectionError):
        attrs.evolve(backoff, sleep=waits.append).call("x", lambda: (_ for _ in ()).throw(ConnectionError("down")))
    assert len(waits) == 2
