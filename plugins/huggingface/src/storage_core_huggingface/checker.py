"""One miner's dataset repo as the core's checks read it: listed once at a pinned revision, read by ranges.

Transport only. Everything that decides validity (names, checksums, footers, schema, rows) is the core's
(:mod:`storage_core.verify`); this module lists the repo and fetches raw byte ranges, and keeps two kinds
of failure apart:

* ``ObjectError``: one file cannot be read as listed (gone, an odd answer, a short body). The miner made
  the file, so only that file's claims are lost.
* ``BackendError``: the Hub itself failed (refused connection, 5xx or 429 after back-off, time-out, a token
  it refuses). The dispatcher reports "could not validate", never "invalid".

The repo is derived from the hotkey (``identity.repo_id_for``) and only the miner's token can write to
it. What binds its contents to the miner is the core's signed round manifest at its layout path, which
the core's check reads like any other object (:mod:`storage_core.verify.manifest_index`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
from huggingface_hub import hf_hub_url
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectTail
from storage_core_huggingface.client import hf_api, metered
from storage_core_huggingface.http_compat import HTTP_ERRORS, RawResponse, stream_get
from storage_core_huggingface.identity import repo_id_for
from storage_core_huggingface.options import HfOptions
from storage_core_huggingface.retry import status_of
from storage_core_huggingface.uploader import backend_error, backoff_for

logger = logging.getLogger(__name__)
LIBRARY = "storage-core-huggingface"
#: Answers about one file that the miner caused (it is gone or shorter than listed), not the Hub.
OBJECT_STATUSES = frozenset({404, 410, 416})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_HUB_FAILURES: tuple[type[Exception], ...] = (HfHubHTTPError, *HTTP_ERRORS, OSError)


@attrs.frozen
class Snapshot:
    """The repo at one revision: its files by path.

    ``timed``: the files carry ``stored_at`` (the listing was expanded with each file's last commit)."""

    revision: str | None
    files: dict[str, ListedObject]
    timed: bool = False


def commit_time(entry: Any) -> datetime | None:
    """The date of the last commit that changed a listed file (an expanded listing's ``last_commit``), in UTC."""
    date = getattr(getattr(entry, "last_commit", None), "date", None)
    if not isinstance(date, datetime):
        return None
    return date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)


class HfStore:
    """``miner_hotkey``'s repo (derived from the hotkey, never claimed) for the core's checks; every request metered."""

    def __init__(self, options: HfOptions, miner_hotkey: str) -> None:
        self.options = options
        self.miner_hotkey = miner_hotkey
        self.repo_id = repo_id_for(options.namespace, options.repo_prefix, miner_hotkey)
        self.meter = Meter()
        self._backoff = backoff_for(options)
        self._slots = threading.BoundedSemaphore(options.read_concurrency)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    # -- listing ----------------------------------------------------------------------------------

    def listing(self, *, timed: bool = False, revision: str | None = None) -> Snapshot:
        """The repo at ``revision`` (else its current one, resolved), listed once (the manifest is not read here).

        ``timed`` expands the listing with each file's last commit, for ``stored_at``: slow on the real Hub
        (it looks up the history of every file), so only ``list_objects_timed`` asks for it."""
        api = hf_api(self.options)
        try:
            with metered(self.meter):
                if revision is None:
                    info = self._backoff.call(f"read {self.repo_id}", lambda: api.repo_info(
                        self.repo_id, repo_type="dataset", timeout=self.options.timeout_s))
                    revision = info.sha or "main"
                pinned = revision
                try:
                    entries = self._backoff.call(f"list {self.repo_id}", lambda: list(api.list_repo_tree(
                        self.repo_id, recursive=True, repo_type="dataset", revision=pinned, expand=timed)))
                except EntryNotFoundError:
                    entries = []  # an empty repo
        except RepositoryNotFoundError as error:
            if status_of(error) != 404:  # a 401 is about the validator's token, not a missing repo
                raise backend_error("reading", self.repo_id, error) from error
            return Snapshot(None, {})  # no repo: the miner holds nothing here
        except _HUB_FAILURES as error:
            raise backend_error("reading", self.repo_id, error) from error
        files = {
            entry.path: ListedObject(key=entry.path, size=entry.size, sha256=entry.lfs.sha256 if entry.lfs else None,
                                     stored_at=commit_time(entry) if timed else None)
            for entry in entries if isinstance(entry, RepoFile)
        }
        return Snapshot(revision, files, timed=timed)

    def snapshot(self, *, timed: bool = False) -> Snapshot:
        """The listing, made once per store (listed again, expanded, at the same revision when ``timed`` is
        asked after an untimed listing)."""
        with self._lock:
            if self._snapshot is not None and timed and not self._snapshot.timed:
                current = self._snapshot
                if current.revision is None:  # no repo: nothing to time
                    self._snapshot = attrs.evolve(current, timed=True)
                else:
                    listed = self.listing(timed=True, revision=current.revision)
                    self._snapshot = attrs.evolve(current, files=listed.files, timed=True)
            if self._snapshot is None:
                self._snapshot = self.listing(timed=timed)
            return self._snapshot

    def list_objects(self) -> Iterator[ListedObject]:
        yield from sorted(self.snapshot().files.values(), key=lambda listed: listed.key)

    def list_objects_timed(self) -> Iterator[ListedObject]:
        """``list_objects`` with ``stored_at`` = the Hub's time of the last commit that changed each file.

        One expanded listing (``list_repo_tree(expand=True)``), slower than the plain one on the real Hub;
        reads then use the same revision."""
        yield from sorted(self.snapshot(timed=True).files.values(), key=lambda listed: listed.key)

    # -- reading ----------------------------------------------------------------------------------

    def _listed(self, key: str) -> tuple[Snapshot, ListedObject]:
        snapshot = self.snapshot()
        listed = snapshot.files.get(key)
        if listed is None:
            raise ObjectError(key, f"not in {self.repo_id} at revision {snapshot.revision}")
        return snapshot, listed

    def read_tail(self, key: str, length: int) -> ObjectTail:
        snapshot, listed = self._listed(key)
        if length <= 0:
            return ObjectTail(data=b"", size=listed.size, sha256=listed.sha256)
        size, data = self._get(snapshot, key, None, length)
        return ObjectTail(data=data, size=size, sha256=listed.sha256)  # the Hub verified the LFS sha256

    def read_range(self, key: str, start: int, end: int) -> bytes:
        snapshot, listed = self._listed(key)
        if end <= start:
            return b""
        size, data = self._get(snapshot, key, start, end)
        if size != listed.size:
            raise ObjectError(key, f"the Hub serves {size} bytes, the listing said {listed.size}")
        return data

    def _get(self, snapshot: Snapshot, key: str, start: int | None, end: int) -> tuple[int, bytes]:
        """(object size, raw bytes) of ``key`` at the pinned revision: ``start``..``end`` or, with ``start``
        None, the last ``end`` bytes. One ``Range`` request, retried by the back-off policy."""
        url = hf_hub_url(self.repo_id, key, repo_type="dataset", revision=snapshot.revision,
                         endpoint=self.options.endpoint)
        spec = f"bytes=-{end}" if start is None else f"bytes={start}-{end - 1}"
        # identity: a body compressed on the way would not be the stored bytes (and is never decoded here)
        headers = build_hf_headers(token=self.options.token, library_name=LIBRARY,
                                   headers={"Range": spec, "Accept-Encoding": "identity"})

        def attempt() -> tuple[int, bytes]:
            with self._slots, metered(self.meter), stream_get(
                    url, headers=headers, timeout=self.options.timeout_s) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response.response)
                return _body(key, response, start, end)

        try:
            return self._backoff.call(f"read {key} in {self.repo_id}", attempt)
        except HfHubHTTPError as error:
            status = status_of(error)
            if status in OBJECT_STATUSES:
                raise ObjectError(key, f"HTTP {status} for {spec} at revision {snapshot.revision}") from None
            raise backend_error(f"reading {key} in", self.repo_id, error) from error
        except _HUB_FAILURES as error:
            raise backend_error(f"reading {key} in", self.repo_id, error) from error

    def close(self) -> None:
        self._snapshot = None


def _body(key: str, response: RawResponse, start: int | None, end: int) -> tuple[int, bytes]:
    """The raw body of a 206 answer, checked against the range asked for; anything else is the file's problem."""
    if response.status_code != 206:
        raise ObjectError(key, f"the Hub answered a range request with HTTP {response.status_code}")
    content_range = response.headers.get("content-range", "")
    match = _CONTENT_RANGE.fullmatch(content_range)
    if match is None:
        raise ObjectError(key, f"odd Content-Range {content_range[:80]!r}")
    first, last, size = (int(group) for group in match.groups())
    want_first, want_last = (max(0, size - end), size - 1) if start is None else (start, end - 1)
    if (first, last) != (want_first, want_last) or last >= size:
        raise ObjectError(key, f"asked bytes {want_first}-{want_last}, the Hub sent {content_range!r}")
    body = bytearray()
    for chunk in response.iter_raw():  # raw: a declared Content-Encoding never decodes the stored bytes
        body += chunk
        if len(body) > last - first + 1:
            raise ObjectError(key, f"the Hub sent more than the {last - first + 1} bytes of {content_range!r}")
    if len(body) != last - first + 1:
        raise ObjectError(key, f"short read: {len(body)} of {last - first + 1} bytes")
    return size, bytes(body)


def usage(options: HfOptions, miner_hotkey: str) -> tuple[int, int]:
    """(parquet files, bytes) in the miner's repo, from one listing; (0, 0) when it has no repo."""
    files = [listed for listed in HfStore(options, miner_hotkey).listing().files.values()
             if listed.key.endswith(".parquet")]
    return len(files), sum(listed.size for listed in files)
