"""Parquet files from a hostile miner, put straight into its own S3 prefix (admin client) and its own HF repo
(its own token), under valid content-addressed names: the S3 and HF checkers reject each one as an
IntegrityProblem with bounded work (bytes read stay under a limit tied to the file sizes; no huge
allocation), and the miner's honest files still validate.

Bounded memory is checked where it bit: a footer claiming 2**40 rows in a row group made pyarrow allocate
for all of them (the process was OOM-killed) before the checkers capped row counts by the column's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from reliability_helpers import miner_db, overrides

from demo.world import HF_PREFIX, LocalSubnet
from storage_core.miner import MinerStorage
from storage_core.schema import schema_for
from storage_core.testing.data import make_table, recent_day
from storage_core.testing.manifests import signed_manifest
from storage_core.testing.memory_store import MemoryStore
from storage_core.validator import ValidatorStorage
from storage_core.verify import check_claims
from storage_core_huggingface.identity import repo_id_for

pytestmark = pytest.mark.timeout(120)
DAY = recent_day().isoformat()
FUZZ_MINER = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
HONEST_ROWS = 1200


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _valid(rows: int, seed: int, **write_options) -> tuple[bytes, list[str]]:
    table = make_table(rows, "x", seed=seed).cast(schema_for("x"))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", **write_options)
    return sink.getvalue(), table.column("uri").to_pylist()


def _with_footer(data: bytes, footer: bytes) -> bytes:
    length = int.from_bytes(data[-8:-4], "little")
    return data[: -8 - length] + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def hostile_files() -> dict[str, tuple[bytes, list[str]]]:
    """name -> (content, URIs the file claims): each is wrong in one way."""
    files: dict[str, tuple[bytes, list[str]]] = {}
    sink = io.BytesIO()
    pq.write_table(pa.table({"uri": ["https://x.com/evil/status/1"], "payload": [b"x" * 10]}), sink)
    files["wrong schema"] = (sink.getvalue(), ["https://x.com/evil/status/1"])

    data, uris = _valid(7, seed=901)
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length : -8]
    huge = _varint(2 * 2**40)  # zigzag(2**40): every i64 field whose value was 7 (num_rows, num_values) claims 2**40
    files["footer claims 2**40 rows"] = (_with_footer(data, footer.replace(b"\x16\x0e", b"\x16" + huge)), uris)

    data, uris = _valid(1500, seed=902, row_group_size=1)  # 1,500 one-row groups, ~1.5 MB of footer
    files["thousands of one-row groups"] = (data, uris)

    data, uris = _valid(300, seed=903)
    files["truncated"] = (data[: len(data) // 2], uris)
    files["footer length beyond the file"] = (data[:-8] + (2**31).to_bytes(4, "little") + b"PAR1", uris)
    files["random bytes"] = (os.urandom(50_000), ["https://x.com/evil/status/2"])
    return files


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSubnet, set[str], dict[str, str], int]]:
    """A miner with honest data in both backends plus the hostile files; (world, honest URIs, key -> case, bytes)."""
    root = tmp_path_factory.mktemp("hostile")
    with LocalSubnet(root / "subnet", miners=2) as world:
        world.publish(world.config(100))
        miner = world.miners[0]
        db, honest = miner_db(root / "miner.sqlite", HONEST_ROWS, seed=77, days=1)
        storage = MinerStorage(world.node(miner), db)
        try:
            round_ = storage.upload_data()
        finally:
            storage.close()
        assert all(backend.status == "ok" for backend in round_.result.backends)
        cases: dict[str, str] = {}
        claims: dict[str, list[str]] = {}  # key -> the URIs the hostile file is listed (and indexed) with
        claimed: set[str] = set()
        operations = []
        total = 0
        for case, (content, uris) in hostile_files().items():
            digest = hashlib.sha256(content).hexdigest()
            key = f"hotkey={miner.hotkey}/source=x/date={DAY}/{digest[:32]}.parquet"
            assert world.seaweed is not None
            world.seaweed.admin.put_object(Bucket=world.bucket_name, Key=key, Body=content, Metadata={"sha256": digest})
            operations.append(CommitOperationAdd(key, content))
            cases[key] = case
            claims[key] = uris
            claimed.update(uris)
            total += len(content)
        assert world.hub is not None
        HfApi(endpoint=world.hub.url, token=world.hf_tokens[miner.hotkey]).create_commit(
            repo_id_for(world.hf_namespace, HF_PREFIX, miner.hotkey), operations, commit_message="hostile",
            repo_type="dataset")
        _list_in_manifests(world, miner, storage, claims)
        world.hostile_claimed = claimed  # type: ignore[attr-defined]
        world.mutated = _plant_mutations(world, world.miners[1])  # type: ignore[attr-defined]
        yield world, honest, cases, total


MUTATIONS = 24


def _mutations(count: int, seed: int) -> list[bytes]:
    """``count`` distinct corruptions of one valid chunk (byte changes, mostly in the footer; some cut)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    footer_start = len(_BASE) - 8 - int.from_bytes(_BASE[-8:-4], "little")
    while len(out) < count:
        content = bytearray(_BASE)
        for _ in range(rng.randint(1, 6)):
            content[rng.randrange(rng.choice([0, footer_start, footer_start]), len(content))] = rng.randrange(256)
        if rng.random() < 0.15:
            content = content[: rng.randrange(len(content))]
        if bytes(content) != _BASE and bytes(content) not in out:
            out.append(bytes(content))
    return out


def _plant_mutations(world: LocalSubnet, miner) -> set[str]:
    """Corrupted copies of one chunk, each under its own valid content-addressed name, in S3 and HF (after
    one honest round, which creates the miner's repo and its signed manifest)."""
    db, _ = miner_db(world.root / "mutant.sqlite", 50, seed=78, days=1)
    storage = MinerStorage(world.node(miner), db)
    try:
        assert all(backend.status == "ok" for backend in storage.upload_data().result.backends)
    finally:
        storage.close()
    keys, operations = set(), []
    for content in _mutations(MUTATIONS, seed=905):
        digest = hashlib.sha256(content).hexdigest()
        key = f"hotkey={miner.hotkey}/source=x/date={DAY}/{digest[:32]}.parquet"
        world.seaweed.admin.put_object(Bucket=world.bucket_name, Key=key, Body=content, Metadata={"sha256": digest})
        operations.append(CommitOperationAdd(key, content))
        keys.add(key)
    HfApi(endpoint=world.hub.url, token=world.hf_tokens[miner.hotkey]).create_commit(
        repo_id_for(world.hf_namespace, HF_PREFIX, miner.hotkey), operations, commit_message="mutated",
        repo_type="dataset")
    _drop_manifests(world, miner)  # 24 copies of one chunk: checked by listing, the path without a manifest
    return keys


def _drop_manifests(world: LocalSubnet, miner) -> None:  # type: ignore[no-untyped-def]
    assert world.seaweed is not None and world.hub is not None
    keys = [key for key in world.seaweed.list_keys(world.bucket_name, f"hotkey={miner.hotkey}/")
            if key.endswith(".manifest")]
    for key in keys:
        world.seaweed.admin.delete_object(Bucket=world.bucket_name, Key=key)
    repo = repo_id_for(world.hf_namespace, HF_PREFIX, miner.hotkey)
    api = HfApi(endpoint=world.hub.url, token=world.hf_tokens[miner.hotkey])
    paths = [path for path in api.list_repo_files(repo, repo_type="dataset") if path.endswith(".manifest")]
    api.create_commit(repo, [CommitOperationDelete(path) for path in paths], commit_message="no manifests",
                      repo_type="dataset")


def _list_in_manifests(world: LocalSubnet, miner, storage: MinerStorage,  # type: ignore[no-untyped-def]
                       claims: dict[str, list[str]] | None = None) -> None:
    """The miner lists every object of its prefix (the hostile ones too) in a new manifest per backend, chained
    to its uploader's last one: a cheater would, so that the checks the files aim at are what must catch them."""
    assert world.seaweed is not None and world.hub is not None
    objects = {key: world.seaweed.admin.get_object(Bucket=world.bucket_name, Key=key)["Body"].read()
               for key in world.seaweed.list_keys(world.bucket_name, f"hotkey={miner.hotkey}/")
               if key.endswith(".parquet")}
    for backend in ("s3", "huggingface"):
        chain = storage.spool.directory / "manifests" / f"{backend}.json"
        previous = json.loads(chain.read_text())["previous"] if chain.exists() else None
        key, data = signed_manifest(objects, miner.hotkey, miner.wallet, backend, seq=int(time.time() * 1000),
                                    previous=previous, claims=claims)
        if backend == "s3":
            world.seaweed.admin.put_object(Bucket=world.bucket_name, Key=key, Body=data,
                                           Metadata={"sha256": hashlib.sha256(data).hexdigest()})
        else:
            HfApi(endpoint=world.hub.url, token=world.hf_tokens[miner.hotkey]).create_commit(
                repo_id_for(world.hf_namespace, HF_PREFIX, miner.hotkey), [CommitOperationAdd(key, data)],
                commit_message="manifest", repo_type="dataset")


@pytest.mark.parametrize("backend", ["s3", "huggingface"])
def test_corrupted_copies_never_void_a_validation(planted, backend: str) -> None:
    """Every corrupted file is a problem or (if still readable) counts only URIs it really holds; the
    validation itself always concludes (never "unknown" because of the miner's bytes)."""
    world = planted[0]
    validator, miner = world.validator, world.miners[1]
    checker = ValidatorStorage(world.node(validator, overrides=overrides(
        world, validator, **{("hf_percent" if backend == "s3" else "s3_percent"): 0})))
    report = checker.validate_miner_data(miner.hotkey, _BASE_URIS)
    assert report.backends == (backend,), (report.backends, checker.node.resolved.sources)
    # (under policy "any" the other, enabled backend may get a second look at unresolved URIs)
    outcome = next(o for o in report.outcomes if o.backend == backend)
    assert outcome.ok, outcome.error
    assert {problem.key for problem in outcome.result.problems} <= world.mutated, [
        (p.key[-70:], p.problem) for p in outcome.result.problems if p.key not in world.mutated]
    assert outcome.result.problems, ("no corruption was noticed at all", outcome.result.manifest, len(outcome.result.found), outcome.result.objects_scanned)
    assert outcome.result.found <= set(_BASE_URIS)
    assert set(report.verdicts.values()) <= {"valid", "invalid"}
    assert outcome.result.bytes_read <= 2 * MUTATIONS * len(_BASE)


@pytest.mark.parametrize("backend", ["s3", "huggingface"])
def test_hostile_files_are_integrity_problems_and_honest_files_still_validate(planted, backend: str) -> None:
    world, honest, cases, hostile_bytes = planted
    miner, validator = world.miners[0], world.validator
    other = "s3" if backend == "huggingface" else "huggingface"
    checker = ValidatorStorage(world.node(validator, overrides=overrides(
        world, validator, **{f"{'s3' if other == 's3' else 'hf'}_percent": 0})))
    asked = sorted(honest)[::40] + sorted(world.hostile_claimed)
    report = checker.validate_miner_data(miner.hotkey, asked)
    assert report.backends == (backend,), (report.backends, checker.node.resolved.sources)
    # (under policy "any" the other, enabled backend may get a second look at unresolved URIs)
    outcome = next(o for o in report.outcomes if o.backend == backend)
    assert outcome.ok, outcome.error
    result = outcome.result
    problems = {problem.key: problem.problem for problem in result.problems}
    unreported = {case for key, case in cases.items() if key not in problems}
    # "thousands of one-row groups" is well-formed but cannot be checked within bounded work: refused too.
    assert not unreported, f"{backend} accepted: {unreported}"
    for key, problem in problems.items():
        assert problem and key in cases, (key, problem)
    assert {uri for uri in asked if uri in honest} <= result.found
    assert not (result.found - honest)
    assert all(report.verdicts[uri] == "valid" for uri in asked if uri in honest)
    # Bounded work: never more than every stored byte once (honest chunks are small) plus the hostile files.
    honest_bytes = sum(world.seaweed.admin.head_object(Bucket=world.bucket_name, Key=key)["ContentLength"]
                       for key in world.seaweed.list_keys(world.bucket_name, f"hotkey={miner.hotkey}/")
                       if key not in cases)
    assert result.bytes_read <= honest_bytes + hostile_bytes, (result.bytes_read, honest_bytes, hostile_bytes)


def test_the_hostile_row_count_is_what_makes_a_reader_allocate(tmp_path: Path) -> None:
    """The crafted footer really claims 2**40 rows (so the checkers' cap, not luck, keeps them safe)."""
    content, _ = hostile_files()["footer claims 2**40 rows"]
    metadata = pq.read_metadata(pa.BufferReader(content))
    assert metadata.num_row_groups >= 1 and metadata.row_group(0).num_rows == 2**40


_BASE, _BASE_URIS = _valid(60, seed=904, row_group_size=20)
_BASE_DAY = recent_day().isoformat()


@st.composite
def mutated_chunks(draw) -> bytes:
    """A valid chunk with a few bytes changed (mostly in the footer, where lengths and counts live), maybe cut."""
    content = bytearray(_BASE)
    footer_start = len(content) - 8 - int.from_bytes(content[-8:-4], "little")
    for _ in range(draw(st.integers(1, 6))):
        low = draw(st.sampled_from([0, footer_start, footer_start]))
        position = draw(st.integers(low, len(content) - 1))
        content[position] = draw(st.integers(0, 255))
    if draw(st.integers(0, 5)) == 0:
        content = content[: draw(st.integers(0, len(content)))]
    return bytes(content)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_chunks())
def test_mutated_chunks_never_crash_the_core_check(content: bytes) -> None:
    """Whatever the bytes, the check concludes: the file is a problem or counts only URIs it really holds."""
    name = hashlib.sha256(content).hexdigest()[:32]
    key = f"hotkey={FUZZ_MINER}/source=x/date={_BASE_DAY}/{name}.parquet"
    result = check_claims(MemoryStore({key: content}, FUZZ_MINER), "memory", FUZZ_MINER, _BASE_URIS)
    assert result.found <= set(_BASE_URIS)
    assert all(problem.key == key and problem.problem for problem in result.problems)
