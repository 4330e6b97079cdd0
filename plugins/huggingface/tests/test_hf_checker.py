"""The checker: range reads only, counted; integrity problems reported; identity enforced."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import CommitOperationAdd, HfApi

from storage_core.schema import schema_for
from storage_core.testing.data import make_batch, make_table, uris_of
from storage_core_huggingface import checker, uploader
from storage_core_huggingface.identity import MANIFEST_PATH, SIGNATURE_PATH, manifest_bytes, sign


def _validate(world, miner_hotkey, uris):
    return checker.validate(world.context(world.validator), miner_hotkey, tuple(uris))


def test_the_checker_reads_a_small_part_of_the_files_and_counts_it(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=60_000, chunks=3, seed=21)
    uploader.upload(hf_world.context(miner), batch)
    uris = uris_of(batch)
    sample = uris[::7_000]
    hf_world.hub.stats.reset()
    result = _validate(hf_world, miner.ss58_address, sample + ["https://x.com/nobody/status/1"])
    assert result.found == frozenset(sample)
    assert result.problems == ()
    assert result.objects_scanned == 3
    # The meter agrees with what the server sent, and it is far less than the files.
    assert result.requests == hf_world.hub.stats.requests
    assert result.bytes_read == hf_world.hub.stats.bytes_sent
    assert result.bytes_read < 0.3 * batch.total_bytes
    assert hf_world.hub.stats.by_route["GET resolve"] >= 3


def test_a_missing_repo_holds_nothing(hf_world):
    result = _validate(hf_world, hf_world.miners[1].ss58_address, ["https://x.com/a/status/1"])
    assert result.found == frozenset() and result.problems == ()


def test_a_file_failing_its_checksum_is_reported_and_not_counted(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=400, chunks=2, seed=22)
    receipt = uploader.upload(hf_world.context(miner), batch)
    bad_key = receipt.objects[0].key
    other = make_table(10, "x", seed=99)
    sink = io.BytesIO()
    pq.write_table(other.cast(schema_for("x")), sink)
    hf_world.hub.corrupt_file(hf_world.repo_of(miner), bad_key, sink.getvalue())
    result = _validate(hf_world, miner.ss58_address, uris_of(batch))
    assert [p.key for p in result.problems] == [bad_key]
    assert "checksum mismatch" in result.problems[0].problem
    bad_sha = receipt.objects[0].sha256
    good = [f for f in batch.files if f.sha256 != bad_sha]
    assert result.found == frozenset(uri for f in good for uri in pq.read_table(f.path, columns=["uri"])["uri"].to_pylist())


def test_a_file_failing_its_schema_is_reported(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=200, seed=23)
    uploader.upload(hf_world.context(miner), batch)
    # A parquet file without the storage-core schema, committed under a valid content-addressed name.
    import hashlib

    sink = io.BytesIO()
    pq.write_table(pa.table({"uri": ["https://x.com/a/status/1"], "extra": [1]}), sink)
    content = sink.getvalue()
    digest = hashlib.sha256(content).hexdigest()
    path = f"hotkey={miner.ss58_address}/source=x/date=2026-11-01/{digest[:32]}.parquet"
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[miner.ss58_address])
    api.create_commit(hf_world.repo_of(miner), [CommitOperationAdd(path, content)], commit_message="bad",
                      repo_type="dataset")
    result = _validate(hf_world, miner.ss58_address, ["https://x.com/a/status/1"])
    assert result.found == frozenset()
    assert [(p.key, "storage_core.schema_version" in p.problem) for p in result.problems] == [(path, True)]


def test_a_miner_cannot_claim_another_miners_uris(hf_world, tmp_path):
    miner_a, miner_b = hf_world.miners
    batch_b = make_batch(tmp_path / "b", miner_b.ss58_address, rows=200, seed=24)
    uploader.upload(hf_world.context(miner_b), batch_b)
    uris_b = uris_of(batch_b)
    assert _validate(hf_world, miner_a.ss58_address, uris_b).found == frozenset()

    # A copies B's file into its own repo under B's prefix: it still does not count for A, and is reported.
    batch_a = make_batch(tmp_path / "a", miner_a.ss58_address, rows=50, seed=25)
    uploader.upload(hf_world.context(miner_a), batch_a)
    staged = batch_b.files[0]
    foreign = f"hotkey={miner_b.ss58_address}/source=x/date={staged.date}/{staged.sha256[:32]}.parquet"
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[miner_a.ss58_address])
    api.create_commit(hf_world.repo_of(miner_a), [CommitOperationAdd(foreign, str(staged.path))],
                      commit_message="copy", repo_type="dataset")
    result = _validate(hf_world, miner_a.ss58_address, uris_b)
    assert result.found == frozenset()
    assert [p.key for p in result.problems] == [foreign]
    # And B's own answer is unchanged.
    assert _validate(hf_world, miner_b.ss58_address, uris_b).found == frozenset(uris_b)


def test_a_manifest_not_signed_by_the_miner_voids_the_repo(hf_world, tmp_path):
    miner_a, miner_b = hf_world.miners
    batch = make_batch(tmp_path, miner_a.ss58_address, rows=100, seed=26)
    uploader.upload(hf_world.context(miner_a), batch)
    repo = hf_world.repo_of(miner_a)
    forged = sign(miner_b, manifest_bytes(repo, miner_a.ss58_address)).hex().encode()
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[miner_a.ss58_address])
    api.create_commit(repo, [CommitOperationAdd(SIGNATURE_PATH, forged)], commit_message="forge", repo_type="dataset")
    result = _validate(hf_world, miner_a.ss58_address, uris_of(batch))
    assert result.found == frozenset()
    assert [p.key for p in result.problems] == [MANIFEST_PATH]
    assert "not a signature" in result.problems[0].problem
    # The miner's next upload repairs the manifest.
    uploader.upload(hf_world.context(miner_a), batch)
    assert _validate(hf_world, miner_a.ss58_address, uris_of(batch)).found == frozenset(uris_of(batch))
