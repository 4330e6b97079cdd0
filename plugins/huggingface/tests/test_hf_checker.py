"""The store under the core's checks: range reads only, counted; one file's problem stays that file's;
a failing Hub is "could not validate"; the repo is derived from the hotkey and its round manifest must be the
hotkey's."""

from __future__ import annotations

import hashlib
import io
import json
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage_core.errors import BackendError
from storage_core.layout import key_for, manifest_key, parse_manifest_key
from storage_core.manifest.document import canonical
from storage_core.schema import schema_for
from storage_core.testing.data import make_batch, make_table, recent_day, uris_of
from storage_core.testing.manifests import signed_manifest
from storage_core.verify.store import ObjectError, ObjectStore
from storage_core_huggingface import plugin, uploader


def _uris_in(path) -> list[str]:
    return pq.read_table(path, columns=["uri"])["uri"].to_pylist()


def test_the_checks_read_a_small_part_of_the_files_and_count_every_request(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=60_000, chunks=3, seed=21)
    uploader.upload(hf_world.context(miner), batch)
    sample = uris_of(batch)[::7_000]
    hf_world.hub.stats.reset()
    # No full-row checks here: those read every column of a sampled URI's row group (the core's choice).
    result = hf_world.check(miner.ss58_address, sample + ["https://x.com/nobody/status/1"], full_checks=0)
    assert result.found == frozenset(sample)
    assert result.problems == () and not result.rejected
    assert result.objects_scanned == 3
    # The meter agrees with what the server sent, and it is far less than the files.
    assert result.requests == hf_world.hub.stats.requests
    assert result.bytes_read == hf_world.hub.stats.bytes_sent
    assert result.bytes_read < 0.2 * batch.total_bytes
    assert hf_world.hub.stats.by_route["GET repo-info"] == 1 and hf_world.hub.stats.by_route["GET resolve"] >= 3


def test_the_store_speaks_the_core_protocol_at_one_pinned_revision(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=200, seed=20)
    [stored] = uploader.upload(hf_world.context(miner), batch).objects
    store = plugin.storage_reader(hf_world.context(hf_world.validator), miner.ss58_address)
    assert isinstance(store, ObjectStore)
    listed = {item.key: item for item in store.list_objects()}
    assert listed[stored.key].sha256 == stored.sha256 and listed[stored.key].size == stored.size_bytes
    content = batch.files[0].path.read_bytes()
    # A later commit does not move the store: it reads the revision it listed.
    hf_world.put_raw(stored.key, b"changed behind the validator's back")
    tail = store.read_tail(stored.key, 100)
    assert (tail.data, tail.size, tail.sha256) == (content[-100:], len(content), stored.sha256)
    assert store.read_range(stored.key, 4, 40) == content[4:40]
    with pytest.raises(ObjectError, match="not in"):
        store.read_range(f"{stored.key}.missing", 0, 10)


def test_a_missing_repo_holds_nothing(hf_world):
    result = hf_world.check(hf_world.miners[1].ss58_address, ["https://x.com/a/status/1"])
    assert result.found == frozenset() and result.problems == ()
    assert result.requests == 1  # one repo_info, answered 404


def test_a_file_failing_its_checksum_is_reported_and_not_counted(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=400, chunks=2, seed=22)
    receipt = uploader.upload(hf_world.context(miner), batch)
    bad_key = receipt.objects[0].key
    sink = io.BytesIO()
    pq.write_table(make_table(10, "x", seed=99).cast(schema_for("x")), sink)
    hf_world.hub.corrupt_file(hf_world.repo_of(miner), bad_key, sink.getvalue())
    result = hf_world.check(miner.ss58_address, uris_of(batch))
    assert [p.key for p in result.problems] == [bad_key]
    assert "does not match the name" in result.problems[0].problem
    good = [f for f in batch.files if f.sha256 != receipt.objects[0].sha256]
    assert result.found == frozenset(uri for f in good for uri in _uris_in(f.path))


def test_a_file_failing_its_schema_is_reported(hf_world, tmp_path):
    import hashlib

    miner = hf_world.miners[0]
    uploader.upload(hf_world.context(miner), make_batch(tmp_path, miner.ss58_address, rows=200, seed=23))
    # A parquet file without the storage-core schema, committed under a valid content-addressed name.
    sink = io.BytesIO()
    pq.write_table(pa.table({"uri": ["https://x.com/a/status/1"], "extra": [1]}), sink)
    content = sink.getvalue()
    path = f"hotkey={miner.ss58_address}/source=x/date={recent_day()}/{hashlib.sha256(content).hexdigest()[:32]}.parquet"
    hf_world.put_raw(path, content)
    result = hf_world.check(miner.ss58_address, ["https://x.com/a/status/1"])
    assert result.found == frozenset()
    assert [(p.key, p.problem.startswith("schema")) for p in result.problems] == [(path, True)]


def test_a_miner_cannot_claim_another_miners_uris(hf_world, tmp_path):
    miner_a, miner_b = hf_world.miners
    batch_b = make_batch(tmp_path / "b", miner_b.ss58_address, rows=200, seed=24)
    uploader.upload(hf_world.context(miner_b), batch_b)
    uris_b = uris_of(batch_b)
    assert hf_world.check(miner_a.ss58_address, uris_b).found == frozenset()

    # A copies B's file into its own repo under B's prefix: it still does not count for A, and is reported.
    uploader.upload(hf_world.context(miner_a), make_batch(tmp_path / "a", miner_a.ss58_address, rows=50, seed=25))
    staged = batch_b.files[0]
    foreign = f"hotkey={miner_b.ss58_address}/source=x/date={staged.date}/{staged.sha256[:32]}.parquet"
    hf_world.put_raw(foreign, staged.path.read_bytes(), signer=miner_a)
    result = hf_world.check(miner_a.ss58_address, uris_b)
    assert result.found == frozenset()
    assert [p.key for p in result.problems] == [foreign] and "not this miner's" in result.problems[0].problem
    # And B's own answer is unchanged.
    assert hf_world.check(miner_b.ss58_address, uris_b).found == frozenset(uris_b)


def test_a_round_manifest_not_signed_by_the_miner_voids_its_claims(hf_world, tmp_path):
    miner_a, miner_b = hf_world.miners
    batch = make_batch(tmp_path, miner_a.ss58_address, rows=100, chunks=2, seed=26)
    uploader.upload(hf_world.context(miner_a), batch)
    objects = {key_for(miner_a.ss58_address, staged): staged.path.read_bytes() for staged in batch.files}
    _key, data = signed_manifest(objects, miner_a.ss58_address, miner_a, "huggingface")
    end = 8 + int.from_bytes(data[4:8], "little")
    document = json.loads(data[8:end])
    document["signature"] = miner_b.sign(canonical(document["manifest"])).hex()  # another hotkey's signature
    header = canonical(document)
    forged = data[:4] + len(header).to_bytes(4, "little") + header + data[end:]
    seq = parse_manifest_key(_key).seq
    hf_world.put_raw(manifest_key(miner_a.ss58_address, seq, hashlib.sha256(forged).hexdigest()), forged, signer=miner_a)
    result = hf_world.check(miner_a.ss58_address, uris_of(batch))
    assert result.found == frozenset() and result.objects_scanned == 0
    assert all(f"not {miner_a.ss58_address}'s signature" in why for why in result.rejected.values())
    assert result.manifest.startswith("refused: ")
    # The miner's next round manifest (a later round) is believed again.
    key, data = signed_manifest(objects, miner_a.ss58_address, miner_a, "huggingface", seq=seq + 1)
    hf_world.put_raw(key, data, signer=miner_a)
    assert hf_world.check(miner_a.ss58_address, uris_of(batch)).found == frozenset(uris_of(batch))


# -- the Hub failing is "could not validate", never the miner's fault -----------------------------------


def test_a_hub_answering_5xx_raises_after_back_off(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=27)
    uploader.upload(hf_world.context(miner), batch)
    hf_world.hub.fail_next(100, status=503, retry_after=None)
    with pytest.raises(BackendError, match="HTTP 503") as raised:
        hf_world.check(miner.ss58_address, uris_of(batch), max_attempts=3)
    assert raised.value.retryable


def test_a_hub_failing_mid_read_is_not_blamed_on_the_file(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=28)
    uploader.upload(hf_world.context(miner), batch)
    hf_world.hub.fail_next(100, status=502, retry_after=None, match="/resolve/")
    with pytest.raises(BackendError, match="HTTP 502"):
        hf_world.check(miner.ss58_address, uris_of(batch), max_attempts=2)


def test_a_hub_that_refuses_connections_raises(hf_world):
    with socket.socket() as sock:  # a port on 127.0.0.1 that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError, match="huggingface: reading"):
        hf_world.check(hf_world.miners[0].ss58_address, ["https://x.com/a/status/1"],
                       endpoint=f"http://127.0.0.1:{port}", max_attempts=2)


def test_a_token_the_hub_refuses_raises_and_is_never_shown(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=29)
    uploader.upload(hf_world.context(miner), batch)
    with pytest.raises(BackendError, match="refused the token") as raised:
        hf_world.check(miner.ss58_address, uris_of(batch), token="hf_not_a_real_token")
    assert "hf_not_a_real_token" not in str(raised.value)


def test_a_hub_that_never_answers_times_out_and_raises(hf_world):
    with socket.socket() as sock:  # listens on 127.0.0.1 (the kernel accepts) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        with pytest.raises(BackendError, match="Timeout"):
            hf_world.check(hf_world.miners[0].ss58_address, ["https://x.com/a/status/1"],
                           endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}", max_attempts=1, timeout_s=0.3)
