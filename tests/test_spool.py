"""The spool directory: content-addressed chunks, crash leftovers, bounds, and the state_file mapping."""

from __future__ import annotations

import pytest

from storage_core.export.spool import Spool, SpoolBusyError
from storage_core.export.watermark import Watermark
from storage_core.testing.data import make_batch


def test_state_file_maps_to_a_spool_beside_it(tmp_path):
    spool = Spool.for_state_file(tmp_path / "upload_state.json", max_bytes=1_000)
    assert spool.directory == tmp_path / "upload_state.json.spool"
    assert (spool.directory / "ledger.sqlite").is_file() and spool.chunk_dir.is_dir()
    assert spool.room_bytes() == 1_000
    spool.close()


def test_bad_bound_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        Spool(tmp_path / "s", max_bytes=0)


def test_pending_groups_split_by_who_still_needs_what(tmp_path, miner_keys):
    spool = Spool(tmp_path / "s")
    files = make_batch(spool.chunk_dir, miner_keys[0].ss58_address, rows=20, chunks=2).files
    spool.ledger.record_export(files, ["s3", "hf"], Watermark("2026-11-02 00:00:00+00:00"))
    spool.acknowledge([files[0].sha256], "s3")
    groups = spool.pending_groups(["s3", "hf"])
    assert {need: [f.sha256 for f in chunk] for need, chunk in groups.items()} == {
        frozenset({"hf"}): [files[0].sha256],
        frozenset({"s3", "hf"}): [files[1].sha256],
    }
    assert spool.pending_groups(["gcs"]) == {}
    assert spool.prune() == (0, 0)  # nothing fully acknowledged yet
    spool.acknowledge([files[0].sha256], "hf")
    assert spool.prune() == (1, files[0].size_bytes)
    assert not files[0].path.exists() and files[1].path.exists()
    spool.close()


def test_recover_removes_only_files_the_ledger_does_not_know(tmp_path, miner_keys):
    spool = Spool(tmp_path / "s")
    files = make_batch(spool.chunk_dir, miner_keys[0].ss58_address, rows=10, chunks=2).files
    spool.ledger.record_export(files[:1], ["s3"], None)
    removed = spool.recover()
    assert removed == [files[1].path.name]
    assert files[0].path.exists() and not files[1].path.exists()
    spool.close()


def test_lock_is_exclusive(tmp_path):
    spool = Spool(tmp_path / "s")
    with spool.locked():
        with pytest.raises(SpoolBusyError):
            with Spool(tmp_path / "s").locked():
                pass
    with spool.locked():  # released
        pass
    spool.close()
