"""Fault injection on a whole local subnet: a FaultProxy between the S3 uploader/checker and SeaweedFS,
the grant service or the dev Hub. Real rounds (export, spool, ledger, dispatcher, both plugins) run
through it; what is really stored is read back from the bucket and the Hub afterwards.

One LocalSubnet serves the module; each test uses its own miner (its own prefix and repo) and changes
the published config only through node-local overrides, so the tests do not see each other's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import ensure_on_s3, grants_presigning_for, miner_db, overrides, port_of, proxied

from demo.world import LocalSubnet
from storage_core.layout import miner_prefix
from storage_core.miner import MinerStorage
from storage_core.testing.faultproxy import FaultProxy
from storage_core.validator import ValidatorStorage

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSubnet]:
    with LocalSubnet(tmp_path_factory.mktemp("faults"), miners=5) as subnet:
        subnet.publish(subnet.config(100))
        yield subnet


def assert_exactly_once(world: LocalSubnet, backend: str, hotkey: str, expected: set[str]) -> None:
    stored = world.stored_uris(backend, hotkey)
    missing = expected - set(stored)
    assert not missing, f"{backend}: {len(missing)} of {len(expected)} rows lost"
    assert set(stored) == expected, f"{backend}: holds rows the DB never had"
    twice = {uri: count for uri, count in stored.items() if count != 1}
    assert not twice, f"{backend}: {len(twice)} rows stored more than once"


def test_flaky_s3_data_path_loses_nothing_and_stores_nothing_twice(world: LocalSubnet, tmp_path: Path) -> None:
    """Responses dropped after S3 stored the body, then a round of 503s: every row ends up stored once."""
    miner = world.miners[0]
    db, expected = miner_db(tmp_path / "miner.sqlite", 3000, seed=11, days=3)
    assert world.seaweed is not None
    with proxied(world.seaweed.endpoint_url) as s3_proxy, grants_presigning_for(world, s3_proxy.url) as flaky:
        node = world.node(miner, overrides=overrides(world, miner, s3={"grant_url": flaky.url, "max_attempts": 3}))
        storage = MinerStorage(node, db)
        try:
            # Round 1: the first uploads are stored by S3 but their answers never reach the miner (the
            # connection drops before the first response byte) and one more answers 500. The retries find
            # the objects (content-addressed keys) or send them again; the round completes.
            s3_proxy.fail_next(3, "drop", drop_after=0)
            first = storage.upload_data()
            assert s3_proxy.connections >= 4
            assert first.result.backend("s3").status == "ok", first.result.backends
            assert first.result.backend("s3").still_owed_files == 0
            assert_exactly_once(world, "s3", miner.hotkey, expected)

            # Round 2 over new rows: S3 answers 503 to everything. HF (also selected) stores the new chunks;
            # they stay owed to S3.
            db, everything = miner_db(tmp_path / "miner.sqlite", 1500, seed=12, days=1, later_days=1)
            more = everything - expected
            assert len(more) == 1500
            expected = everything
            s3_proxy.set_mode("error", error_status=503)
            second = storage.upload_data()
            assert second.result.backend("s3").status == "failed"
            assert second.result.backend("s3").still_owed_files > 0
            assert second.result.backend("huggingface").status == "ok"
            assert_exactly_once(world, "huggingface", miner.hotkey, expected)

            # Round 3: S3 is back and catches up; nothing was lost and nothing is stored twice.
            s3_proxy.set_mode("pass")
            third = storage.upload_data()
            assert third.result.backend("s3").status == "ok" and third.result.backend("s3").still_owed_files == 0
            assert_exactly_once(world, "s3", miner.hotkey, expected)
        finally:
            storage.close()


def test_stalled_backend_times_out_without_holding_back_the_other(world: LocalSubnet, tmp_path: Path) -> None:
    miner = world.miners[1]
    db, expected = miner_db(tmp_path / "miner.sqlite", 2000, seed=21, days=2)
    assert world.grants is not None
    with proxied(world.grants.url) as grant_proxy:
        grant_proxy.set_mode("stall")  # accepts connections, never answers
        node = world.node(miner, overrides=overrides(world, miner, s3={"grant_url": grant_proxy.url}), timeout_s=3)
        storage = MinerStorage(node, db)
        try:
            stalled = storage.upload_data()
            s3 = stalled.result.backend("s3")
            assert s3.status == "timeout", stalled.result.backends
            assert s3.still_owed_files > 0  # the stalled backend's chunks stay owed in the spool
            assert stalled.result.backend("huggingface").status == "ok"
            assert_exactly_once(world, "huggingface", miner.hotkey, expected)
            assert world.seaweed is not None and world.seaweed.list_keys(world.bucket_name, miner_prefix(miner.hotkey)) == []

            grant_proxy.set_mode("pass")
            caught_up = storage.upload_data()
            assert caught_up.result.backend("s3").status == "ok"
            assert caught_up.result.backend("s3").still_owed_files == 0
            assert_exactly_once(world, "s3", miner.hotkey, expected)
        finally:
            storage.close()


def _primary_down_round(world: LocalSubnet, tmp_path: Path, miner_index: int, seed: int):
    """HF at 0 %, S3 at 100 %, fallback s3 -> huggingface, S3 refused all round. Yields (storage, proxy, rows)."""
    miner = world.miners[miner_index]
    db, expected = miner_db(tmp_path / "miner.sqlite", 2000, seed=seed, days=2)
    assert world.grants is not None
    proxy = FaultProxy("127.0.0.1", port_of(world.grants.url)).start()
    proxy.set_mode("refuse")
    node = world.node(miner, overrides=overrides(world, miner, s3={"grant_url": proxy.url},
                                                 s3_percent=100, hf_percent=0))
    return miner, MinerStorage(node, db), proxy, expected


def test_fallback_takes_over_when_the_primary_is_down_for_the_whole_round(world: LocalSubnet, tmp_path: Path) -> None:
    miner, storage, grant_proxy, expected = _primary_down_round(world, tmp_path, 2, seed=31)
    try:
        assert storage.uses("s3") and not storage.uses("huggingface")
        down = storage.upload_data()
        assert down.selected == ("s3",)
        assert down.result.backend("s3").status == "failed"
        hf = down.tally("huggingface")
        assert hf.fallback_for == ("s3",) and hf.rows == len(expected)
        assert_exactly_once(world, "huggingface", miner.hotkey, expected)
        assert world.stored_uris("s3", miner.hotkey) == {}
        # Validators (same rollout: S3 100 %, HF 0 %) find the rows on the fallback: valid, not invalid.
        validator = world.validator
        assert validator is not None
        checker = ValidatorStorage(world.node(validator, overrides=overrides(world, validator, s3_percent=100,
                                                                            hf_percent=0)))
        asked = sorted(expected)[:25]
        report = checker.validate_miner_data(miner.hotkey, asked)
        assert report.backends == ("s3",)
        assert {report.verdicts[uri] for uri in asked} == {"valid"}, report.verdicts
    finally:
        storage.close()
        grant_proxy.stop()


def test_primary_catches_up_after_a_fallback_round(world: LocalSubnet, tmp_path: Path) -> None:
    """The fallback's copy does not release the primary's: S3's chunks stay owed and go to S3 once it is back."""
    miner, storage, grant_proxy, expected = _primary_down_round(world, tmp_path, 4, seed=51)
    try:
        down = storage.upload_data()
        assert down.tally("huggingface").fallback_for == ("s3",)
        assert down.result.backend("s3").still_owed_files > 0, "the fallback released S3's chunks"
        grant_proxy.set_mode("pass")
        back = storage.upload_data()
        assert back.result.backend("s3").status == "ok" and back.result.backend("s3").still_owed_files == 0
        assert back.tally("huggingface").batches == 0  # no fallback needed any more
        assert_exactly_once(world, "s3", miner.hotkey, expected)
    finally:
        storage.close()
        grant_proxy.stop()


@pytest.mark.parametrize("fault", ["refuse", "error"])
def test_checker_answers_unknown_not_invalid_when_its_backend_is_down(world: LocalSubnet, tmp_path: Path,
                                                                      fault: str) -> None:
    miner = world.miners[3]
    db, expected = miner_db(tmp_path / "miner.sqlite", 500, seed=41, days=1)
    ensure_on_s3(world, miner, db)
    asked = sorted(expected)[:20] + ["https://x.com/nobody/status/1"]
    validator = world.validator
    assert validator is not None and world.grants is not None and world.hub is not None

    honest = ValidatorStorage(world.node(validator, overrides=overrides(world, validator, hf_enabled=False)))
    report = honest.validate_miner_data(miner.hotkey, asked)
    assert report.backends == ("s3",)
    assert [report.verdicts[uri] for uri in asked] == ["valid"] * 20 + ["invalid"]

    with proxied(world.grants.url) as grant_proxy:
        grant_proxy.set_mode(fault, error_status=503)
        checker = ValidatorStorage(world.node(validator, overrides=overrides(
            world, validator, s3={"grant_url": grant_proxy.url, "max_attempts": 2}, hf_enabled=False)))
        down = checker.validate_miner_data(miner.hotkey, asked)
    (outcome,) = down.outcomes
    assert outcome.backend == "s3" and outcome.status == "failed" and outcome.error
    assert set(down.verdicts.values()) == {"unknown"}, down.verdicts

    # Both backends eligible, the Hub down too: still "could not validate", never "invalid".
    with proxied(world.grants.url) as grant_proxy, proxied(world.hub.url) as hub_proxy:
        grant_proxy.set_mode(fault, error_status=503)
        hub_proxy.set_mode(fault, error_status=503)
        both = ValidatorStorage(world.node(validator, overrides=overrides(
            world, validator, s3={"grant_url": grant_proxy.url, "max_attempts": 2},
            hf={"endpoint": hub_proxy.url, "max_attempts": 2})))
        report = both.validate_miner_data(miner.hotkey, asked)
    assert set(report.backends) == {"s3", "huggingface"}
    assert all(not outcome.ok for outcome in report.outcomes)
    assert set(report.verdicts.values()) == {"unknown"}, report.verdicts


def test_checker_reads_through_connections_dropped_mid_body(world: LocalSubnet, tmp_path: Path) -> None:
    """Range reads cut off mid-body are retried: the answer is the same as without faults, with no problem
    blamed on the miner; a store that always cuts reads off gives "unknown", never "invalid"."""
    miner = world.miners[3]
    db, expected = miner_db(tmp_path / "miner.sqlite", 500, seed=41, days=1)
    ensure_on_s3(world, miner, db)
    asked = sorted(expected)[:20] + ["https://x.com/nobody/status/1"]
    validator = world.validator
    assert validator is not None and world.seaweed is not None
    with proxied(world.seaweed.endpoint_url) as s3_proxy, grants_presigning_for(world, s3_proxy.url) as grants:
        checker = ValidatorStorage(world.node(validator, overrides=overrides(
            world, validator, s3={"grant_url": grants.url, "max_attempts": 4}, hf_enabled=False)))
        s3_proxy.fail_next(3, "drop", drop_after=300)  # listing and footer reads cut after 300 bytes
        report = checker.validate_miner_data(miner.hotkey, asked)
        assert s3_proxy.connections > 3
        (outcome,) = report.outcomes
        assert outcome.ok and outcome.result.problems == (), outcome
        assert [report.verdicts[uri] for uri in asked] == ["valid"] * 20 + ["invalid"]

        s3_proxy.set_mode("drop", drop_after=300)
        report = checker.validate_miner_data(miner.hotkey, asked)
        (outcome,) = report.outcomes
        assert outcome.status == "failed"
        assert set(report.verdicts.values()) == {"unknown"}, report.verdicts
