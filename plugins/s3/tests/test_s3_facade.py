"""The integration guide's S3ValidatorStorage answers from a config object, over the real grant service."""

from __future__ import annotations

from storage_core.config import DEFAULT_CONFIG, ResolvedConfig
from storage_core.facades import SubnetStorageConfig
from storage_core.testing.data import make_batch, uris_of
from storage_core_s3 import S3ValidatorStorage
from storage_core_s3.plugin import storage_upload


def test_validate_miner_data_from_a_guide_config(shared, keys, staging) -> None:
    miner = keys["miner0"]
    batch = make_batch(staging, miner.ss58_address, rows=300, seed=404)
    storage_upload(shared.context(miner), batch)
    options = {"bucket": shared.bucket, "grant_url": shared.url, "backoff_base": 0.05}
    config = SubnetStorageConfig(netuid=13, resolved=ResolvedConfig(
        DEFAULT_CONFIG.evolve_backend("s3", enabled=True, rollout_percent=100, options=options), {}))
    storage = S3ValidatorStorage(config, keys["validator"])
    uris = uris_of(batch)[:5]
    result = storage.validate_miner_data(miner.ss58_address, uris + ["https://x.com/absent/status/1"])
    assert result.found == frozenset(uris) and result.rows
    assert S3ValidatorStorage(options, keys["validator"]).validate_miner_data(keys["miner1"].ss58_address,
                                                                              uris).found == frozenset()
