"""Owner hotkey and commitment reads/writes through the real SDK, with chain errors an owner understands."""

from __future__ import annotations

import pytest
from bittensor_core import Keypair

from storage_core.chain.commitments import (
    commit_payload,
    commitment_fields,
    hotkey_uid,
    read_commitment,
    read_owner_hotkey,
)
from storage_core.chain.subtensor import ChainTarget, open_subtensor, resolve_target
from storage_core.config import DEFAULT_CONFIG, decode_chain_payload, encode_compact
from storage_core.errors import ChainError, ConfigError

NETUID = 13


def test_commit_and_read_back(chain, owner):
    sub = chain.subtensor()
    payload = encode_compact(DEFAULT_CONFIG.evolve_backend("s3", rollout_percent=5, options={"bucket": "b" * 150}))
    receipt = commit_payload(sub, NETUID, owner, payload)
    assert len(receipt.fields) == 2 and b"".join(receipt.fields) == payload.encode()
    assert read_owner_hotkey(sub, NETUID) == owner.ss58_address
    record = read_commitment(sub, NETUID, owner.ss58_address)
    assert record.payload == payload.encode() and record.block == chain.block
    assert decode_chain_payload(record.payload).backends["s3"].options["bucket"] == "b" * 150
    assert hotkey_uid(sub, NETUID, owner.ss58_address) == 0


def test_fields_split_at_128_bytes():
    fields = commitment_fields("x" * 300)
    assert [next(iter(f)) for f in fields] == ["Raw128", "Raw128", "Raw44"]
    with pytest.raises(ConfigError, match="more than the chain's 384"):
        commitment_fields("x" * 385)


def test_missing_subnet_is_a_clear_error(chain):
    with pytest.raises(ChainError, match="subnet 99 has no owner hotkey"):
        read_owner_hotkey(chain.subtensor(), 99)


def test_unregistered_hotkey_message(chain, owner):
    sub = chain.subtensor()
    commit_payload(sub, NETUID, owner, "sc1;p=any;f=")
    stranger = Keypair.create_from_uri("//commitments-stranger")
    with pytest.raises(ChainError, match=f"hotkey {stranger.ss58_address} is not registered on subnet 13"):
        commit_payload(sub, NETUID, stranger, "sc1;p=all;f=")
    assert read_commitment(sub, NETUID, owner.ss58_address).payload == b"sc1;p=any;f="


def test_quota_message(chain, owner):
    sub = chain.subtensor()
    for index in range(31):
        commit_payload(sub, NETUID, owner, f"v{index}")
    with pytest.raises(ChainError, match="used its commitment space quota.*Wait for the next epoch"):
        commit_payload(sub, NETUID, owner, "sc1;p=all;f=")
    assert read_commitment(sub, NETUID, owner.ss58_address).payload == b"v30"


def test_oversized_payload_never_reaches_the_chain(chain, owner):
    sub = chain.subtensor()
    block = chain.block
    with pytest.raises(ConfigError, match="385 bytes"):
        commit_payload(sub, NETUID, owner, "y" * 385)
    assert chain.block == block
    assert read_commitment(sub, NETUID, owner.ss58_address) is None


def test_network_selection(tmp_path):
    path = tmp_path / "c.json"
    assert resolve_target("devchain:" + str(path)) == ChainTarget("devchain", devchain_path=path)
    assert resolve_target("devchain", str(path)) == ChainTarget("devchain", devchain_path=path)
    assert resolve_target(None, None, {"STORAGE_CORE_DEVCHAIN": str(path)}).devchain_path == path
    assert resolve_target(None, None, {}) == ChainTarget("finney")
    assert resolve_target("test", "wss://example.invalid:443", {}).endpoint == "wss://example.invalid:443"
    with pytest.raises(ChainError, match="needs a state file"):
        resolve_target("devchain", None, {})
    with pytest.raises(ChainError, match="ws:// or wss://"):
        resolve_target("finney", "http://x", {})
    with pytest.raises(ChainError, match="no dev chain state file"):
        open_subtensor("devchain:" + str(path))
    with pytest.raises(ChainError, match="Unknown network"):
        open_subtensor("no-such-network")


def test_an_awaited_client_is_refused_clearly(chain):
    import asyncio

    async def main():
        async with chain.subtensor() as client:
            with pytest.raises(ChainError, match="needs a blocking bittensor.Subtensor"):
                read_owner_hotkey(client, NETUID)

    asyncio.run(main())
