"""The development Hub speaks the protocol the real client expects (checked with httpx and HfApi)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from storage_core_huggingface.testing.hub_server import DevHub, start_hub


@pytest.fixture
def api_world(dev_hub):
    hub = dev_hub.hub
    namespace = f"server-{len(hub.orgs)}"
    hub.add_token(f"tok-{namespace}", f"owner-{namespace}")
    hub.add_token(f"scoped-{namespace}", f"owner-{namespace}", repos=[f"{namespace}/only"])
    hub.add_org(namespace, [f"owner-{namespace}"])
    return dev_hub, namespace, HfApi(endpoint=dev_hub.url, token=f"tok-{namespace}")


def test_create_repo_is_409_when_it_exists_and_exist_ok_accepts_it(api_world):
    running, namespace, api = api_world
    api.create_repo(f"{namespace}/r", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as raised:
        api.create_repo(f"{namespace}/r", repo_type="dataset")
    assert raised.value.response.status_code == 409
    assert api.create_repo(f"{namespace}/r", repo_type="dataset", exist_ok=True).repo_id == f"{namespace}/r"


def test_resolve_serves_lfs_headers_and_ranges(api_world):
    running, namespace, api = api_world
    repo = f"{namespace}/files"
    api.create_repo(repo, repo_type="dataset")
    content = bytes(range(256)) * 40
    info = api.create_commit(repo, [CommitOperationAdd("d/a.parquet", content), CommitOperationAdd("b.txt", b"hi")],
                             commit_message="add", repo_type="dataset")
    url = f"{running.url}/datasets/{repo}/resolve/main/d/a.parquet"
    head = httpx.head(url)
    sha = hashlib.sha256(content).hexdigest()
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == info.oid
    assert head.headers["x-linked-etag"] == f'"{sha}"' and head.headers["x-linked-size"] == str(len(content))
    assert head.headers["content-length"] == str(len(content))
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(content)}"
    assert httpx.get(url, headers={"Range": "bytes=-10"}).content == content[-10:]
    assert httpx.get(url, headers={"Range": f"bytes={len(content)}-"}).status_code == 416
    assert httpx.get(url, headers={"Range": "bytes=a-b"}).status_code == 416
    regular = httpx.head(f"{running.url}/datasets/{repo}/resolve/main/b.txt")
    assert "x-linked-etag" not in regular.headers and regular.headers["content-length"] == "2"


def test_a_malformed_commit_is_refused_and_changes_nothing(api_world):
    running, namespace, api = api_world
    repo = f"{namespace}/strict"
    api.create_repo(repo, repo_type="dataset")
    before = running.hub.commits(repo)
    url = f"{running.url}/api/datasets/{repo}/commit/main"
    headers = {"Authorization": f"Bearer tok-{namespace}", "Content-Type": "application/x-ndjson"}
    bodies = [
        b"not json\n",
        b'{"key":"file","value":{"path":"a","content":"x","encoding":"base64"}}\n',  # no header line
        b'{"key":"header","value":{"summary":"s"}}\n{"key":"lfsFile","value":{"path":"a.parquet","oid":"0"}}\n',
        b'{"key":"header","value":{"summary":"s"}}\n{"key":"file","value":{"path":"../x","content":"","encoding":"base64"}}\n',
        b'{"key":"header","value":{"summary":"s"}}\n{"key":"deletedFile","value":{"path":"missing"}}\n',
    ]
    for body in bodies:
        answer = httpx.post(url, content=body, headers=headers)
        assert 400 <= answer.status_code < 500, (body, answer.status_code)
        assert answer.json()["error"]
    assert running.hub.commits(repo) == before


def test_tree_listing_is_paginated_when_large(api_world):
    running, namespace, api = api_world
    repo = f"{namespace}/many"
    api.create_repo(repo, repo_type="dataset")
    api.create_commit(repo, [CommitOperationAdd(f"a/{i:02d}.txt", b"x%d" % i) for i in range(12)],
                      commit_message="add", repo_type="dataset")
    running.hub.page_size = 5
    try:
        running.hub.stats.reset()
        paths = [entry.path for entry in api.list_repo_tree(repo, recursive=True, repo_type="dataset")]
        assert running.hub.stats.by_route["GET tree"] == 3
    finally:
        running.hub.page_size = 1000
    assert paths == [".gitattributes", "a"] + [f"a/{i:02d}.txt" for i in range(12)]


def test_tokens_are_checked_and_scoped(api_world):
    running, namespace, api = api_world
    with pytest.raises(HfHubHTTPError) as raised:
        HfApi(endpoint=running.url, token="nope").create_repo(f"{namespace}/x", repo_type="dataset")
    assert raised.value.response.status_code == 401
    scoped = HfApi(endpoint=running.url, token=f"scoped-{namespace}")
    scoped.create_repo(f"{namespace}/only", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as raised:
        scoped.create_repo(f"{namespace}/other", repo_type="dataset")
    assert raised.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as raised:
        api.create_repo("someone-else/x", repo_type="dataset")
    assert raised.value.response.status_code == 403


def test_private_repos_are_hidden_from_strangers(api_world):
    running, namespace, api = api_world
    api.create_repo(f"{namespace}/secret", repo_type="dataset", private=True)
    assert api.repo_info(f"{namespace}/secret", repo_type="dataset").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=running.url, token=False).repo_info(f"{namespace}/secret", repo_type="dataset")


def test_injected_429_carries_retry_after(dev_hub):
    dev_hub.hub.fail_next(1, status=429, retry_after=3, match="/whoami")
    answer = httpx.get(f"{dev_hub.url}/api/whoami-v2")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    assert httpx.get(f"{dev_hub.url}/api/whoami-v2").status_code == 401


def test_state_survives_a_restart(tmp_path):
    hub = DevHub(tmp_path, tokens={})
    hub.add_token("t", "u")
    with start_hub(hub) as running:
        api = HfApi(endpoint=running.url, token="t")
        api.create_repo("u/keep", repo_type="dataset")
        api.create_commit("u/keep", [CommitOperationAdd("k.parquet", b"data" * 10)], commit_message="c",
                          repo_type="dataset")
    again = DevHub(tmp_path, tokens={"t": hub.tokens["t"]})
    with start_hub(again) as running:
        assert again.repo_files("u/keep") == {".gitattributes": 46, "k.parquet": 40}
        assert httpx.get(f"{running.url}/datasets/u/keep/resolve/main/k.parquet").content == b"data" * 10
