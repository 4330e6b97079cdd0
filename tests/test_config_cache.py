"""The last-known-good config cache is keyed by the chain's genesis hash and the netuid, not the network label.

Every dev chain calls itself "local", as every local subtensor does; a node moved from one to another must not
run with the first chain's config. Runs on both SDKs (10.3 and 11) through ``storage_core.chain``.
"""

from __future__ import annotations

import json
import time

from storage_core.chain import sdk
from storage_core.chain.commitments import commit_payload, read_genesis_hash
from storage_core.chain.source import ChainKey, ChainReading, ConfigSource, LastKnownGood
from storage_core.config import DEFAULT_CONFIG, encode_compact
from storage_core.errors import ChainError
from storage_core.testing.devchain import DevChain

NETUID = 13
S3_AT_25 = DEFAULT_CONFIG.evolve_backend("s3", rollout_percent=25, options={"bucket": "chain-a"})


def _new_chain(path, owner, **kwargs) -> DevChain:
    chain = DevChain.create(path, **kwargs)
    chain.create_subnet(NETUID, owner.ss58_address)
    return chain


def _break_config(chain: DevChain, owner) -> None:
    """Commit bytes that are not a config: the node must fall back to its last known good one."""
    assert sdk.set_commitment(chain.subtensor(), NETUID, owner, [b"sc1;p=any;f=\xff\xfe"]).success


def test_each_dev_chain_has_its_own_genesis_and_both_sdks_read_it(tmp_path, owner):
    first = _new_chain(tmp_path / "a.json", owner)
    second = _new_chain(tmp_path / "b.json", owner)
    assert first.genesis_hash != second.genesis_hash
    assert read_genesis_hash(first.subtensor()) == first.genesis_hash
    assert first.subtensor().network == second.subtensor().network  # the label cannot tell them apart
    # a salt given at creation rebuilds the same chain identity
    again = DevChain.create(tmp_path / "c.json", salt="fixed")
    assert again.genesis_hash == DevChain.create(tmp_path / "d.json", salt="fixed").genesis_hash
    assert again.genesis_hash != first.genesis_hash


def test_two_chains_with_one_label_and_netuid_do_not_share_a_cached_config(tmp_path, owner):
    cache = tmp_path / "state" / "config-cache.json"  # one state dir, as a node keeps for a netuid
    chain_a = _new_chain(tmp_path / "a.json", owner)
    commit_payload(chain_a.subtensor(), NETUID, owner, encode_compact(S3_AT_25))
    assert ConfigSource(chain_a.subtensor(), NETUID, cache_path=cache, environ={}).refresh().config == S3_AT_25

    chain_b = _new_chain(tmp_path / "b.json", owner)
    _break_config(chain_b, owner)
    node_b = ConfigSource(chain_b.subtensor(), NETUID, cache_path=cache, environ={})
    resolved = node_b.refresh()
    assert node_b.last_reading.status == "invalid"
    assert resolved.config == DEFAULT_CONFIG  # not chain A's S3 at 25%
    assert resolved.source_of("backends.s3.rollout_percent") == "default"
    assert LastKnownGood(cache).load(ChainKey(chain_b.genesis_hash, NETUID)) is None
    # chain A's entry is still there, under its own genesis
    assert LastKnownGood(cache).load(ChainKey(chain_a.genesis_hash, NETUID)).config == S3_AT_25


def test_the_same_chain_after_a_restart_reuses_its_cached_config(tmp_path, owner):
    cache = tmp_path / "state" / "config-cache.json"
    chain = _new_chain(tmp_path / "a.json", owner)
    commit_payload(chain.subtensor(), NETUID, owner, encode_compact(S3_AT_25))
    assert ConfigSource(chain.subtensor(), NETUID, cache_path=cache, environ={}).refresh().config == S3_AT_25
    _break_config(chain, owner)
    restarted = ConfigSource(DevChain(chain.path).subtensor(), NETUID, cache_path=cache, environ={})  # a new process
    resolved = restarted.refresh()
    assert resolved.config == S3_AT_25
    assert resolved.source_of("backends.s3.rollout_percent") == "chain (last known good)"
    # the same chain, another netuid: its own key, nothing cached for it
    entries = json.loads(cache.read_text())["entries"]
    assert list(entries) == [f"{chain.genesis_hash}:{NETUID}"]


def test_an_old_unkeyed_cache_file_is_not_trusted(tmp_path, owner, caplog):
    cache = tmp_path / "config-cache.json"
    cache.write_text(json.dumps({"config": S3_AT_25.to_dict(), "block": 3, "owner_hotkey": owner.ss58_address}))
    chain = _new_chain(tmp_path / "a.json", owner)
    _break_config(chain, owner)
    assert ConfigSource(chain.subtensor(), NETUID, cache_path=cache, environ={}).refresh().config == DEFAULT_CONFIG
    assert "does not say which chain" in caplog.text


def test_an_unreachable_chain_uses_the_cache_only_when_its_name_identifies_it(tmp_path, owner):
    cache = LastKnownGood(tmp_path / "config-cache.json")
    chain = _new_chain(tmp_path / "a.json", owner)
    commit_payload(chain.subtensor(), NETUID, owner, encode_compact(S3_AT_25))
    ConfigSource(chain.subtensor(), NETUID, cache_path=cache.path, environ={}).refresh()
    assert cache.load_named("local", NETUID) is None  # "local" names many chains
    node = ConfigSource(chain.subtensor(), NETUID, cache_path=cache.path, environ={})
    chain.path.unlink()  # the chain is gone before this node could read its genesis
    resolved = node.refresh()
    assert node.last_reading.status == "unreachable" and resolved.config == DEFAULT_CONFIG
    # finney is one chain: its entry is found by name when its genesis cannot be read
    reading = ChainReading(NETUID, "ok", owner.ss58_address, 7, b"", config=S3_AT_25)
    cache.save(ChainKey("0x" + "ab" * 32, NETUID, "finney"), reading)
    assert cache.load_named("finney", NETUID).config == S3_AT_25
    assert cache.load_named("finney", NETUID + 1) is None


def test_a_genesis_that_cannot_be_read_never_stops_the_config_from_being_read(tmp_path, owner, monkeypatch, caplog):
    chain = _new_chain(tmp_path / "a.json", owner)
    commit_payload(chain.subtensor(), NETUID, owner, encode_compact(S3_AT_25))

    def unreadable(_subtensor):  # a node whose SDK answers block 0 in a shape we do not know
        raise ChainError("the chain answered no usable genesis hash ('?')")

    monkeypatch.setattr(sdk, "genesis_hash", unreadable)
    cache = tmp_path / "config-cache.json"
    node = ConfigSource(chain.subtensor(), NETUID, cache_path=cache, environ={})
    assert node.refresh().config == S3_AT_25 and node.last_reading.status == "ok"
    assert not cache.exists() and "its config is not cached" in caplog.text  # "local" cannot be keyed by name


def test_one_file_keeps_the_newest_entries_of_many_chains(tmp_path, owner):
    cache = LastKnownGood(tmp_path / "config-cache.json", max_entries=2)
    reading = ChainReading(NETUID, "ok", owner.ss58_address, 1, b"", config=S3_AT_25)
    keys = [ChainKey("0x" + f"{index:02x}" * 32, NETUID, "local") for index in range(1, 4)]
    for key in keys:
        cache.save(key, reading)
        time.sleep(0.01)
    assert cache.load(keys[0]) is None and cache.load(keys[1]).config == cache.load(keys[2]).config == S3_AT_25
