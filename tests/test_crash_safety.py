"""Crash safety: SIGKILL the real `storage-core upload` at random points, restart, lose nothing, store nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.world import LocalSubnet
from storage_core.testing.minerdb import create_miner_db

KILLS = 12


@pytest.mark.slow
def test_killed_rounds_store_every_row_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "miner.sqlite"
    create_miner_db(db, 20_000, seed=42, days=6)
    expected = {row[0] for row in sqlite3.connect(db).execute("SELECT uri FROM DataEntity")}
    with LocalSubnet(tmp_path / "subnet", miners=2) as world:
        world.publish(world.config(100))
        miner, prober = world.miners

        def upload(who, state: Path) -> list[str]:
            return [sys.executable, "-m", "storage_core", "upload", "--db", str(db), "--json",
                    "--netuid", str(world.netuid), "--subtensor.network", f"devchain:{world.chain_path}",
                    "--wallet.name", who.name, "--wallet.hotkey", "default",
                    "--wallet.path", str(world.root / "wallets"), "--state-dir", str(state)]

        def env_of(who) -> dict[str, str]:
            return {**os.environ, "HF_TOKEN": world.hf_tokens[who.hotkey], "HF_HUB_DISABLE_XET": "1"}

        # How long does a whole round take here? Another miner (its own prefix and repo) measures it, so the
        # miner under test starts from empty storage. Kill points are drawn across that span: start-up, export,
        # grants, uploads, ledger writes.
        started = time.monotonic()
        probe = subprocess.run(upload(prober, tmp_path / "probe"), env=env_of(prober), capture_output=True, text=True)
        duration = time.monotonic() - started
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert world.stored_uris("s3", miner.hotkey) == {}
        command, env = upload(miner, tmp_path / "state"), env_of(miner)
        rng = random.Random(7)
        from storage_core.layout import miner_prefix

        def stored_objects() -> int:
            return len(world.seaweed.list_keys(world.bucket_name, miner_prefix(miner.hotkey)))

        kills = {"random time": 0, "mid-upload": 0}
        for attempt in range(KILLS):
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if attempt % 2 == 0:  # anywhere: start-up, export, grants, uploads, ledger writes
                time.sleep(rng.uniform(0.1, 0.9) * duration)
                mode = "random time"
            else:  # the moment a new object lands: uploaded, not yet recorded in the ledger
                before = stored_objects()
                while process.poll() is None and stored_objects() == before:
                    time.sleep(0.02)
                mode = "mid-upload"
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills[mode] += 1
            process.communicate()
        assert kills["mid-upload"] >= 1, f"no kill landed between an upload and its ledger write: {kills}"

        final = subprocess.run(command, env=env, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr[-2000:]
        result = json.loads(final.stdout)
        assert all(backend["still_owed_files"] == 0 for backend in result["backends"])

        for backend in ("s3", "huggingface"):
            stored = world.stored_uris(backend, miner.hotkey)
            assert set(stored) == expected, f"{backend}: {len(expected - set(stored))} rows missing"
            duplicated = [uri for uri, count in stored.items() if count > 1]
            assert not duplicated, f"{backend}: {len(duplicated)} rows stored twice, e.g. {duplicated[:3]}"
