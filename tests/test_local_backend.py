"""The reference backend passes the conformance kit, and its own edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage_core.backends import local
from storage_core.testing.conformance import BackendConformance, BackendHarness, ConformanceTarget
from storage_core.testing.data import make_batch, uris_of
from storage_core.values import BackendContext


def _put_raw(root: Path):
    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return put


def _target(root: Path, miners, validator) -> ConformanceTarget:
    return ConformanceTarget(
        put_raw=_put_raw(root),
        backend_id="local",
        plugin=local,
        context_for=lambda signer: BackendContext(
            backend_id="local", options={"root": str(root)}, hotkey=signer.ss58_address, signer=signer
        ),
        miners=(miners[0], miners[1]),
        validator=validator,
    )


class TestLocalConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path, miner_keys, validator_key) -> ConformanceTarget:
        return _target(tmp_path / "store", miner_keys, validator_key)


def test_missing_root_option_is_named(tmp_path: Path, miner_keys, validator_key) -> None:
    target = ConformanceTarget(
        backend_id="local",
        plugin=local,
        context_for=lambda signer: BackendContext(backend_id="local", hotkey=signer.ss58_address),
        miners=(miner_keys[0], miner_keys[1]),
        validator=validator_key,
    )
    batch = make_batch(tmp_path, miner_keys[0].ss58_address, rows=10)
    with pytest.raises(Exception, match="option 'root'"):
        BackendHarness(target).upload(miner_keys[0], batch)


def test_corrupt_object_is_reported_not_counted(tmp_path: Path, miner_keys, validator_key) -> None:
    harness = BackendHarness(_target(tmp_path / "store", miner_keys, validator_key))
    batch = make_batch(tmp_path / "staging", miner_keys[0].ss58_address, rows=100, chunks=2)
    receipt = harness.upload(miner_keys[0], batch)
    broken = tmp_path / "store" / receipt.objects[0].key
    broken.write_bytes(b"PAR1 garbage")
    result = harness.validate(batch.miner_hotkey, uris_of(batch))
    assert [p.key for p in result.problems] == [receipt.objects[0].key]
    assert 0 < len(result.found) < len(uris_of(batch))


def test_validation_reads_no_file_a_claim_cannot_be_in(tmp_path: Path, miner_keys, validator_key) -> None:
    """A directory records no checksum, so each candidate file is hashed whole; other sources are not read."""
    harness = BackendHarness(_target(tmp_path / "store", miner_keys, validator_key))
    x_batch = make_batch(tmp_path / "x", miner_keys[0].ss58_address, rows=5_000, source="x")
    reddit = make_batch(tmp_path / "r", miner_keys[0].ss58_address, rows=20_000, source="reddit", seed=3)
    harness.upload(miner_keys[0], x_batch)
    harness.upload(miner_keys[0], reddit)
    result = harness.validate(x_batch.miner_hotkey, uris_of(x_batch)[:3])
    assert result.found == frozenset(uris_of(x_batch)[:3]) and result.objects_scanned == 1
    assert x_batch.total_bytes <= result.bytes_read < x_batch.total_bytes + reddit.total_bytes / 2


def test_health(tmp_path: Path) -> None:
    assert local.storage_health(BackendContext(backend_id="local", options={"root": str(tmp_path / "r")})).ok
    assert not local.storage_health(BackendContext(backend_id="local")).ok


def test_usage_counts_only_this_miners_files(tmp_path: Path, miner_keys, validator_key) -> None:
    target = _target(tmp_path / "store", miner_keys, validator_key)
    harness = BackendHarness(target)
    batch = make_batch(tmp_path / "staging", miner_keys[0].ss58_address, rows=100, chunks=3)
    harness.upload(miner_keys[0], batch)
    context = target.context_for(validator_key)
    mine = local.storage_usage(context, miner_keys[0].ss58_address)
    assert (mine.objects, mine.bytes) == (3, batch.total_bytes)
    assert local.storage_usage(context, miner_keys[1].ss58_address).objects == 0
