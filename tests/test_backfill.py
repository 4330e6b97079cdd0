"""Backfill: a backend selected later gets the window's older rows, bounded per round, once, crash-safely."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from local_publisher import LocalPublisher
from storage_core.chain.keys import create_wallet
from storage_core.cli import build_cli
from storage_core.export.backfill import BackfillOptions, export_backfill_pass, start_backfills
from storage_core.export.round import run_upload_round
from storage_core.export.spool import Spool
from storage_core.testing.devchain import DevChain
from storage_core.testing.minerdb import DEFAULT_END, add_rows, create_miner_db, time_bucket_id

BIG = BackfillOptions(max_rows=10**9, max_bytes=2**40)


@pytest.fixture
def hotkey(miner_keys):
    return miner_keys[0].ss58_address


@pytest.fixture
def db(tmp_path) -> Path:
    return create_miner_db(tmp_path / "miner.sqlite", 1_500, seed=61, days=20).path


@pytest.fixture
def backends(tmp_path) -> LocalPublisher:
    return LocalPublisher(tmp_path / "stores")


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "state" / "spool")
    yield spool
    spool.close()


def uris(db: Path, since: datetime | None = None) -> set[str]:
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute("SELECT uri, timeBucketId FROM DataEntity").fetchall()
    finally:
        connection.close()
    first = time_bucket_id(since) if since else -1
    return {uri for uri, bucket in rows if bucket >= first}


def assert_once(backends: LocalPublisher, backend: str, expected: set[str]) -> None:
    counts = backends.stored(backend)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [uri for uri, n in counts.items() if n > 1][:3]


def round_(db, spool, selected, backends, hotkey, backfill=BIG, **kwargs):
    return run_upload_round(db, spool, selected, backends, miner_hotkey=hotkey, backfill=backfill, **kwargs)


def test_a_backend_selected_later_gets_every_older_row_once(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    add_rows(db, 40, seed=62, end=DEFAULT_END + timedelta(hours=12), days=0.4)
    second = round_(db, spool, ["a", "b"], backends, hotkey)
    assert_once(backends, "a", uris(db))
    assert_once(backends, "b", uris(db))
    (entry,) = second.backfill
    assert entry.backend == "b" and entry.state == "complete" and entry.rows == entry.rows_total == 1_500
    assert second.backend("b").still_owed_files == 0 and spool.used_bytes() == 0
    calls = len(backends.row_calls)
    third = round_(db, spool, ["a", "b"], backends, hotkey)
    assert len(backends.row_calls) == calls and third.rows_exported == 0  # nothing is sent again
    assert third.backfill[0].rows == 0 and third.backfill[0].state == "complete"


def test_a_backend_selected_from_the_first_round_is_exported_once(db, spool, backends, hotkey):
    first = round_(db, spool, ["a", "b"], backends, hotkey)
    assert first.exports == 1 and first.rows_exported == 1_500
    assert [call[0] for call in backends.row_calls] == [("a", "b")]  # one batch, both backends
    assert spool.ledger.backfills() == [] and first.backfill == ()
    add_rows(db, 20, seed=63, end=DEFAULT_END + timedelta(hours=6), days=0.2)
    second = round_(db, spool, ["a", "b"], backends, hotkey)
    assert second.rows_exported == 20 and spool.ledger.backfills() == []
    for backend in ("a", "b"):
        assert_once(backends, backend, uris(db))


def test_backfill_is_bounded_per_round_and_new_rows_go_first(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    bound = BackfillOptions(max_rows=400)
    rounds = 0
    while True:
        add_rows(db, 25, seed=70 + rounds, end=DEFAULT_END + timedelta(hours=1 + rounds), days=0.02)
        start = len(backends.row_calls)
        result = round_(db, spool, ["a", "b"], backends, hotkey, backfill=bound)
        rounds += 1
        calls = backends.row_calls[start:]
        # the round's new rows went to both backends before any backfill batch
        assert calls[0] == (("a", "b"), 25) and result.rows_exported == 25
        assert all(names == ("b",) for names, _rows in calls[1:])
        assert sum(rows for _names, rows in calls[1:]) <= 400
        (entry,) = result.backfill
        assert entry.rows <= 400
        if entry.state == "complete":
            break
        assert entry.rows == 400
        assert rounds < 10
    assert rounds == 4  # 1,500 rows at 400 a round
    assert_once(backends, "a", uris(db))
    assert_once(backends, "b", uris(db))


def test_the_byte_bound_holds_too(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    bound = 120_000
    sent: list[int] = []
    while True:
        result = round_(db, spool, ["a", "b"], backends, hotkey, backfill=BackfillOptions(max_bytes=bound))
        sent.append(result.backfill[0].bytes)
        if result.backfill[0].state == "complete":
            break
        assert len(sent) < 40
    assert len(sent) >= 3  # the backfill took several rounds
    # sized from the bytes per row the backfill measured: within one small pass of the bound
    assert max(sent) <= bound * 1.25, sent
    assert_once(backends, "b", uris(db))


def test_a_crash_anywhere_in_a_backfill_loses_and_duplicates_nothing(db, tmp_path, backends, hotkey):
    directory = tmp_path / "state" / "spool"
    spool = Spool(directory)
    round_(db, spool, ["a"], backends, hotkey)
    started = start_backfills(spool.ledger, ("a", "b"), 30)
    assert [record.backend for record in started] == ["b"] and started[0].rows_total == 1_500
    # crash 1: a pass wrote its chunks, the process died before the ledger recorded them
    lost = export_backfill_pass(db, spool.chunk_dir, spool.ledger, "b", 500, 30)
    assert lost.files and all(f.path.is_file() for f in lost.files)
    spool.close()
    # crash 2: the next pass was committed (cursor moved), the process died before publishing it
    spool = Spool(directory)
    assert spool.recover() and spool.ledger.backfill("b").rows_done == 0
    committed = export_backfill_pass(db, spool.chunk_dir, spool.ledger, "b", 500, 30)
    record = spool.commit_backfill(committed)
    assert record.rows_done == 500 and record.state == "running"
    spool.close()
    assert not backends.stored("b")
    # the next rounds resume from the cursor: the committed chunks are sent, then the rest
    spool = Spool(directory)
    try:
        result = round_(db, spool, ["a", "b"], backends, hotkey, backfill=BackfillOptions(max_rows=600))
        # the committed pass is sent first, then at most 600 more rows, none of them the committed ones
        assert result.backfill[0].rows == 600 and spool.ledger.backfill("b").rows_done == 1_100
        assert sum(backends.stored("b").values()) == 1_100
        while spool.ledger.backfill("b").state != "complete":
            round_(db, spool, ["a", "b"], backends, hotkey, backfill=BackfillOptions(max_rows=600))
    finally:
        spool.close()
    assert_once(backends, "b", uris(db))


def test_a_failing_backend_gets_no_more_backfill_until_it_is_back(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    backends.down.add("b")
    bound = BackfillOptions(max_rows=300)
    for _ in range(3):
        result = round_(db, spool, ["a", "b"], backends, hotkey, backfill=bound)
        assert result.backend("b").status == "failed"
    # one pass was exported before b failed; the spool holds no more than that
    assert spool.ledger.backfill("b").rows_done == 300
    backends.down.clear()
    while round_(db, spool, ["a", "b"], backends, hotkey, backfill=bound).backfill[0].state != "complete":
        pass
    assert_once(backends, "b", uris(db))


def test_late_rows_during_a_backfill_reach_the_backend_once(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    bound = BackfillOptions(max_rows=300)
    round_(db, spool, ["a", "b"], backends, hotkey, backfill=bound)
    # late-scraped older posts, behind the watermark, in hours the backfill has and has not reached yet
    add_rows(db, 60, seed=90, end=DEFAULT_END - timedelta(days=1), days=18)
    while round_(db, spool, ["a", "b"], backends, hotkey, backfill=bound).backfill[0].state != "complete":
        pass
    assert_once(backends, "a", uris(db))
    assert_once(backends, "b", uris(db))


def test_only_the_freshness_window_is_backfilled(db, spool, backends, hotkey):
    round_(db, spool, ["a"], backends, hotkey)
    window = BackfillOptions(freshness_days=10, max_rows=10**9, max_bytes=2**40)
    result = round_(db, spool, ["a", "b"], backends, hotkey, backfill=window)
    expected = uris(db, datetime.now(UTC) - timedelta(days=10))
    assert 0 < len(expected) < 1_500 and result.backfill[0].state == "complete"
    assert_once(backends, "b", expected)


def test_an_older_ledger_is_taken_as_holding_the_history(db, spool, backends, hotkey):
    """A ledger from before backfills: nobody recorded who was owed what, so no backend is backfilled."""
    round_(db, spool, ["a", "b"], backends, hotkey, backfill=None)
    path = spool.ledger.path
    spool.close()
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE owed_backends")  # as written before this table existed
    connection.commit()
    connection.close()
    again = Spool(path.parent)
    try:
        assert round_(db, again, ["a", "b", "c"], backends, hotkey).backfill == ()
        assert again.ledger.owed_backends() >= {"a", "b", "c"}
    finally:
        again.close()


def test_status_json_shows_backfill_progress(db, tmp_path, backends, hotkey):
    chain = DevChain.create(tmp_path / "chain.json")
    wallet = create_wallet("miner", "default", tmp_path / "wallets")
    chain.create_subnet(13, wallet.hotkey.ss58_address)
    state = tmp_path / "state"
    spool = Spool(state / "spool")
    try:
        round_(db, spool, ["a"], backends, hotkey)
        round_(db, spool, ["a", "b"], backends, hotkey, backfill=BackfillOptions(max_rows=500))
    finally:
        spool.close()
    env = {key: None for key in os.environ if key.startswith("STORAGE_CORE_")}
    env.update(STORAGE_CORE_LOCAL_ENABLED="true", STORAGE_CORE_LOCAL_ROLLOUT="100", COLUMNS="160")
    flags = ["--netuid", "13", "--subtensor.network", f"devchain:{chain.path}", "--wallet.name", "miner",
             "--wallet.hotkey", "default", "--wallet.path", str(tmp_path / "wallets"), "--state-dir", str(state)]
    run = CliRunner().invoke(build_cli(), ["status", "--json", *flags], env=env, catch_exceptions=False)
    assert run.exit_code == 0, run.output
    progress = json.loads(run.output)["backfill"]
    assert set(progress) == {"b"}
    assert progress["b"]["state"] == "running"
    assert (progress["b"]["rows_done"], progress["b"]["rows_total"]) == (500, 1_500)
    people = CliRunner().invoke(build_cli(), ["status", *flags], env=env, catch_exceptions=False)
    assert "500 / 1,500" in people.output and "running (33%)" in people.output


def test_backfill_batches_go_through_their_own_publisher(db, spool, backends, hotkey):
    """The miner gives backfill batches a publisher without fallback (a fallback holds those rows already)."""
    round_(db, spool, ["a"], backends, hotkey)
    add_rows(db, 10, seed=64, end=DEFAULT_END + timedelta(hours=3), days=0.05)
    backfill_calls: list[tuple[str, ...]] = []

    def publish_backfill(batch, names):
        backfill_calls.append(tuple(names))
        return backends(batch, names)

    start = len(backends.row_calls)
    result = round_(db, spool, ["a", "b"], backends, hotkey, publish_backfill=publish_backfill)
    assert backfill_calls and set(backfill_calls) == {("b",)}
    # the publisher for new rows saw the new rows only: one batch to both backends, and the backfill ones
    assert [names for names, _rows in backends.row_calls[start:]] == [("a", "b")] + backfill_calls
    assert result.backfill[0].state == "complete"
    assert_once(backends, "b", uris(db))
