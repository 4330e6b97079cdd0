"""The integration guide's calls, in-process, with the SDK's own objects (bittensor 11 under `make test`,
bittensor 10.3 under `make test-sn13`): config from the chain, one upload round, validation of the result."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import bittensor as bt
import pytest

from demo.world import LocalSubnet
from storage_core.dispatch import INVALID, VALID
from storage_core.facades import create_config_from_chain_or_env, create_storage_from_config, create_validator_storage
from storage_core.testing.minerdb import create_miner_db


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with LocalSubnet(tmp_path_factory.mktemp("guide"), miners=1) as subnet:
        subnet.publish(subnet.config(100))
        yield subnet


def test_the_guide_round_trip_with_the_sdks_own_objects(world: LocalSubnet, tmp_path: Path) -> None:
    assert world.chain is not None and world.validator is not None
    subtensor = world.chain.subtensor()
    miner = world.miners[0]
    assert isinstance(subtensor, bt.Subtensor)  # the SDK's own class, whichever version is installed
    assert isinstance(miner.wallet, bt.Wallet)

    config = create_config_from_chain_or_env(subtensor, world.netuid)
    assert config.use_s3 and config.use_huggingface and config.s3_rollout_percentage == 100
    assert config.bucket_name == world.bucket_name

    db = create_miner_db(tmp_path / "miner.sqlite", 300, seed=41, days=2).path
    storage = create_storage_from_config(
        subtensor, world.netuid, db, miner.hotkey, miner.wallet, state_file=tmp_path / "state.json",
        overrides={"backends": {"huggingface": {"options": {"token": world.hf_tokens[miner.hotkey]}}}})
    try:
        round_ = storage.upload_data()
    finally:
        storage.close()
    assert {b.backend: b.status for b in round_.result.backends} == {"s3": "ok", "huggingface": "ok"}

    with sqlite3.connect(db) as connection:
        uris = [uri for (uri,) in connection.execute("SELECT uri FROM DataEntity ORDER BY uri LIMIT 15")]
    validator = create_validator_storage(
        subtensor, world.netuid, world.validator.wallet, state_dir=tmp_path / "validator",
        overrides={"backends": {"huggingface": {"options": {"token": world.hf_tokens[world.validator.hotkey]}}}})
    report = validator.validate_miner_data(miner.hotkey, uris + ["https://x.com/nobody/status/1"], seed="0xabc")
    assert [report.verdicts[uri] for uri in uris] == [VALID] * len(uris)
    assert report.verdicts["https://x.com/nobody/status/1"] == INVALID
