"""Planted dishonest miners, checked the way validators check: every cheat caught on every backend.

One local subnet (dev chain, SeaweedFS behind the grant service, the dev Hub, and ``local``) with one
miner per cheat. Each miner first uploads honest rows through the real node (so its repo, manifest and
prefix exist), then stores one dishonest file straight into each backend, as a miner can. The
validator follows the chain config (all three backends, policy ``all``) through
``create_validator_storage`` and through ``storage-core validate``: every dishonest miner's claims are
invalid (exit 1) on every backend, every honest miner valid (exit 0), and a backend that is down makes
claims "could not validate" (exit 3), never invalid.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, HfApi

from demo.world import HF_PREFIX, LocalSubnet, Participant
from storage_core.cli import build_cli
from storage_core.config import parse_config
from storage_core.dispatch import INVALID, UNKNOWN, VALID
from storage_core.facades import create_validator_storage
from storage_core.miner import MinerStorage
from storage_core.testing import cheats
from storage_core.testing.data import make_table, recent_day
from storage_core.testing.manifests import signed_manifest
from storage_core.testing.minerdb import create_miner_db
from storage_core_huggingface.identity import repo_id_for
from storage_core_huggingface.testing.hub_server import start_hub

pytestmark = pytest.mark.timeout(600)
BACKENDS = ("s3", "huggingface", "local")
SEED = "0x5eed"  # as a validator would pass a block hash

Cheat = Callable[[str, Any], cheats.Planted]
CHEATS: dict[str, Cheat] = {
    "uri shells": cheats.uri_shells,
    "inflated content_size_bytes": cheats.inflated_sizes,
    "tampered datetimes": lambda hotkey, table: cheats.shifted_datetimes(hotkey, table, 1),
    "corrupt content pages": cheats.corrupt_content_pages,
    "damaged object": lambda hotkey, table: cheats.damaged(cheats.honest(hotkey, table)),
    "lying row counts": cheats.lying_row_counts,
    "lying statistics": cheats.lying_statistics,
    "wrong source": cheats.wrong_source,
    "duplicate rows": cheats.duplicate_rows,
    "duplicate file": cheats.duplicate_file,
    "stale rows": cheats.stale,
    "stale rows relabelled": cheats.stale_relabelled,
    "forced could-not-validate": cheats.no_statistics_many_groups,
    "name is not the hash": lambda hotkey, table: cheats.truncated_name(cheats.honest(hotkey, table)),
}


class Planting:
    """Stores raw bytes into each backend as the miner could (its own prefix, repo or directory)."""

    def __init__(self, world: LocalSubnet, local_root: Path) -> None:
        self.world = world
        self.local_root = local_root

    def put(self, backend: str, miner: Participant, key: str, data: bytes) -> None:
        if backend == "s3":
            assert self.world.seaweed is not None
            self.world.seaweed.admin.put_object(Bucket=self.world.bucket_name, Key=key, Body=data,
                                                Metadata={"sha256": hashlib.sha256(data).hexdigest()})
        elif backend == "huggingface":
            assert self.world.hub is not None
            HfApi(endpoint=self.world.hub.url, token=self.world.hf_tokens[miner.hotkey]).create_commit(
                repo_id_for(self.world.hf_namespace, HF_PREFIX, miner.hotkey), [CommitOperationAdd(key, data)],
                commit_message="a file the uploader never made", repo_type="dataset")
        else:
            path = self.local_root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("planted")
    local_root = root / "local-store"
    with LocalSubnet(root / "subnet", miners=len(CHEATS) + 1 + len(COPIERS)) as world:
        document = world.config(100, policy="all").to_dict()
        document["backends"]["local"] = {"enabled": True, "rollout_percent": 100, "options": {}}
        document["fallback_order"] = ["s3", "huggingface", "local"]
        world.publish(parse_config(document))
        local = {"backends": {"local": {"options": {"root": str(local_root)}}}}
        planting = Planting(world, local_root)
        miners: dict[str, tuple[Participant, list[str]]] = {}
        for index, (name, cheat) in enumerate([("honest", None), *CHEATS.items()]):
            miner = world.miners[index]
            db = create_miner_db(root / f"{miner.name}.sqlite", 120, seed=300 + index, days=3).path
            own = {"backends": {**local["backends"],
                                "huggingface": {"options": {"token": world.hf_tokens[miner.hotkey]}}}}
            storage = MinerStorage(world.node(miner, overrides=own), db)
            try:
                outcome = storage.upload_data()
            finally:
                storage.close()
            chains = storage.spool.directory / "manifests"
            assert {b.backend: b.status for b in outcome.result.backends} == dict.fromkeys(BACKENDS, "ok")
            honest_uris = sorted(uri for uri in world.stored_uris("s3", miner.hotkey))
            claims = honest_uris[:12]
            if cheat is not None:
                planted = cheat(miner.hotkey, make_table(400, "x", seed=500 + index, day=recent_day(2)))
                for backend in BACKENDS:
                    for key, data in (*planted.also, (planted.key, planted.data)):
                        planting.put(backend, miner, key, data)
                    # The cheater lists its file in a manifest of its own, chained to its uploader's last one,
                    # so what must catch it is the check the cheat is aimed at, not a missing entry.
                    chain = chains / f"{backend}.json"
                    previous = json.loads(chain.read_text())["previous"] if chain.exists() else None
                    planting.put(backend, miner, *signed_manifest(
                        dict((*planted.also, (planted.key, planted.data))), miner.hotkey, miner.wallet, backend,
                        seq=int(time.time() * 1000), previous=previous))
                claims = list(planted.claims[:24])
            miners[name] = (miner, claims)
        _plant_copiers(world, root, planting, local, miners, first=len(CHEATS) + 1)
        yield {"world": world, "miners": miners, "local": local, "local_root": local_root, "root": root}


#: Miners around one original: two copy it (the same bytes; the same rows in new bytes), one shares 5% of its posts.
COPIERS = ("original", "byte copier", "re-encoded copier", "honest, 5% shared")
ORIGINAL_ROWS = 2400  # ~19 sampled URIs: enough to judge a re-encoded copy (see storage_core.audit.copies)


def _upload(world: LocalSubnet, miner: Participant, db: Path, local: dict[str, Any]) -> Path:
    own = {"backends": {**local["backends"], "huggingface": {"options": {"token": world.hf_tokens[miner.hotkey]}}}}
    storage = MinerStorage(world.node(miner, overrides=own), db)
    try:
        outcome = storage.upload_data()
    finally:
        storage.close()
    assert {b.backend: b.status for b in outcome.result.backends} == dict.fromkeys(BACKENDS, "ok")
    return storage.spool.directory / "manifests"


def _plant_copiers(world: LocalSubnet, root: Path, planting: Planting, local: dict[str, Any],
                   miners: dict[str, tuple[Participant, list[str]]], first: int) -> None:
    import io
    import sqlite3

    import pyarrow.parquet as pq

    original, byte_copier, reencoder, sharer = world.miners[first:first + len(COPIERS)]
    source_db = create_miner_db(root / "original.sqlite", ORIGINAL_ROWS, seed=700, days=2).path
    _upload(world, original, source_db, local)
    theirs = {key: path.read_bytes() for path in (planting.local_root / f"hotkey={original.hotkey}").rglob("*.parquet")
              if (key := path.relative_to(planting.local_root).as_posix())}
    # An honest miner that scraped 5% of the same posts: its own uploader, its own manifests.
    shared_db = create_miner_db(root / "sharer.sqlite", ORIGINAL_ROWS * 19 // 20, seed=701, days=2).path
    with sqlite3.connect(shared_db) as db:
        db.execute("ATTACH DATABASE ? AS original", (str(source_db),))
        db.execute("INSERT INTO DataEntity SELECT * FROM original.DataEntity ORDER BY uri LIMIT ?", (ORIGINAL_ROWS // 20,))
    _upload(world, sharer, shared_db, local)
    time.sleep(1.1)  # S3 records LastModified in whole seconds: the copies come strictly later
    for number, copier in enumerate((byte_copier, reencoder)):
        chains = _upload(world, copier, create_miner_db(root / f"{copier.name}.sqlite", 120, seed=702 + number).path,
                         local)
        copies: dict[str, bytes] = {}
        for key, data in theirs.items():
            if copier is byte_copier:
                copies[f"hotkey={copier.hotkey}/{key.split('/', 1)[1]}"] = data
            else:  # the same rows, re-encoded: other row groups and one more metadata key make new bytes
                table = pq.ParquetFile(io.BytesIO(data)).read()
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"mine": b"honestly"})
                planted = cheats.planted(copier.hotkey, table, cheats.parquet_bytes(table, row_group_size=100), "copy")
                copies[planted.key] = planted.data
        for backend in BACKENDS:
            for key, data in copies.items():
                planting.put(backend, copier, key, data)
            chain = chains / f"{backend}.json"
            previous = json.loads(chain.read_text())["previous"] if chain.exists() else None
            planting.put(backend, copier, *signed_manifest(copies, copier.hotkey, copier.wallet, backend,
                                                           seq=int(time.time() * 1000), previous=previous))
    claims = sorted(world.stored_uris("s3", original.hotkey))[::100]
    for name, miner in zip(COPIERS, (original, byte_copier, reencoder, sharer), strict=True):
        miners[name] = (miner, claims if miner in (original, byte_copier, reencoder) else
                        sorted(world.stored_uris("s3", miner.hotkey))[::100])


def _validate(subnet: dict[str, Any], name: str) -> Any:
    world: LocalSubnet = subnet["world"]
    miner, claims = subnet["miners"][name]
    assert world.chain is not None and world.validator is not None
    storage = create_validator_storage(
        world.chain.subtensor(), world.netuid, world.validator.wallet, environ={},
        overrides={"backends": {**subnet["local"]["backends"],
                                "huggingface": {"options": {"token": world.hf_tokens[world.validator.hotkey]}}}},
        state_dir=subnet["root"] / "validator-state")
    return storage.validate_miner_data(miner.hotkey, claims, seed=SEED)


def test_the_honest_miner_is_valid_on_every_backend(subnet: dict[str, Any]) -> None:
    report = _validate(subnet, "honest")
    assert report.backends == BACKENDS
    assert set(report.verdicts.values()) == {VALID}, {o.backend: o.result or o.error for o in report.outcomes}
    for outcome in report.outcomes:
        assert outcome.ok and outcome.result is not None and not outcome.result.problems
        assert outcome.result.rows and all(row.problem is None for row in outcome.result.rows)


@pytest.mark.parametrize("name", list(CHEATS))
def test_each_cheat_is_invalid_on_every_backend(subnet: dict[str, Any], name: str) -> None:
    report = _validate(subnet, name)
    assert report.backends == BACKENDS
    for outcome in report.outcomes:
        assert outcome.ok, f"{name}: {outcome.backend} could not validate: {outcome.error}"
        assert outcome.result is not None and not outcome.result.found, (name, outcome.backend, outcome.result)
    assert set(report.verdicts.values()) == {INVALID}, (name, report.verdicts)
    assert all(report.reason(uri) for uri in report.verdicts)


def _cli(subnet: dict[str, Any], name: str, tmp_path: Path, *extra: str,
         env: dict[str, str] | None = None) -> tuple[int, str]:
    world: LocalSubnet = subnet["world"]
    miner, claims = subnet["miners"][name]
    uris = tmp_path / f"{name.replace(' ', '-')}.txt"
    uris.write_text("\n".join(claims) + "\n")
    assert world.validator is not None
    arguments = ["validate", "--miner", miner.hotkey, "--uris", str(uris), "--seed", SEED, *extra,
                 *world.node_flags("validator", tmp_path / "state")]
    environment = {"HF_TOKEN": world.hf_tokens[world.validator.hotkey],
                   "STORAGE_CORE_LOCAL_OPTION_ROOT": str(subnet["local_root"]), **(env or {})}
    result = CliRunner().invoke(build_cli(), arguments, env=environment, catch_exceptions=False)
    return result.exit_code, result.output


def _audit(subnet: dict[str, Any], tmp_path: Path) -> tuple[int, dict[str, Any], Path]:
    world: LocalSubnet = subnet["world"]
    assert world.validator is not None
    copies = tmp_path / "copies.json"
    result = CliRunner().invoke(build_cli(), ["audit", "--json", "--copies-out", str(copies),
                                              *world.node_flags("validator", tmp_path / "state")],
                                env={"HF_TOKEN": world.hf_tokens[world.validator.hotkey],
                                     "STORAGE_CORE_LOCAL_OPTION_ROOT": str(subnet["local_root"])},
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.output), copies


def test_the_audit_flags_both_copiers_on_every_backend_and_not_the_sharer(subnet: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    code, report, _ = _audit(subnet, tmp_path)
    assert code == 1  # copies found
    hotkey = {name: subnet["miners"][name][0].hotkey for name in COPIERS}
    found = {(c["backend"], c["copier"], c["kind"]) for c in report["copies"]}
    expected = {(backend, hotkey[name], kind) for backend in BACKENDS
                for name, kind in (("byte copier", "byte"), ("re-encoded copier", "re-encoded"))}
    assert expected <= found, report["copies"]
    assert {c["original"] for c in report["copies"]} == {hotkey["original"]}
    flagged = {c["copier"] for c in report["copies"]}
    assert hotkey["original"] not in flagged and hotkey["honest, 5% shared"] not in flagged
    audits = {(m["backend"], m["hotkey"]): m for m in report["miners"]}
    for backend in BACKENDS:
        assert audits[(backend, hotkey["original"])]["rows"] == ORIGINAL_ROWS
        assert audits[(backend, hotkey["honest, 5% shared"])]["problem"] is None


@pytest.mark.parametrize("name", COPIERS)
def test_validate_with_the_audits_copies_rejects_only_the_copiers(subnet: dict[str, Any], name: str,
                                                                  tmp_path: Path) -> None:
    _, _, copies = _audit(subnet, tmp_path)
    code, output = _cli(subnet, name, tmp_path, "--json", "--copies", str(copies))
    report = json.loads(output)
    if "copier" in name:
        assert code == 1, output
        assert report["counts"]["valid"] == 0
        assert all("copy: " in why for why in report["reasons"].values()), report["reasons"]
    else:
        assert code == 0, output


@pytest.mark.parametrize("name", ["honest", *CHEATS])
def test_storage_core_validate_exits_by_verdict(subnet: dict[str, Any], name: str, tmp_path: Path) -> None:
    code, output = _cli(subnet, name, tmp_path, "--json")
    report = json.loads(output)
    if name == "honest":
        assert code == 0, output
        assert report["counts"] == {VALID: 12, INVALID: 0, UNKNOWN: 0}
        assert report["rows"] and all(row["problem"] is None for row in report["rows"])
        assert {row["backend"] for row in report["rows"]} == set(BACKENDS)
    else:
        assert code == 1, output
        assert report["counts"][VALID] == 0 and report["counts"][UNKNOWN] == 0
        assert set(report["reasons"]) == set(report["verdicts"])


def test_rows_are_shown_as_stored(subnet: dict[str, Any], tmp_path: Path) -> None:
    code, output = _cli(subnet, "uri shells", tmp_path, "--rows")
    assert code == 1
    assert "FAILS" in output and "value as stored" in output and "content_size_bytes" in output
    assert [line for line in output.splitlines() if len(line) > 80] == []  # fits a terminal of 80 columns


def test_a_backend_down_is_could_not_validate(subnet: dict[str, Any], tmp_path: Path) -> None:
    """The Hub unreachable: its part is unknown; under policy ``all`` honest claims are unknown, not invalid."""
    world: LocalSubnet = subnet["world"]
    assert world.hub is not None
    hub = world.hub
    world.hub = None
    hub.stop()
    try:
        code, output = _cli(subnet, "honest", tmp_path, "--json")
        report = json.loads(output)
        assert code == 3, output
        assert report["counts"] == {VALID: 0, INVALID: 0, UNKNOWN: 12}
        failed = {o["backend"]: o["status"] for o in report["outcomes"]}
        assert failed["huggingface"] == "failed" and failed["s3"] == failed["local"] == "ok"
        code, output = _cli(subnet, "uri shells", tmp_path, "--json")
        assert code == 1, output  # a cheat caught elsewhere stays invalid while one backend is down
    finally:
        world.hub = start_hub(hub.hub, port=urlsplit(hub.url).port or 0)  # the config names this port
