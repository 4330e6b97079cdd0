"""A local Hub-compatible **development** server. It is not the Hugging Face Hub.

Offline there is no Hub, and no Hub-compatible server exists in the package registries, so the HF
backend's tests and benchmarks talk to this one through the real ``huggingface_hub`` client
(``HfApi(endpoint=...)``, ``HfFileSystem(endpoint=...)``). It implements only what the client uses
for dataset repos:

* ``POST /api/repos/create`` (409 when the repo exists, which ``exist_ok=True`` accepts);
* ``POST /api/datasets/{repo}/preupload/{rev}`` (``regular`` or ``lfs`` per file, with the remote oid);
* ``POST /api/datasets/{repo}/commit/{rev}`` (NDJSON: ``header``, ``file``, ``lfsFile``, ``deletedFile``),
  keeping a commit history so tests can count commits;
* ``GET /api/datasets/{repo}/tree/{rev}[/{path}]`` (recursive, cursor-paginated with a ``Link`` header;
  ``expand=true`` adds each file's ``lastCommit``: ``id``, ``title`` and ISO-8601 ``date`` of the last
  commit that changed it, as the Hub does),
  ``POST .../paths-info/{rev}``, ``GET /api/datasets/{repo}[/revision/{rev}]``, ``.../commits/{rev}``;
* ``HEAD``/``GET /datasets/{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, and ``Range`` (206);
* the LFS batch API, a one-time upload URL and the verify call; ``GET /api/whoami-v2``.

Bearer tokens map to users (``TokenGrant``); a token may be limited to given repos. Users may write
to their own namespace and to organisations they belong to. ``DevHub.fail_next`` makes the server
answer an error (429 with ``Retry-After`` by default) a number of times, to test back-off;
``DevHub.stats`` counts requests and bytes. Xet is not implemented: clients must run with
``HF_HUB_DISABLE_XET=1`` (or ``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``).

State lives on disk under ``root`` (blobs by hash, one JSON document per repo), guarded by one lock:
this is a development server, built for correctness and clarity, not for load.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

logger = logging.getLogger(__name__)
HUB_URL = "https://huggingface.co"

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".zip", ".gz", ".zst")
LFS_MIN_SIZE = 10 * 1024 * 1024
DEFAULT_PAGE_SIZE = 1000
_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return _POINTER.format(oid=sha256, size=size).encode()


@attrs.frozen
class TokenGrant:
    """What one bearer token may do: act as ``user``, optionally only on the repos listed."""

    user: str
    repos: frozenset[str] | None = attrs.field(
        default=None, converter=lambda value: None if value is None else frozenset(value)
    )
    write: bool = True


@attrs.define
class HubStats:
    """Requests and bytes the server has answered since the last ``reset``."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_route: Counter[str] = attrs.field(factory=Counter)

    def reset(self) -> None:
        self.requests = self.bytes_sent = self.bytes_received = 0
        self.by_route.clear()


@attrs.define
class _FailurePlan:
    remaining: int
    status: int
    retry_after: int | None
    match: str


class HubError(Exception):
    """An error answer in the Hub's format (``X-Error-Code``/``X-Error-Message`` headers + JSON)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


class DevHub:
    """The state of the development Hub: users, tokens, repos, blobs, stats and failure injection."""

    def __init__(
        self,
        root: Path | str,
        tokens: Mapping[str, TokenGrant] | None = None,
        orgs: Mapping[str, Iterable[str]] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.tokens: dict[str, TokenGrant] = dict(tokens or {})
        self.orgs: dict[str, set[str]] = {name: set(members) for name, members in (orgs or {}).items()}
        self.page_size = page_size
        self.stats = HubStats()
        self._lock = threading.RLock()
        self._failures: list[_FailurePlan] = []
        self._extra_headers: list[tuple[str, dict[str, str]]] = []
        self._upload_tickets: dict[str, tuple[str, str, int]] = {}  # ticket -> (repo_id, oid, size)

    # ----- administration (used by tests) -------------------------------------------------------------
    def add_token(self, token: str, user: str, repos: Iterable[str] | None = None, write: bool = True) -> None:
        with self._lock:
            self.tokens[token] = TokenGrant(user=user, repos=repos, write=write)

    def add_org(self, org: str, members: Iterable[str]) -> None:
        with self._lock:
            self.orgs.setdefault(org, set()).update(members)

    def fail_next(self, count: int, status: int = 429, retry_after: int | None = 0, match: str = "") -> None:
        """Answer ``status`` to the next ``count`` requests whose path contains ``match``."""
        with self._lock:
            self._failures.append(_FailurePlan(count, status, retry_after, match))

    def clear_failures(self) -> None:
        """Forget every pending injected failure and extra header."""
        with self._lock:
            self._failures.clear()
            self._extra_headers.clear()

    def serve_headers(self, match: str, headers: Mapping[str, str]) -> None:
        """Add ``headers`` to every file download whose path contains ``match`` (odd answers a CDN could give)."""
        with self._lock:
            self._extra_headers.append((match, dict(headers)))

    def extra_headers(self, path: str) -> dict[str, str]:
        with self._lock:
            return {k: v for match, headers in self._extra_headers if match in path for k, v in headers.items()}

    def commits(self, repo_id: str) -> list[dict[str, Any]]:
        """The commit history of a repo, newest first (empty when the repo does not exist)."""
        with self._lock:
            repo = self._load(repo_id)
            if repo is None:
                return []
            history, sha = [], repo["refs"].get("main")
            while sha:
                commit = repo["commits"][sha]
                history.append({"id": sha, **{k: v for k, v in commit.items() if k != "tree"}})
                sha = commit["parent"]
            return history

    def commit_count(self, repo_id: str) -> int:
        """Commits made on ``main`` after the repo's initial commit."""
        return max(0, len(self.commits(repo_id)) - 1)

    def repo_files(self, repo_id: str) -> dict[str, int]:
        """Path -> size of every file on ``main``."""
        with self._lock:
            repo = self._load(repo_id)
            if repo is None:
                return {}
            return {path: entry["size"] for path, entry in self._tree(repo, "main").items()}

    def repo_exists(self, repo_id: str) -> bool:
        with self._lock:
            return self._load(repo_id) is not None

    def corrupt_file(self, repo_id: str, path: str, content: bytes) -> None:
        """Replace a file's bytes behind the client's back (to test checksum reporting)."""
        with self._lock:
            repo = self._require_repo(repo_id)
            tree = dict(self._tree(repo, "main"))
            tree[path] = self._store_lfs_entry(content)
            self._new_commit(repo, tree, "server-side corruption", author="devhub")
            self._save(repo_id, repo)

    # ----- failure injection and counting --------------------------------------------------------------
    def take_failure(self, path: str) -> _FailurePlan | None:
        with self._lock:
            for plan in self._failures:
                if plan.remaining > 0 and plan.match in path:
                    plan.remaining -= 1
                    return plan
            self._failures = [plan for plan in self._failures if plan.remaining > 0]
            return None

    # ----- auth ----------------------------------------------------------------------------------------
    def grant_for(self, request: Request) -> TokenGrant | None:
        header = request.headers.get("authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        grant = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return grant

    def _member(self, user: str, namespace: str) -> bool:
        return user == namespace or user in self.orgs.get(namespace, set())

    def can_write(self, grant: TokenGrant | None, repo_id: str) -> bool:
        if grant is None or not grant.write:
            return False
        if grant.repos is not None and repo_id not in grant.repos:
            return False
        return self._member(grant.user, repo_id.split("/", 1)[0])

    def can_read(self, grant: TokenGrant | None, repo: dict[str, Any]) -> bool:
        if not repo["private"]:
            return True
        return grant is not None and self._member(grant.user, repo["id"].split("/", 1)[0])

    # ----- storage ---------------------------------------------------------------------------------------
    def _repo_path(self, repo_id: str) -> Path:
        namespace, name = repo_id.split("/", 1)
        return self.root / "repos" / namespace / f"{name}.json"

    def _load(self, repo_id: str) -> dict[str, Any] | None:
        path = self._repo_path(repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def _save(self, repo_id: str, repo: dict[str, Any]) -> None:
        path = self._repo_path(repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(repo))
        temporary.replace(path)

    def _require_repo(self, repo_id: str, grant: TokenGrant | None = None, *, check_read: bool = False):
        repo = self._load(repo_id)
        if repo is None or (check_read and not self.can_read(grant, repo)):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def blob_path(self, key: str) -> Path:
        return self.root / "blobs" / key

    def _put_blob(self, key: str, content: bytes) -> None:
        path = self.blob_path(key)
        if not path.exists():
            temporary = path.with_suffix(f".tmp{secrets.token_hex(4)}")
            temporary.write_bytes(content)
            temporary.replace(path)

    def _store_regular_entry(self, content: bytes) -> dict[str, Any]:
        oid = git_blob_oid(content)
        self._put_blob(f"git-{oid}", content)
        return {"oid": oid, "size": len(content), "lfs": None, "blob": f"git-{oid}"}

    def _lfs_entry(self, sha256: str, size: int) -> dict[str, Any]:
        pointer = lfs_pointer(sha256, size)
        return {
            "oid": git_blob_oid(pointer),
            "size": size,
            "lfs": {"oid": sha256, "size": size, "pointerSize": len(pointer)},
            "blob": f"lfs-{sha256}",
        }

    def _store_lfs_entry(self, content: bytes) -> dict[str, Any]:
        sha256 = hashlib.sha256(content).hexdigest()
        self._put_blob(f"lfs-{sha256}", content)
        return self._lfs_entry(sha256, len(content))

    @staticmethod
    def _tree(repo: dict[str, Any], revision: str) -> dict[str, dict[str, Any]]:
        sha = repo["refs"].get(revision, revision)
        commit = repo["commits"].get(sha)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit["tree"]

    @staticmethod
    def _resolve_revision(repo: dict[str, Any], revision: str) -> str:
        sha = repo["refs"].get(revision, revision)
        if sha not in repo["commits"]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    @staticmethod
    def _new_commit(repo: dict[str, Any], tree: dict[str, Any], summary: str, author: str) -> str:
        parent = repo["refs"].get("main")
        date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        seed = json.dumps([parent, sorted((p, e["oid"]) for p, e in tree.items()), summary, date, secrets.token_hex(8)])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "tree": tree, "title": summary, "author": author, "date": date}
        repo["refs"]["main"] = sha
        return sha

    # ----- operations ------------------------------------------------------------------------------------
    def create_repo(self, grant: TokenGrant | None, repo_id: str, private: bool) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if grant is None:
                raise HubError(401, "You must be authenticated to create a repo")
            if not self.can_write(grant, repo_id):
                raise HubError(403, f"You don't have the rights to create a dataset under the namespace {repo_id}")
            if self._load(repo_id) is not None:
                return 409, {"error": "You already created this dataset repo", "url": repo_id}
            repo: dict[str, Any] = {"id": repo_id, "private": private, "refs": {}, "commits": {}, "lfs": []}
            attributes = self._store_regular_entry(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n")
            self._new_commit(repo, {".gitattributes": attributes}, "initial commit", author=grant.user)
            self._save(repo_id, repo)
            return 200, {"url": repo_id}

    def preupload(self, grant: TokenGrant | None, repo_id: str, revision: str, files: list[dict[str, Any]]):
        with self._lock:
            repo = self._require_repo(repo_id, grant, check_read=True)
            if not self.can_write(grant, repo_id):
                raise HubError(403, f"You don't have the rights to write to {repo_id}")
            tree = self._tree(repo, revision)
            answer = []
            for item in files:
                path, size = item["path"], int(item["size"])
                lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
                existing = tree.get(path)
                oid = None
                if existing is not None:
                    oid = existing["lfs"]["oid"] if existing["lfs"] else existing["oid"]
                answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
            return {"files": answer, "commitOid": repo["refs"].get("main")}

    def commit(self, grant: TokenGrant | None, repo_id: str, revision: str, lines: list[dict[str, Any]]):
        with self._lock:
            repo = self._require_repo(repo_id, grant, check_read=True)
            if not self.can_write(grant, repo_id):
                raise HubError(403, f"You don't have the rights to create a commit in {repo_id}")
            if revision != "main":
                raise HubError(400, "this development server commits to 'main' only")
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "the commit payload must start with a header line")
            header = lines[0]["value"]
            parent = header.get("parentCommit")
            if parent and parent != repo["refs"].get("main"):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(self._tree(repo, "main"))
            lfs_available = set(repo["lfs"])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, f"invalid path in repo: {path!r}")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"{path}: unsupported encoding {value.get('encoding')!r}")
                    try:
                        content = base64.b64decode(value.get("content", ""), validate=True)
                    except ValueError:
                        raise HubError(400, f"{path}: content is not valid base64") from None
                    tree[path] = self._store_regular_entry(content)
                elif key == "lfsFile":
                    oid, size = value.get("oid"), value.get("size")
                    if not isinstance(oid, str) or not isinstance(size, int):
                        raise HubError(400, f"{path}: lfsFile needs a string oid and an integer size")
                    if oid not in lfs_available or not self.blob_path(f"lfs-{oid}").is_file():
                        raise HubError(400, f"{path}: LFS object {oid} was not uploaded to this repo")
                    tree[path] = self._lfs_entry(oid, int(size))
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"{path}: A file with this name doesn't exist", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    tree = {p: e for p, e in tree.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            sha = self._new_commit(repo, tree, header.get("summary", ""), author=grant.user if grant else "")
            self._save(repo_id, repo)
            return sha

    def lfs_batch(self, grant: TokenGrant | None, repo_id: str, body: dict[str, Any], base_url: str):
        with self._lock:
            self._require_repo(repo_id, grant, check_read=True)
            if body.get("operation") != "upload":
                raise HubError(400, "this development server supports only LFS uploads")
            if not self.can_write(grant, repo_id):
                raise HubError(403, f"You don't have the rights to upload LFS objects to {repo_id}")
            repo = self._require_repo(repo_id)
            objects = []
            for item in body.get("objects", []):
                oid, size = item["oid"], int(item["size"])
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid in repo["lfs"] and self.blob_path(f"lfs-{oid}").is_file():
                    objects.append(answer)  # already present: no actions
                    continue
                ticket = secrets.token_urlsafe(24)
                self._upload_tickets[ticket] = (repo_id, oid, size)
                answer["actions"] = {
                    "upload": {"href": f"{base_url}lfs-upload/{ticket}", "header": {}},
                    "verify": {"href": f"{base_url}lfs-verify/{quote(repo_id, safe='/')}", "header": {}},
                }
                objects.append(answer)
            return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_upload(self, ticket: str, content: bytes) -> None:
        with self._lock:
            claim = self._upload_tickets.pop(ticket, None)
            if claim is None:
                raise HubError(403, "unknown or already used LFS upload URL")
            repo_id, oid, size = claim
            if len(content) != size or hashlib.sha256(content).hexdigest() != oid:
                raise HubError(400, f"LFS object does not match its oid {oid} and size {size}")
            self._put_blob(f"lfs-{oid}", content)
            repo = self._require_repo(repo_id)
            if oid not in repo["lfs"]:
                repo["lfs"].append(oid)
                self._save(repo_id, repo)

    def lfs_verify(self, grant: TokenGrant | None, repo_id: str, oid: str, size: int) -> None:
        with self._lock:
            repo = self._require_repo(repo_id, grant, check_read=True)
            path = self.blob_path(f"lfs-{oid}")
            if oid not in repo["lfs"] or not path.is_file() or path.stat().st_size != size:
                raise HubError(404, f"LFS object {oid} not found")

    @staticmethod
    def last_commits(repo: dict[str, Any], sha: str, paths: Iterable[str]) -> dict[str, dict[str, str]]:
        """path -> ``{"id", "title", "date"}`` of the last commit, at or before ``sha``, that changed each path
        (added it, or changed its content); walks the history from ``sha`` until every path is found."""
        commits = repo["commits"]
        tree = commits[sha]["tree"]
        pending = {path for path in paths if path in tree}
        found: dict[str, dict[str, str]] = {}
        current = sha
        while pending and current:
            commit = commits[current]
            parent = commit["parent"]
            before = commits[parent]["tree"] if parent else {}
            changed = {path for path in pending if before.get(path) != tree[path]}
            for path in changed:
                found[path] = {"id": current, "title": commit["title"], "date": commit["date"]}
            pending -= changed
            current = parent
        return found

    def snapshot(self, grant: TokenGrant | None, repo_id: str, revision: str):
        """(repo, commit sha, tree) for a read; raises the Hub's 404s."""
        with self._lock:
            repo = self._require_repo(repo_id, grant, check_read=True)
            sha = self._resolve_revision(repo, revision)
            return repo, sha, repo["commits"][sha]["tree"]


# ----- HTTP layer ---------------------------------------------------------------------------------------
def _repo_id(request: Request) -> str:
    return f"{request.path_params['namespace']}/{request.path_params['name']}"


def _entry_json(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        item["lfs"] = entry["lfs"]
    return item


def _listing(tree: Mapping[str, dict[str, Any]], base: str, recursive: bool) -> list[dict[str, Any]]:
    """Files and folders under ``base`` (all depths or direct children), sorted by path."""
    prefix = base.rstrip("/") + "/" if base else ""
    items: dict[str, dict[str, Any]] = {}
    for path, entry in tree.items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            folder = prefix + "/".join(parts[:depth])
            if recursive or depth == 1:
                items.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                          "path": folder})
        if recursive or len(parts) == 1:
            items[path] = _entry_json(path, entry)
    return [items[key] for key in sorted(items)]


def create_app(hub: DevHub) -> Any:
    """The ASGI application serving ``hub`` (Starlette routes inside a counting middleware)."""

    async def whoami(request: Request) -> Response:
        grant = hub.grant_for(request)
        if grant is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"name": org} for org, members in hub.orgs.items() if grant.user in members]
        role = "fineGrained" if grant.repos is not None else ("write" if grant.write else "read")
        return JSONResponse({"type": "user", "name": grant.user, "orgs": orgs,
                             "auth": {"type": "access_token", "accessToken": {"role": role}}})

    async def create_repo(request: Request) -> Response:
        body = await request.json()
        if body.get("type", "model") != "dataset":
            raise HubError(400, "this development server hosts dataset repos only")
        grant = hub.grant_for(request)
        namespace = body.get("organization") or (grant.user if grant else "")
        repo_id = f"{namespace}/{body['name']}"
        private = body.get("private") or body.get("visibility") == "private"
        status, payload = hub.create_repo(grant, repo_id, bool(private))
        payload["url"] = f"{str(request.base_url).rstrip('/')}/datasets/{repo_id}"
        payload["name"] = repo_id
        return JSONResponse(payload, status_code=status)

    async def preupload(request: Request) -> Response:
        body = await request.json()
        answer = hub.preupload(hub.grant_for(request), _repo_id(request), request.path_params["revision"],
                               body.get("files", []))
        return JSONResponse(answer)

    async def commit(request: Request) -> Response:
        raw = await request.body()
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise HubError(400, f"commit payload is not NDJSON: {error}") from error
        repo_id = _repo_id(request)
        sha = hub.commit(hub.grant_for(request), repo_id, request.path_params["revision"], lines)
        # The Hub's canonical URL, as the Hub (or a proxy in front of it) answers: huggingface_hub 0.2x parses
        # CommitInfo.commit_url against the default endpoint only, and 2.x maps it onto the configured one.
        return JSONResponse({"success": True, "commitOid": sha,
                             "commitUrl": f"{HUB_URL}/datasets/{repo_id}/commit/{sha}", "pullRequestUrl": None})

    async def tree(request: Request) -> Response:
        repo_id = _repo_id(request)
        repo, sha, files = hub.snapshot(hub.grant_for(request), repo_id, request.path_params["revision"])
        base = request.path_params.get("path", "").strip("/")
        recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
        expand = request.query_params.get("expand", "false").lower() in ("1", "true")
        if base and base not in files and not any(p.startswith(base + "/") for p in files):
            raise HubError(404, f"{base} does not exist on {request.path_params['revision']}", "EntryNotFound")
        items = _listing(files, base, recursive)
        start = int(request.query_params.get("cursor", "0") or 0)
        page = items[start:start + hub.page_size]
        if expand:  # the files' last commits (folders get none here)
            last = hub.last_commits(repo, sha, [item["path"] for item in page if item["type"] == "file"])
            page = [{**item, "lastCommit": last[item["path"]]} if item["path"] in last else item for item in page]
        headers = {}
        if start + hub.page_size < len(items):
            params = dict(request.query_params)
            params["cursor"] = str(start + hub.page_size)
            headers["Link"] = f'<{request.url.replace(query=urlencode(params))}>; rel="next"'
        return JSONResponse(page, headers=headers)

    async def paths_info(request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        _, _, files = hub.snapshot(hub.grant_for(request), _repo_id(request), request.path_params["revision"])
        answer = []
        for path in form.get("paths", []):
            if path in files:
                answer.append(_entry_json(path, files[path]))
            elif any(p.startswith(path.rstrip("/") + "/") for p in files):
                answer.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path})
        return JSONResponse(answer)

    async def repo_info(request: Request) -> Response:
        repo_id = _repo_id(request)
        revision = request.path_params.get("revision", "main")
        repo, sha, files = hub.snapshot(hub.grant_for(request), repo_id, revision)
        commit_data = repo["commits"][sha]
        return JSONResponse({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
            "sha": sha, "private": repo["private"], "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [], "lastModified": commit_data["date"], "createdAt": commit_data["date"],
            "siblings": [{"rfilename": path} for path in sorted(files)],
        })

    async def list_commits(request: Request) -> Response:
        repo_id = _repo_id(request)
        hub.snapshot(hub.grant_for(request), repo_id, request.path_params["revision"])
        return JSONResponse([
            {"id": c["id"], "title": c["title"], "message": "", "authors": [{"user": c["author"]}], "date": c["date"]}
            for c in hub.commits(repo_id)
        ])

    async def resolve(request: Request) -> Response:
        repo_id = _repo_id(request)
        path = request.path_params["path"]
        _, sha, files = hub.snapshot(hub.grant_for(request), repo_id, request.path_params["revision"])
        entry = files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        blob = hub.blob_path(entry["blob"])
        size = entry["size"]
        etag = entry["lfs"]["oid"] if entry["lfs"] else entry["oid"]
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        range_header = request.headers.get("range")
        if range_header:
            start, end = _parse_range(range_header, size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        headers.update(hub.extra_headers(request.url.path))
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        with open(blob, "rb") as handle:
            handle.seek(start)
            content = handle.read(length)
        return Response(content, status_code=status, headers=headers, media_type="application/octet-stream")

    async def lfs_batch(request: Request) -> Response:
        body = json.loads(await request.body())
        answer = hub.lfs_batch(hub.grant_for(request), _repo_id(request), body, str(request.base_url))
        return JSONResponse(answer, media_type="application/vnd.git-lfs+json")

    async def lfs_upload(request: Request) -> Response:
        hub.lfs_upload(request.path_params["ticket"], await request.body())
        return Response(status_code=200)

    async def lfs_verify(request: Request) -> Response:
        body = await request.json()
        hub.lfs_verify(hub.grant_for(request), _repo_id(request), body["oid"], int(body["size"]))
        return JSONResponse({"success": True})

    repo = "/{namespace}/{name}"
    routes = [
        Route("/api/whoami-v2", whoami),
        Route("/api/repos/create", create_repo, methods=["POST"]),
        Route(f"/api/datasets{repo}/preupload/{{revision}}", preupload, methods=["POST"]),
        Route(f"/api/datasets{repo}/commit/{{revision}}", commit, methods=["POST"]),
        Route(f"/api/datasets{repo}/tree/{{revision}}", tree),
        Route(f"/api/datasets{repo}/tree/{{revision}}/{{path:path}}", tree),
        Route(f"/api/datasets{repo}/paths-info/{{revision}}", paths_info, methods=["POST"]),
        Route(f"/api/datasets{repo}/commits/{{revision}}", list_commits),
        Route(f"/api/datasets{repo}/revision/{{revision}}", repo_info),
        Route(f"/api/datasets{repo}", repo_info),
        Route(f"/datasets{repo}/resolve/{{revision}}/{{path:path}}", resolve, methods=["GET", "HEAD"]),
        Route("/datasets/{namespace}/{name}.git/info/lfs/objects/batch", lfs_batch, methods=["POST"]),
        Route("/lfs-upload/{ticket}", lfs_upload, methods=["PUT"]),
        Route(f"/lfs-verify{repo}", lfs_verify, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HubError: lambda _request, error: error.response()})
    return _CountingMiddleware(app, hub)


def _parse_range(header: str, size: int) -> tuple[int, int]:
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise HubError(416, f"unsupported Range header {header!r}")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        raise HubError(416, f"malformed Range header {header!r}") from None
    if start >= size or start > end:
        raise HubError(416, f"Range {header!r} is not satisfiable for {size} bytes")
    return start, end


_ROUTE_KINDS = ("/preupload/", "/commit/", "/tree/", "/paths-info/", "/commits/", "/resolve/", "/lfs-upload/",
                "/lfs-verify/", "/info/lfs/", "/repos/create", "/whoami")


def _route_kind(path: str) -> str:
    """A short name for a request path, for ``HubStats.by_route``."""
    for marker in _ROUTE_KINDS:
        if marker in path:
            return marker.strip("/")
    return "repo-info" if path.startswith("/api/datasets/") else path


class _CountingMiddleware:
    """Counts requests and bytes, and answers injected failures before routing."""

    def __init__(self, app: Any, hub: DevHub) -> None:
        self.app = app
        self.hub = hub
        self.state = hub  # so callers holding the ASGI app can reach the hub

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hub = self.hub
        path = scope["path"]
        route = f"{scope['method']} {_route_kind(path)}"
        with hub._lock:
            hub.stats.requests += 1
            hub.stats.by_route[route] += 1
        plan = hub.take_failure(path)
        if plan is not None:
            headers = {"X-Error-Message": f"injected failure {plan.status}"}
            if plan.retry_after is not None:
                headers["Retry-After"] = str(plan.retry_after)
            response = JSONResponse({"error": "Too many requests (development server)"}, plan.status, headers)
            await response(scope, receive, send)
            return

        async def counting_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                with hub._lock:
                    hub.stats.bytes_received += len(message.get("body", b""))
            return message

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                with hub._lock:
                    hub.stats.bytes_sent += len(message.get("body", b""))
            await send(message)

        await self.app(scope, counting_receive, counting_send)


# ----- runner -------------------------------------------------------------------------------------------
@attrs.define
class RunningHub:
    """A development Hub served by uvicorn on 127.0.0.1 in a background thread."""

    url: str
    hub: DevHub
    _server: uvicorn.Server = attrs.field(repr=False)
    _thread: threading.Thread = attrs.field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the development Hub did not stop in time")

    def __enter__(self) -> RunningHub:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_hub(hub: DevHub, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> RunningHub:
    """Serve ``hub`` on ``host`` (loopback only by default) and a free port; return once it answers."""
    config = uvicorn.Config(create_app(hub), host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="devhub-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the development Hub failed to start")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://{host}:{bound_port}"
    logger.info("development Hub serving %s at %s", hub.root, url)
    return RunningHub(url=url, hub=hub, server=server, thread=thread)


def main(argv: list[str] | None = None) -> None:
    """``python -m storage_core_huggingface.testing.hub_server --root DIR --token TOKEN=USER[:repo,...]``."""
    parser = argparse.ArgumentParser(description="Run the local Hub-compatible development server (not the Hub).")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], help="TOKEN=USER or TOKEN=USER:ns/repo,ns/repo2")
    parser.add_argument("--org", action="append", default=[], help="ORG=user1,user2")
    args = parser.parse_args(argv)
    tokens = {}
    for item in args.token:
        token, _, rest = item.partition("=")
        user, _, repos = rest.partition(":")
        tokens[token] = TokenGrant(user=user, repos=repos.split(",") if repos else None)
    orgs = {org: members.split(",") for org, _, members in (item.partition("=") for item in args.org)}
    running = start_hub(DevHub(args.root, tokens=tokens, orgs=orgs), port=args.port)
    print(running.url, flush=True)  # noqa: T201 - the CLI's one output: where to connect
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()


if __name__ == "__main__":
    main()
