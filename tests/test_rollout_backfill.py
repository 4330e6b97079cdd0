"""The README's whole rollout with miners uploading throughout: no claimed URI in the window is ever lost.

One local subnet (dev chain, SeaweedFS behind the grant service, the dev Hub). The owner publishes S3 at
0% -> 5% -> 25% -> 100% with HuggingFace on, then HuggingFace off, under validation policy ``primary``
(S3 first: a miner on S3 is judged by S3 alone). Miners that join S3 at each step keep running (in-process
``MinerStorage``, following the chain config round by round) and scrape new rows before every round.
After every step the validator (``create_validator_storage``, following the chain too) checks every URI
each miner holds in the freshness window: all valid, so a late joiner's older rows reached S3 (the
backfill) before HuggingFace went away; at the end S3 holds each row exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from demo.world import LocalSubnet, Participant
from storage_core.cli.status_cmd import backfill_progress
from storage_core.dispatch import VALID
from storage_core.facades import create_validator_storage
from storage_core.miner import MinerStorage
from storage_core.rollout import rollout_position, threshold
from storage_core.testing.minerdb import DEFAULT_END, add_rows, create_miner_db

pytestmark = pytest.mark.timeout(300)
STEPS = ((0, True), (5, True), (25, True), (100, True), (100, False))  # (S3 %, HuggingFace on)


def _cast(miners: list[Participant]) -> list[Participant]:
    """Up to one miner joining S3 at each of 5%, 25% and 100% (wallets are new each run: positions vary)."""
    chosen: list[Participant] = []
    for low, high in ((0, threshold(5)), (threshold(5), threshold(25)), (threshold(25), 10_000)):
        chosen += [m for m in miners if low <= rollout_position("s3", m.hotkey) < high][:1]
    return chosen


def _window_uris(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return sorted(uri for (uri,) in connection.execute("SELECT uri FROM DataEntity"))
    finally:
        connection.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSubnet]:
    with LocalSubnet(tmp_path_factory.mktemp("rollout"), miners=6) as subnet:
        yield subnet


def test_the_readme_rollout_keeps_every_claim_valid(world: LocalSubnet, tmp_path: Path) -> None:
    assert world.chain is not None and world.validator is not None
    cast = _cast(world.miners)
    late = [m for m in cast if rollout_position("s3", m.hotkey) >= threshold(25)]
    assert late, "no miner joins S3 only at 100%"  # 6 new wallets: ~1 in 4,000 runs
    dbs = {m.hotkey: create_miner_db(tmp_path / f"{m.name}.sqlite", 150, seed=40 + i, days=6).path
           for i, m in enumerate(cast)}
    miners: dict[str, MinerStorage] = {m.hotkey: MinerStorage(world.node(m), dbs[m.hotkey]) for m in cast}
    validator = create_validator_storage(
        world.chain.subtensor(), world.netuid, world.validator.wallet, environ={},
        overrides={"backends": {"huggingface": {"options": {"token": world.hf_tokens[world.validator.hotkey]}}}},
        state_dir=tmp_path / "validator")
    try:
        for step, (percent, hf_on) in enumerate(STEPS):
            world.publish(world.config(percent, hf_enabled=hf_on, policy="primary"))
            for index, miner in enumerate(cast):
                add_rows(dbs[miner.hotkey], 15, seed=900 + 10 * step + index,
                         end=DEFAULT_END + timedelta(hours=step + 1), days=0.03)
                outcome = miners[miner.hotkey].upload_data()
                on_s3 = rollout_position("s3", miner.hotkey) < threshold(percent)
                expected = {"s3"} if on_s3 else set()
                assert set(outcome.selected) == expected | ({"huggingface"} if hf_on else set())
                assert outcome.ok, {b.backend: b.error for b in outcome.result.backends}
                if on_s3:  # a late joiner's backfill completes within its first round at the default bound
                    progress: dict[str, Any] = backfill_progress(miners[miner.hotkey].node.state_dir)
                    assert step == 0 or "s3" not in progress or progress["s3"]["state"] == "complete"
            for miner in cast:
                claims = _window_uris(dbs[miner.hotkey])
                report = validator.validate_miner_data(miner.hotkey, claims, seed="0x5eed")
                bad = {uri: verdict for uri, verdict in report.verdicts.items() if verdict != VALID}
                assert not bad, (f"step {percent}% hf={hf_on}: {len(bad)} of {len(claims)} claims of {miner.name} "
                                 f"not valid on {report.backends}", list(bad.items())[:3])
        for miner in cast:
            stored = world.stored_uris("s3", miner.hotkey)
            assert sorted(stored) == _window_uris(dbs[miner.hotkey]) and set(stored.values()) == {1}
        for miner in late:
            progress = backfill_progress(miners[miner.hotkey].node.state_dir)
            assert progress["s3"]["state"] == "complete" and progress["s3"]["rows_done"] >= 150
    finally:
        for storage in miners.values():
            storage.close()
