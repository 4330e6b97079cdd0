"""Round manifests on the Hub: one commit adding the manifest at its layout path, "already present" without a
commit, 429 honoured, and the Hub's commit time of every file through ``HfStore.list_objects_timed``."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from huggingface_hub import HfApi

from storage_core.errors import BackendError
from storage_core.layout import key_for, manifest_key
from storage_core.testing.data import make_batch
from storage_core.testing.manifests import signed_manifest
from storage_core.verify.manifest_index import load_manifest
from storage_core_huggingface import manifests, plugin, uploader
from storage_core.backoff import Backoff
from storage_core_huggingface.retry import is_retryable


def _manifest(hotkey: str, seq: int, size: int = 2000) -> tuple[str, bytes]:
    data = b"SCM1" + os.urandom(size - 4)
    return manifest_key(hotkey, seq, hashlib.sha256(data).hexdigest()), data


def _hub_time(date: str) -> datetime:
    return datetime.strptime(date, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def test_the_hook_commits_the_manifest_once_and_a_second_store_is_already_present(hf_world, tmp_path):
    miner = hf_world.miners[0]
    hotkey = miner.ss58_address
    repo = hf_world.repo_of(miner)
    uploader.upload(hf_world.context(miner), make_batch(tmp_path, hotkey, rows=100, seed=71))
    commits = hf_world.hub.commit_count(repo)
    key, data = _manifest(hotkey, 4)
    stored = plugin.storage_publish_manifest(hf_world.context(miner), hotkey, key, data)
    assert (stored.key, stored.size_bytes, stored.sha256) == (key, len(data), hashlib.sha256(data).hexdigest())
    assert not stored.already_present
    assert hf_world.hub.commit_count(repo) == commits + 1
    assert hf_world.hub.repo_files(repo)[key] == len(data)
    head = hf_world.hub.commits(repo)[0]
    assert "round 4" in head["title"]
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[hotkey])
    assert api.hf_hub_download(repo, key, repo_type="dataset", local_dir=tmp_path / "dl") and \
        (tmp_path / "dl" / key).read_bytes() == data
    again = plugin.storage_publish_manifest(hf_world.context(miner), hotkey, key, data)
    assert again.already_present and hf_world.hub.commit_count(repo) == commits + 1


def test_a_manifest_in_a_new_repo_is_its_only_file_and_429_is_honoured(hf_world, sleep):
    miner = hf_world.miners[1]
    hotkey = miner.ss58_address
    repo = hf_world.repo_of(miner)
    key, data = _manifest(hotkey, 0)
    hf_world.hub.fail_next(2, status=429, retry_after=5, match="/commit/")
    stored = manifests.publish_manifest(hf_world.context(miner), hotkey, key, data,
                                        backoff=Backoff(attempts=4, base=1.0, sleep=sleep, retryable=is_retryable))
    assert sleep.waits == [5.0, 5.0]
    assert not stored.already_present and hf_world.hub.commit_count(repo) == 1
    assert set(hf_world.hub.repo_files(repo)) - {".gitattributes"} == {key}  # no other proof of the repo


def test_the_hook_refuses_another_miners_manifest_and_a_key_that_does_not_name_the_bytes(hf_world):
    miner, other = hf_world.miners
    key, data = _manifest(other.ss58_address, 1)
    with pytest.raises(BackendError, match="cannot publish for miner") as raised:
        plugin.storage_publish_manifest(hf_world.context(miner), other.ss58_address, key, data)
    assert not raised.value.retryable
    own_key, own = _manifest(miner.ss58_address, 1)
    with pytest.raises(BackendError, match="does not name these bytes"):
        plugin.storage_publish_manifest(hf_world.context(miner), miner.ss58_address, own_key, own + b"!")
    with pytest.raises(BackendError, match="not a manifest key"):
        plugin.storage_publish_manifest(hf_world.context(miner), miner.ss58_address, "hotkey=x/manifests/a", own)
    assert not hf_world.hub.repo_exists(hf_world.repo_of(other))


def test_list_objects_timed_gives_each_file_its_commit_time(hf_world, tmp_path):
    miner = hf_world.miners[0]
    hotkey = miner.ss58_address
    repo = hf_world.repo_of(miner)
    batch = make_batch(tmp_path, hotkey, rows=100, chunks=2, seed=72)
    uploader.upload(hf_world.context(miner), batch)
    chunks = {key_for(hotkey, staged): staged.path.read_bytes() for staged in batch.files}
    key, data = signed_manifest(chunks, hotkey, miner, "huggingface", seq=1)
    plugin.storage_publish_manifest(hf_world.context(miner), hotkey, key, data)
    manifest_commit, upload_commit = hf_world.hub.commits(repo)[:2]
    assert manifest_commit["date"] != upload_commit["date"]

    store = plugin.storage_reader(hf_world.context(hf_world.validator), hotkey)
    try:
        # The plain listing is not expanded (slow on the real Hub): no times.
        assert all(item.stored_at is None for item in store.list_objects())
        timed = {item.key: item for item in store.list_objects_timed()}
        assert set(timed) == set(hf_world.hub.repo_files(repo))
        expected = {key: manifest_commit["date"],
                    **{key_for(hotkey, staged): upload_commit["date"] for staged in batch.files}}
        for path, date in expected.items():
            stored_at = timed[path].stored_at
            assert stored_at is not None and stored_at.tzinfo is not None
            assert abs(stored_at - _hub_time(date)) < timedelta(seconds=1), path
        assert abs(datetime.now(UTC) - timed[key].stored_at) < timedelta(seconds=60)
        assert all(item.stored_at is not None for item in timed.values())
        # Reads use the same (pinned) revision, and the manifest reads back as committed.
        assert store.read_range(key, 10, 510) == data[10:510]
        assert timed[key_for(hotkey, batch.files[0])].sha256 == batch.files[0].sha256
        # The core believes it, read by ranges through this store.
        index = load_manifest(store, list(timed.values()), hotkey, "huggingface")
        assert index is not None and index.key == key and index.manifest.seq == 1
        assert {entry.sha256 for entry in index.whole().chunks} == {f.sha256 for f in batch.files}
    finally:
        store.close()
    fresh = plugin.storage_reader(hf_world.context(hf_world.validator), hotkey)  # timed first: the same answer
    try:
        assert list(fresh.list_objects_timed()) == sorted(timed.values(), key=lambda item: item.key)
        assert list(fresh.list_objects()) == list(fresh.list_objects_timed())  # one listing, kept
    finally:
        fresh.close()


def test_the_dev_hub_reports_the_last_commit_that_changed_each_file(hf_world):
    miner = hf_world.miners[0]
    repo = hf_world.repo_of(miner)
    hf_world.put_raw("hotkey=a/x.bin", b"first")
    hf_world.put_raw("hotkey=a/y.bin", b"second")  # x is unchanged by this commit
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[miner.ss58_address])
    entries = {entry.path: entry for entry in api.list_repo_tree(repo, recursive=True, repo_type="dataset",
                                                                 expand=True) if hasattr(entry, "size")}
    second, first, initial = hf_world.hub.commits(repo)[:3]
    assert entries["hotkey=a/x.bin"].last_commit.oid == first["id"]
    assert entries["hotkey=a/y.bin"].last_commit.oid == second["id"]
    assert entries[".gitattributes"].last_commit.oid == initial["id"]
    assert entries["hotkey=a/y.bin"].last_commit.title == second["title"]
    assert entries["hotkey=a/y.bin"].last_commit.date == _hub_time(second["date"])
    plain = list(api.list_repo_tree(repo, recursive=True, repo_type="dataset"))
    assert all(getattr(entry, "last_commit", None) is None for entry in plain)
