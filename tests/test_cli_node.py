"""The node commands end to end on a local subnet: upload, validate, status (exit codes, --json, errors)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from demo.world import LocalSubnet
from storage_core.cli import build_cli
from storage_core.testing.minerdb import create_miner_db


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with LocalSubnet(tmp_path_factory.mktemp("subnet"), miners=2) as subnet:
        subnet.publish(subnet.config(100))
        yield subnet


@pytest.fixture(scope="module")
def miner_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "miner0.sqlite"
    create_miner_db(path, 3_000, seed=5, days=3)
    return path


def invoke(world: LocalSubnet, who: str, *args: str, state: Path | None = None, netuid: int | None = None
           ) -> tuple[int, str]:
    flags = world.node_flags(who, state, netuid)
    participant = next(p for p in [*world.miners, world.validator] if p.name == who)
    env = {"HF_TOKEN": world.hf_tokens[participant.hotkey]}
    result = CliRunner().invoke(build_cli(), [*args, *flags], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_upload_then_nothing_new(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    code, output = invoke(world, "miner0", "upload", "--db", str(miner_db), "--json", state=tmp_path)
    assert code == 0, output
    first = json.loads(output)
    assert first["rows_exported"] == 3_000 and first["selected"] == ["s3", "huggingface"]
    assert {b["backend"]: b["status"] for b in first["backends"]} == {"s3": "ok", "huggingface": "ok"}
    assert all(t["rows"] == 3_000 for t in first["tallies"])
    assert set(first["manifests"]) == {"s3", "huggingface"}  # a signed round manifest on each backend
    assert all(note.startswith("round ") and " stored (" in note for note in first["manifests"].values()), \
        first["manifests"]
    code, output = invoke(world, "miner0", "upload", "--db", str(miner_db), "--json", state=tmp_path)
    second = json.loads(output)
    assert code == 0 and second["rows_exported"] == 0 and second["tallies"] == []
    assert second["manifests"] == {}  # nothing new stored: no new manifest

    code, output = invoke(world, "miner0", "status", "--json", state=tmp_path)
    status = json.loads(output)
    assert code == 0 and status["hotkey"] == world.miners[0].hotkey
    assert status["config"]["backends.s3.rollout_percent"] == {"value": 100, "source": "chain"}
    assert {s["backend"]: s["selected"] for s in status["selection"]} == {"s3": True, "huggingface": True}
    assert status["last_upload"]["s3"]["status"] == "ok" and status["last_upload"]["s3"]["rows"] == 3_000
    assert status["spool"] == {}  # everything acknowledged by every backend


def test_upload_table_for_people(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    code, output = invoke(world, "miner0", "upload", "--db", str(miner_db), state=tmp_path)
    assert code == 0, output
    assert "backend" in output and "outcome" in output and "huggingface" in output


def test_validate_verdicts_and_exit_codes(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    invoke(world, "miner0", "upload", "--db", str(miner_db), "--json", state=tmp_path / "miner")
    miner = world.miners[0].hotkey
    code, output = invoke(world, "validator", "validate", "--miner", miner, "--sample", "15", "--db", str(miner_db),
                          "--json", state=tmp_path / "validator")
    report = json.loads(output)
    assert code == 0, output
    assert report["counts"] == {"valid": 15, "invalid": 0, "unknown": 0}
    assert {o["backend"] for o in report["outcomes"]} == {"s3", "huggingface"}
    claims = tmp_path / "claims.txt"
    real = [row[0] for row in sqlite3.connect(miner_db).execute("SELECT uri FROM DataEntity LIMIT 3")]
    claims.write_text("\n".join(real + ["https://x.com/never/status/1"]))
    code, output = invoke(world, "validator", "validate", "--miner", miner, "--uris", str(claims),
                          state=tmp_path / "validator")
    assert code == 1, output
    assert "verdict" in output
    other = world.miners[1].hotkey  # miner1 never uploaded these
    code, output = invoke(world, "validator", "validate", "--miner", other, "--uris", str(claims), "--json",
                          state=tmp_path / "validator")
    assert code == 1 and json.loads(output)["counts"]["valid"] == 0


def test_errors_name_the_problem(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    code, output = invoke(world, "miner0", "upload", "--db", str(tmp_path / "nope.sqlite"), state=tmp_path)
    assert code == 2 and "nope.sqlite does not exist" in output
    old = tmp_path / "old.sqlite"  # the same bad database gives the same exit code in `export` and `upload`
    sqlite3.connect(old).execute("CREATE TABLE DataEntity (uri TEXT)").connection.close()
    code, output = invoke(world, "miner0", "upload", "--db", str(old), state=tmp_path / "old-state")
    exported = CliRunner().invoke(build_cli(), ["export", "--db", str(old), "--out", str(tmp_path / "o")])
    assert code == exported.exit_code == 2 and "has no column" in output, (output, exported.output)
    runner = CliRunner()
    result = runner.invoke(build_cli(), ["upload", "--db", str(miner_db), "--netuid", "13", "--subtensor.network",
                                         f"devchain:{world.chain_path}", "--wallet.name", "ghost",
                                         "--wallet.path", str(tmp_path / "wallets")])
    assert result.exit_code != 0 and "cannot open wallet 'ghost'" in str(result.exception or result.output)
    # subnet 77 does not exist on this chain, so nobody published a config for it
    code, output = invoke(world, "miner0", "upload", "--db", str(miner_db), state=tmp_path, netuid=77)
    assert code == 1 and "subnet 77 has no storage config" in output
    code, output = invoke(world, "miner0", "status", state=tmp_path, netuid=77)
    assert code == 1 and "subnet 77 has no storage config" in output
    code, output = invoke(world, "validator", "validate", "--miner", "not-a-hotkey", "--sample", "3", "--db",
                          str(miner_db), state=tmp_path)
    assert code == 2 and "not an ss58 hotkey" in output
    code, output = invoke(world, "validator", "validate", "--miner", world.miners[0].hotkey, state=tmp_path)
    assert code == 2 and "exactly one of --uris FILE or --sample N" in output


def test_usage_survey_lists_every_miner(world: LocalSubnet, miner_db: Path, tmp_path: Path) -> None:
    """storage_usage on S3 and HF through the usage command: miner0 uploaded, miner1 did not."""
    invoke(world, "miner0", "upload", "--db", str(miner_db), "--json", state=tmp_path / "miner")
    code, output = invoke(world, "validator", "usage", "--json", state=tmp_path / "validator")
    assert code == 0, output
    survey = json.loads(output)
    assert survey["miners"] == 2
    shares = {b["backend"]: (b["miners_holding"], b["miners_expected"]) for b in survey["backends"]}
    assert shares == {"s3": (1, 2), "huggingface": (1, 2)}
    held = survey["holders"][world.miners[0].hotkey]
    assert held["s3"]["objects"] > 0 and held["s3"]["bytes"] == held["huggingface"]["bytes"]
    assert survey["holders"][world.miners[1].hotkey]["s3"] == {"objects": 0, "bytes": 0}
