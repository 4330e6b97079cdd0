"""The uploader against the development Hub: one commit per round, back-off, tokens, idempotence."""

from __future__ import annotations

import attrs
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from storage_core.backoff import Backoff
from storage_core.errors import BackendError, InvalidBatchError
from storage_core.layout import key_for
from storage_core.testing.data import make_batch, uris_of
from storage_core_huggingface import uploader


def test_a_round_of_twenty_files_makes_exactly_one_commit(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=2_000, chunks=20, seed=1)
    receipt = uploader.upload(hf_world.context(miner), batch)

    repo = hf_world.repo_of(miner)
    assert hf_world.hub.commit_count(repo) == 1
    assert receipt.location == repo
    assert receipt.revision == hf_world.hub.commits(repo)[0]["id"]
    files = hf_world.hub.repo_files(repo)
    for staged in batch.files:
        assert files[key_for(miner.ss58_address, staged)] == staged.size_bytes
    assert set(files) - {".gitattributes"} == {key_for(miner.ss58_address, s) for s in batch.files}  # data only
    assert sorted((o.key, o.size_bytes, o.sha256) for o in receipt.objects) == sorted(
        (key_for(miner.ss58_address, s), s.size_bytes, s.sha256) for s in batch.files)
    assert not any(o.already_present for o in receipt.objects)


def test_a_second_round_commits_only_new_files_and_reports_old_ones_present(hf_world, tmp_path):
    miner = hf_world.miners[0]
    first = make_batch(tmp_path / "a", miner.ss58_address, rows=300, chunks=2, seed=2)
    second = make_batch(tmp_path / "b", miner.ss58_address, rows=300, chunks=1, seed=3)
    uploader.upload(hf_world.context(miner), first)
    receipt = uploader.upload(hf_world.context(miner), attrs.evolve(first, files=first.files + second.files))
    repo = hf_world.repo_of(miner)
    assert hf_world.hub.commit_count(repo) == 2
    present = {o.sha256: o.already_present for o in receipt.objects}
    assert present == {**{f.sha256: True for f in first.files}, second.files[0].sha256: False}
    # Nothing new at all: no commit, and the revision is the current head.
    again = uploader.upload(hf_world.context(miner), first)
    assert hf_world.hub.commit_count(repo) == 2
    assert again.revision == hf_world.hub.commits(repo)[0]["id"]


def test_a_429_storm_ends_in_one_successful_commit_honouring_retry_after(hf_world, tmp_path, sleep):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=300, chunks=3, seed=4)
    hf_world.hub.fail_next(3, status=429, retry_after=7, match="/commit/")
    receipt = uploader.upload(hf_world.context(miner), batch, backoff=Backoff(attempts=6, base=1.0, sleep=sleep))
    repo = hf_world.repo_of(miner)
    assert sleep.waits == [7.0, 7.0, 7.0]
    assert hf_world.hub.commit_count(repo) == 1
    assert receipt.revision == hf_world.hub.commits(repo)[0]["id"]
    assert hf_world.check(miner.ss58_address, uris_of(batch)).found == frozenset(uris_of(batch))


def test_server_errors_back_off_exponentially_and_give_up_with_a_clear_error(hf_world, tmp_path, sleep):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=5)
    hf_world.hub.fail_next(10, status=503, retry_after=None, match="/commit/")
    with pytest.raises(BackendError, match="HTTP 503") as raised:
        uploader.upload(hf_world.context(miner), batch, backoff=Backoff(attempts=4, base=0.5, cap=1.5, sleep=sleep))
    assert raised.value.retryable
    assert len(sleep.waits) == 3  # full jitter: each wait is drawn below its exponential ceiling
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleep.waits, [0.5, 1.0, 1.5], strict=True))
    assert hf_world.hub.commit_count(hf_world.repo_of(miner)) == 0
    hf_world.hub.clear_failures()  # later tests must not see leftovers


def test_a_wrong_token_gets_a_clear_error_and_nothing_is_committed(hf_world, tmp_path, caplog):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=6)
    with pytest.raises(BackendError, match="refused the token") as raised:
        uploader.upload(hf_world.context(miner, token="hf_not_a_real_token"), batch)
    assert not raised.value.retryable
    assert "hf_not_a_real_token" not in str(raised.value)
    assert "hf_not_a_real_token" not in caplog.text
    assert not hf_world.hub.repo_exists(hf_world.repo_of(miner))


def test_a_miner_token_cannot_write_into_another_miners_repo(hf_world, tmp_path):
    miner_a, miner_b = hf_world.miners
    batch_b = make_batch(tmp_path / "b", miner_b.ss58_address, rows=100, seed=7)
    uploader.upload(hf_world.context(miner_b), batch_b)
    repo_b = hf_world.repo_of(miner_b)
    before = hf_world.hub.repo_files(repo_b)

    # Through the plugin: a batch for B signed by A is refused before any request.
    with pytest.raises(BackendError, match="cannot publish for miner"):
        uploader.upload(hf_world.context(miner_a), attrs.evolve(batch_b))
    # Around the plugin: A's own token, used directly against B's repo, is refused by the Hub.
    api = HfApi(endpoint=hf_world.running.url, token=hf_world.tokens[miner_a.ss58_address])
    with pytest.raises(HfHubHTTPError) as raised:
        api.create_commit(repo_b, [CommitOperationAdd("evil.txt", b"x")], commit_message="x", repo_type="dataset")
    assert raised.value.response.status_code == 403
    assert hf_world.hub.repo_files(repo_b) == before
    assert hf_world.hub.commit_count(repo_b) == 1


def test_a_malformed_batch_is_refused_before_any_request(hf_world, tmp_path):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=50, seed=8)
    requests = hf_world.hub.stats.requests
    with pytest.raises(InvalidBatchError, match="sha256"):
        uploader.upload(hf_world.context(miner), attrs.evolve(batch, files=(attrs.evolve(batch.files[0], sha256="0" * 64),)))
    assert hf_world.hub.stats.requests == requests


def test_the_token_may_come_from_hf_token_instead_of_the_options(hf_world, tmp_path, monkeypatch):
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=9)
    monkeypatch.setenv("HF_TOKEN", hf_world.tokens[miner.ss58_address])
    receipt = uploader.upload(hf_world.context(miner, token=None), batch)
    assert hf_world.hub.commit_count(receipt.location) == 1


def test_health_reports_whether_the_hub_accepts_the_token(hf_world):
    from storage_core_huggingface import plugin

    miner = hf_world.miners[0]
    assert plugin.storage_health(hf_world.context(miner)).ok
    refused = plugin.storage_health(hf_world.context(miner, token="hf_wrong"))
    assert not refused.ok and "hf_wrong" not in refused.detail


def test_xet_is_switched_off_at_runtime_for_a_non_hub_endpoint(hf_world, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # as if the caller had not set the variable
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=100, seed=10)
    receipt = uploader.upload(hf_world.context(miner), batch)
    assert constants.HF_HUB_DISABLE_XET is True
    assert hf_world.hub.commit_count(receipt.location) == 1
