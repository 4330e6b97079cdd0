"""The ledger: an export's chunks and the watermark commit together; acknowledgements release chunks."""

from __future__ import annotations

import pytest

from storage_core.export.decode import SkippedRow
from storage_core.export.ledger import Ledger
from storage_core.export.watermark import Watermark
from storage_core.testing.data import make_batch


@pytest.fixture
def staged(tmp_path, miner_keys):
    return make_batch(tmp_path / "chunks", miner_keys[0].ss58_address, rows=30, chunks=3).files


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite", tmp_path / "chunks")
    yield ledger
    ledger.close()


def test_export_and_watermark_are_recorded_together(ledger, staged):
    mark = Watermark("2026-11-03 00:00:00+00:00", ("https://x.com/a", "https://x.com/b"))
    ledger.record_export(staged, ["s3", "hf"], mark, [SkippedRow("u1", "bad json")], round_id="r1")
    assert ledger.watermark() == mark
    assert [f.sha256 for f in ledger.chunks()] == sorted(f.sha256 for f in staged)
    assert ledger.staged(staged[0].sha256) == staged[0]
    assert ledger.pending() == {f.sha256: frozenset({"s3", "hf"}) for f in staged}
    assert ledger.skipped() == [SkippedRow("u1", "bad json")]


def test_a_failed_record_changes_nothing(ledger, staged):
    def broken():
        yield staged[0]
        raise OSError("disk full")

    with pytest.raises(OSError):
        ledger.record_export(broken(), ["s3"], Watermark("2026-11-03 00:00:00+00:00"))
    assert ledger.watermark() is None and ledger.chunks() == [] and ledger.pending() == {}


def test_a_chunk_completes_when_every_backend_or_its_fallback_acknowledged(ledger, staged):
    ledger.record_export(staged, ["s3", "hf"], Watermark("2026-11-03 00:00:00+00:00"))
    first = staged[0].sha256
    assert ledger.acknowledge([first], "s3") == 1
    assert ledger.completed() == []
    assert ledger.acknowledge([first], "hf", via="r2") == 1
    assert [f.sha256 for f in ledger.completed()] == [first]
    assert {t.backend: t.acked_via for t in ledger.targets(first)} == {"s3": "s3", "hf": "r2"}
    assert ledger.acknowledge([first], "hf") == 0  # already acknowledged: idempotent
    ledger.forget(first)
    assert first not in {f.sha256 for f in ledger.chunks()}
    assert ledger.spooled_bytes() == sum(f.size_bytes for f in staged[1:])


def test_retiring_a_deselected_backend(ledger, staged):
    ledger.record_export(staged, ["s3", "hf"], None)
    ledger.acknowledge([f.sha256 for f in staged], "s3")
    assert ledger.retire(["s3"]) == {"hf": 3}
    assert len(ledger.completed()) == 3


def test_the_ledger_survives_reopening(tmp_path, staged):
    ledger = Ledger(tmp_path / "ledger.sqlite", tmp_path / "chunks")
    ledger.record_export(staged, ["s3"], Watermark("2026-11-03 00:00:00+00:00", ("u",)))
    ledger.close()
    again = Ledger(tmp_path / "ledger.sqlite", tmp_path / "chunks")
    assert again.watermark() == Watermark("2026-11-03 00:00:00+00:00", ("u",))
    assert len(again.pending()) == 3
    again.close()
