"""A miner round over the spool: export once, every selected backend gets every row exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from local_publisher import LocalPublisher
from storage_core.backends import local
from storage_core.export import ExportOptions
from storage_core.export.round import RoundProgress, run_upload_round
from storage_core.export.spool import Spool, SpoolBusyError
from storage_core.testing.minerdb import DEFAULT_END, add_rows, create_miner_db
from storage_core.values import BackendContext, UploadOutcome, UploadReceipt


@pytest.fixture
def hotkey(miner_keys):
    return miner_keys[0].ss58_address


@pytest.fixture
def miner_db(tmp_path):
    return create_miner_db(tmp_path / "miner.sqlite", 2_000, seed=41, undecodable=3)


@pytest.fixture
def publisher(tmp_path):
    return LocalPublisher(tmp_path / "backends")


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    yield spool
    spool.close()


def _expected(summary) -> set[str]:
    import sqlite3

    connection = sqlite3.connect(summary.path)
    try:
        return {uri for (uri,) in connection.execute("SELECT uri FROM DataEntity")} - set(summary.undecodable_uris)
    finally:
        connection.close()


def _assert_once(publisher, backend, expected):
    counts = publisher.stored(backend)
    assert set(counts) == expected
    assert max(counts.values()) == 1


def test_round_stores_every_row_exactly_once_in_each_backend(miner_db, spool, publisher, hotkey):
    events: list[RoundProgress] = []
    result = run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey,
                              progress=events.append)
    expected = _expected(miner_db)
    for backend in ("s3", "hf"):
        _assert_once(publisher, backend, expected)
        assert result.backend(backend).status == "ok"
        assert result.backend(backend).files == result.chunks_exported
        assert result.backend(backend).still_owed_files == 0
    assert result.rows_exported == len(expected) and result.exports == 1
    assert result.skipped_rows == 3 and set(result.skipped_uris) == set(miner_db.undecodable_uris)
    # exported once, one batch for both backends, then the spool is empty again
    assert len(publisher.calls) == 1 and publisher.calls[0][0] == ("hf", "s3")
    assert spool.used_bytes() == 0 and not list(spool.chunk_dir.iterdir())
    assert result.pruned_files == result.chunks_exported
    assert {e.phase for e in events} == {"export", "upload"}
    assert datetime.fromisoformat(result.as_dict()["watermark"]["datetime"]) <= DEFAULT_END


def test_a_second_round_with_no_new_rows_uploads_nothing(miner_db, spool, publisher, hotkey):
    run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey)
    calls = len(publisher.calls)
    again = run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey)
    assert again.rows_exported == 0 and again.chunks_exported == 0
    assert len(publisher.calls) == calls
    assert all(b.status == "idle" and b.files == 0 for b in again.backends)


def test_rows_at_the_watermark_instant_are_picked_up(miner_db, spool, publisher, hotkey):
    first = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    add_rows(miner_db.path, 30, seed=42, at=first.watermark.datetime)
    second = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    assert second.rows_exported == 30
    _assert_once(publisher, "s3", _expected(miner_db))


def test_a_backend_down_for_a_round_catches_up_without_re_export(miner_db, spool, publisher, hotkey):
    publisher.down = {"hf"}
    first = run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey)
    assert first.backend("hf").status == "failed" and "down" in first.backend("hf").error
    assert first.backend("hf").still_owed_files == first.chunks_exported
    assert not first.ok
    assert publisher.stored("hf") == Counter()
    assert spool.used_bytes() == first.bytes_exported  # nothing deleted while hf still owes it
    owed_to_hf = set(publisher.calls[0][1])

    publisher.down = set()
    add_rows(miner_db.path, 50, seed=43, end=DEFAULT_END + timedelta(days=1), days=1)
    second = run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey)
    assert second.rows_exported == 50  # only the new rows: the old chunks were not exported again
    batches = dict(publisher.calls[1:])
    assert batches[("hf",)] and set(batches[("hf",)]) == owed_to_hf  # catch-up batch for hf alone
    assert ("hf", "s3") in batches  # the new chunks go to both
    expected = _expected(miner_db)
    _assert_once(publisher, "s3", expected)
    _assert_once(publisher, "hf", expected)
    assert second.backend("hf").files == len(owed_to_hf) + second.chunks_exported
    assert spool.used_bytes() == 0


def test_a_fallback_keeps_rows_safe_and_the_primary_still_catches_up(miner_db, spool, tmp_path, hotkey):
    inner = LocalPublisher(tmp_path / "backends")
    primary_up = False

    def with_fallback(batch, backends):
        if primary_up:
            return inner(batch, backends)
        outcomes = [UploadOutcome("s3", "failed", error="s3 unreachable")]
        context = BackendContext(backend_id="local", options={"root": str(tmp_path / "backends" / "hf")})
        outcomes.append(UploadOutcome("hf", "ok", receipt=local.storage_upload(context, batch), fallback_for="s3"))
        return tuple(outcomes)

    result = run_upload_round(miner_db.path, spool, ["s3"], with_fallback, miner_hotkey=hotkey)
    assert result.backend("s3").status == "failed"
    assert result.backend("hf").stood_in_for == ("s3",) and result.backend("hf").files == result.chunks_exported
    _assert_once(inner, "hf", _expected(miner_db))
    # Validators look for the rows on s3 (hf may be at 0 %): s3 still owes them, the spool keeps them.
    assert result.backend("s3").still_owed_files == result.chunks_exported
    assert spool.used_bytes() == result.bytes_exported
    primary_up = True
    again = run_upload_round(miner_db.path, spool, ["s3"], with_fallback, miner_hotkey=hotkey)
    assert again.rows_exported == 0 and again.backend("s3").status == "ok"
    assert again.backend("s3").files == result.chunks_exported and spool.used_bytes() == 0
    _assert_once(inner, "s3", _expected(miner_db))


def test_a_receipt_missing_a_chunk_leaves_that_chunk_owed(miner_db, spool, hotkey):
    def partial(batch, backends):
        receipt = UploadReceipt(backend="s3", location="x", objects=())
        return {"s3": UploadOutcome("s3", "ok", receipt=receipt)}

    result = run_upload_round(miner_db.path, spool, ["s3"], partial, miner_hotkey=hotkey)
    assert result.backend("s3").files == 0 and result.backend("s3").still_owed_files == result.chunks_exported
    assert spool.used_bytes() == result.bytes_exported


def test_a_publisher_that_raises_is_a_failed_backend(miner_db, spool, hotkey):
    def broken(batch, backends):
        raise RuntimeError("boom")

    result = run_upload_round(miner_db.path, spool, ["s3"], broken, miner_hotkey=hotkey)
    assert result.backend("s3").status == "failed" and "boom" in result.backend("s3").error
    assert spool.used_bytes() == result.bytes_exported > 0


def test_spool_bound_pauses_the_export_and_never_deletes_owed_chunks(miner_db, tmp_path, publisher, hotkey):
    spool = Spool(tmp_path / "bounded", max_bytes=60_000)
    publisher.down = {"s3"}
    first = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey,
                             options=ExportOptions(page_rows=200))
    assert first.backpressure and 0 < first.rows_exported < 2_000
    held = {path.name for path in spool.chunk_dir.iterdir()}
    assert held and spool.used_bytes() >= 60_000 - 20_000
    second = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    assert second.rows_exported == 0 and second.backpressure  # still down and full: export stays paused
    assert {path.name for path in spool.chunk_dir.iterdir()} == held
    publisher.down = set()
    third = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    assert not third.backpressure and third.exports > 1
    _assert_once(publisher, "s3", _expected(miner_db))
    assert spool.used_bytes() == 0
    spool.close()


def test_leftovers_of_a_crashed_export_are_removed_and_rows_re_exported(miner_db, spool, publisher, hotkey):
    (spool.chunk_dir / ("0" * 64 + ".parquet")).write_bytes(b"half written")
    (spool.chunk_dir / ".partition-dead").mkdir()
    result = run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    assert result.rows_exported == 2_000
    assert not list(spool.chunk_dir.iterdir())
    _assert_once(publisher, "s3", _expected(miner_db))


def test_deselected_backend_no_longer_holds_chunks_back(miner_db, spool, publisher, hotkey):
    publisher.down = {"hf"}
    run_upload_round(miner_db.path, spool, ["s3", "hf"], publisher, miner_hotkey=hotkey)
    assert spool.used_bytes() > 0
    run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)  # rollout moved hf away
    assert spool.used_bytes() == 0


def test_no_backend_selected_exports_nothing_and_releases_nothing(miner_db, spool, publisher, hotkey):
    result = run_upload_round(miner_db.path, spool, [], publisher, miner_hotkey=hotkey)
    assert result.rows_exported == 0 and result.backends == () and publisher.calls == []
    assert spool.watermark() is None
    publisher.down = {"s3"}
    run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
    held = spool.used_bytes()
    run_upload_round(miner_db.path, spool, [], publisher, miner_hotkey=hotkey)
    assert spool.used_bytes() == held > 0  # still owed to s3


def test_one_round_at_a_time(miner_db, spool, publisher, hotkey):
    with spool.locked():
        with pytest.raises(SpoolBusyError, match="in use"):
            run_upload_round(miner_db.path, spool, ["s3"], publisher, miner_hotkey=hotkey)
