"""The validator side: which of these URIs does miner M hold? Answered with range reads, never whole files.

For each page of the miner's prefix the checker gets a fresh read grant (signed with the validator's
hotkey): a presigned listing URL for the page and presigned GETs for the keys of the page before. For
each object it reads the tail of the file in one range request (the parquet footer, plus the object's
recorded sha256 from the response headers), checks name, checksum and schema, prunes row groups whose
``uri`` min/max statistics cannot hold a wanted URI, and reads only the ``uri`` column chunks of the rest.
It stops as soon as every asked URI is found. Objects outside the miner's prefix are never counted;
objects that fail their checksum or schema are reported as problems and their URIs do not count.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import logging
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import attrs
import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage_core.footers import implausible_footer
from storage_core.layout import NAME_HASH_CHARS, check_hotkey, miner_prefix
from storage_core.schema import METADATA_SOURCE_KEY, schema_problem
from storage_core.values import IntegrityProblem, ValidationResult
from storage_core_s3 import protocol
from storage_core_s3.client import Backoff, Counters, GrantClient, TransferError, make_http_client, s3_error
from storage_core_s3.grants import b64_to_hex
from storage_core_s3.options import S3Options

log = logging.getLogger(__name__)
BACKEND_ID = "s3"
FOOTER_READ_SIZE = 16 * 1024  # parquet footers of storage-core chunks are a few KiB
MAX_FOOTER_SIZE = 16 * 1024 * 1024
_HASH_BLOCK = 1024 * 1024


@attrs.frozen
class ListedObject:
    key: str
    size: int
    etag: str | None = None


@attrs.frozen
class ListPage:
    objects: tuple[ListedObject, ...]
    next_token: str | None


def parse_list_page(body: bytes) -> ListPage:
    """Parse a ListObjectsV2 answer (namespace-agnostic)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise TransferError(f"the listing is not valid XML: {error}", retryable=True) from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    objects = []
    truncated, token = False, None
    for child in root:
        name = local(child.tag)
        if name == "Contents":
            fields = {local(item.tag): (item.text or "") for item in child}
            objects.append(ListedObject(fields.get("Key", ""), int(fields.get("Size") or 0), fields.get("ETag", "").strip('"') or None))
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = child.text or None
    if truncated and not token:
        raise TransferError("the listing is truncated but has no continuation token", retryable=False)
    return ListPage(tuple(objects), token if truncated else None)


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote object for pyarrow: each read is one HTTP range request.

    ``tail`` holds the object's last bytes (already fetched), which serve the footer reads.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, tail: bytes) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._tail = tail
        self._tail_start = size - len(tail)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def size(self) -> int:
        return self._size

    def read(self, size: int | None = -1) -> bytes:
        start = self._position
        end = self._size if size is None or size < 0 else min(self._size, start + size)
        if start >= end:
            return b""
        if start >= self._tail_start:
            data = self._tail[start - self._tail_start:end - self._tail_start]
        elif end > self._tail_start:
            data = self._fetch(start, self._tail_start) + self._tail[: end - self._tail_start]
        else:
            data = self._fetch(start, end)
        self._position = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _UrlBook:
    """Presigned GET URLs of one validation, refreshed when they expire."""

    def __init__(self, grants: GrantClient, miner_hotkey: str) -> None:
        self.grants = grants
        self.miner_hotkey = miner_hotkey
        self._urls: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, urls: dict[str, str], expires_at: float) -> None:
        with self._lock:
            for key, url in urls.items():
                self._urls[key] = (url, expires_at)

    def get(self, key: str) -> tuple[str, float]:
        with self._lock:
            return self._urls[key]

    def refresh(self, key: str) -> str:
        answer = self.grants.call(protocol.PATH_READ, {"miner_hotkey": self.miner_hotkey, "list": False, "keys": [key]})
        self.add(answer["objects"], answer["expires_at"])
        return answer["objects"][key]


class Checker:
    """Validates one miner's URIs through the grant service (signed with the validator's hotkey)."""

    def __init__(self, options: S3Options, signer: Any, *, http: httpx.Client | None = None,
                 backoff: Backoff | None = None, footer_read_size: int = FOOTER_READ_SIZE) -> None:
        self.options = options
        self._owns_http = http is None
        self.http = http or make_http_client(options)
        self.backoff = backoff or Backoff(options.max_attempts, options.backoff_base, options.backoff_max)
        self.signer = signer
        self.footer_read_size = footer_read_size

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def usage(self, miner_hotkey: str) -> tuple[int, int]:
        """(objects, bytes) under the miner's prefix, from listing pages only (fresh read grant per page)."""
        try:
            check_hotkey(miner_hotkey)
        except ValueError as error:
            raise TransferError(f"cannot list: {error}", retryable=False) from None
        grants = GrantClient(self.options, self.signer, self.http, Counters(), self.backoff)
        prefix = miner_prefix(miner_hotkey)
        objects = size = 0
        token: str | None = None
        while True:
            answer = grants.call(protocol.PATH_READ, {"miner_hotkey": miner_hotkey, "list": True,
                                                      "continuation_token": token, "max_keys": self.options.page_size,
                                                      "keys": []})

            def fetch(url: str = answer["list_url"]) -> ListPage:
                response = self.http.get(url)
                if response.status_code != 200:
                    raise s3_error(response, f"listing of {prefix}")
                return parse_list_page(response.content)

            page = self.backoff.run(f"listing of {prefix}", fetch)
            mine = [item for item in page.objects if item.key.startswith(prefix) and item.key.endswith(".parquet")]
            objects += len(mine)
            size += sum(item.size for item in mine)
            token = page.next_token
            if token is None:
                return objects, size

    def validate(self, miner_hotkey: str, uris: tuple[str, ...] | list[str]) -> ValidationResult:
        try:
            check_hotkey(miner_hotkey)
        except ValueError as error:
            raise TransferError(f"cannot validate: {error}", retryable=False) from None
        counters = Counters()
        grants = GrantClient(self.options, self.signer, self.http, counters, self.backoff)
        run = _Validation(self, grants, counters, miner_hotkey, frozenset(uris))
        return run.execute()


class _Validation:
    def __init__(self, checker: Checker, grants: GrantClient, counters: Counters, miner_hotkey: str,
                 wanted: frozenset[str]) -> None:
        self.checker = checker
        self.options = checker.options
        self.http = checker.http
        self.backoff = checker.backoff
        self.grants = grants
        self.counters = counters
        self.miner_hotkey = miner_hotkey
        self.prefix = miner_prefix(miner_hotkey)
        self.key_pattern = re.compile(
            re.escape(self.prefix) + r"source=([A-Za-z0-9_.-]{1,64})/date=(\d{4}-\d{2}-\d{2})/([0-9a-f]{%d})\.parquet" % NAME_HASH_CHARS
        )
        self.wanted = wanted
        self.found: set[str] = set()
        self.problems: list[IntegrityProblem] = []
        self.scanned = 0
        self.lock = threading.Lock()
        self.urls = _UrlBook(grants, miner_hotkey)

    def remaining(self) -> frozenset[str]:
        with self.lock:
            return self.wanted - self.found

    def execute(self) -> ValidationResult:
        started = time.perf_counter()
        token: str | None = None
        listing = True
        pending: tuple[ListedObject, ...] = ()
        pages = 0
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-check") as pool:
            while self.remaining() and (listing or pending):
                answer = self.grants.call(
                    protocol.PATH_READ,
                    {
                        "miner_hotkey": self.miner_hotkey,
                        "list": listing,
                        "continuation_token": token,
                        "max_keys": self.options.page_size,
                        "keys": [item.key for item in pending],
                    },
                )
                self.urls.add(answer.get("objects") or {}, float(answer["expires_at"]))
                if pending:
                    self._scan_all(pool, pending)
                    pending = ()
                if not listing:
                    break
                page = self._list(answer["list_url"])
                pages += 1
                pending = tuple(item for item in page.objects if item.key.startswith(self.prefix))
                outside = len(page.objects) - len(pending)
                if outside:
                    log.warning("listing of %s returned %d keys outside it; ignored", self.prefix, outside)
                token = page.next_token
                listing = token is not None
        result = ValidationResult(
            backend=BACKEND_ID,
            miner_hotkey=self.miner_hotkey,
            found=frozenset(self.found),
            requests=self.counters.requests + self.counters.grant_requests,
            bytes_read=self.counters.bytes,
            objects_scanned=self.scanned,
            problems=tuple(sorted(self.problems, key=lambda p: p.key)),
        )
        log.info(
            "s3: %s holds %d of %d URIs (%d pages, %d objects read, %d requests, %d bytes, %d problems, %.2fs)",
            self.miner_hotkey, len(result.found), len(self.wanted), pages, result.objects_scanned,
            result.requests, result.bytes_read, len(result.problems), time.perf_counter() - started,
        )
        return result

    def _scan_all(self, pool: ThreadPoolExecutor, items: tuple[ListedObject, ...]) -> None:
        """Scan ``items``, at most ``min(concurrency, URIs still missing)`` at a time.

        Looking for a single URI, objects are read one after the other and the search stops at the first
        hit; many missing URIs keep every worker busy.
        """
        queue = list(items)
        running: set[Future[None]] = set()
        while queue or running:
            limit = max(1, min(self.options.concurrency, len(self.remaining())))
            while queue and len(running) < limit and self.remaining():
                running.add(pool.submit(self._scan, queue.pop(0)))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # re-raise a failed read: the validation cannot conclude

    # -- HTTP ------------------------------------------------------------------------------------

    def _list(self, url: str) -> ListPage:
        def attempt() -> ListPage:
            response = self.http.get(url)
            self.counters.add(requests=1, received=len(response.content))
            if response.status_code != 200:
                raise s3_error(response, f"listing of {self.prefix}")
            return parse_list_page(response.content)

        return self.backoff.run(f"listing of {self.prefix}", attempt)

    def _get(self, key: str, range_header: str | None, what: str) -> httpx.Response:
        refreshed = False

        def attempt() -> httpx.Response:
            nonlocal refreshed
            url, expires_at = self.urls.get(key)
            headers = {"Range": range_header} if range_header else {}
            response = self.http.get(url, headers=headers)
            self.counters.add(requests=1, received=len(response.content))
            if response.status_code == 403 and not refreshed and time.time() > expires_at - 30:
                refreshed = True
                self.urls.refresh(key)
                raise TransferError(f"{what}: the read grant expired", status=403, retryable=True)
            if response.status_code not in (200, 206):
                raise s3_error(response, what)
            return response

        return self.backoff.run(what, attempt)

    def _fetch(self, key: str, start: int, end: int) -> bytes:
        response = self._get(key, f"bytes={start}-{end - 1}", f"range read of {key}")
        data = response.content
        if len(data) != end - start:
            raise TransferError(f"range read of {key}: asked {end - start} bytes, got {len(data)}", retryable=True)
        return data

    def _full_sha256(self, key: str) -> tuple[str, int]:
        """Stream the whole object through sha256 (counted); for objects without a recorded checksum."""
        url, _ = self.urls.get(key)
        digest = hashlib.sha256()
        size = 0
        with self.http.stream("GET", url) as response:
            self.counters.add(requests=1)
            if response.status_code != 200:
                response.read()
                raise s3_error(response, f"checksum read of {key}")
            for block in response.iter_bytes(_HASH_BLOCK):
                digest.update(block)
                size += len(block)
        self.counters.add(received=size)
        return digest.hexdigest(), size

    # -- one object ------------------------------------------------------------------------------

    def _problem(self, key: str, problem: str) -> None:
        with self.lock:
            self.problems.append(IntegrityProblem(key=key, problem=problem))

    def _scan(self, item: ListedObject) -> None:
        remaining = self.remaining()
        if not remaining:
            return
        match = self.key_pattern.fullmatch(item.key)
        if match is None:
            self._problem(item.key, "key is not in the storage-core layout (hotkey=/source=/date=/<sha256>.parquet)")
            return
        source, _date, name_hash = match.groups()
        if item.size < 12:
            self._problem(item.key, f"object is {item.size} bytes: too small to be parquet")
            return
        with self.lock:
            self.scanned += 1
        tail_length = min(item.size, self.checker.footer_read_size)
        try:
            response = self._get(item.key, f"bytes=-{tail_length}", f"footer read of {item.key}")
        except TransferError as error:
            if error.status == 404:  # deleted since the listing: nothing to count
                log.info("%s disappeared after it was listed", item.key)
                return
            raise
        tail = response.content
        total = _content_range_total(response.headers.get("content-range")) or len(tail)
        if response.status_code == 200:
            total = len(tail)
        if total != item.size or len(tail) != min(tail_length, total):
            self._problem(item.key, f"object is {total} bytes but was listed with {item.size}")
            return
        problem = self._checksum_problem(item, name_hash, response.headers)
        if problem:
            self._problem(item.key, problem)
            return
        try:
            fetch = functools.partial(self._fetch, item.key)
            tail = _complete_footer(fetch, item.size, tail)
            metadata = _footer_metadata(tail)
            parquet = pq.ParquetFile(RangeFile(fetch, item.size, tail), metadata=metadata, pre_buffer=False)
            schema = parquet.schema_arrow
            problem = schema_problem(schema)
            declared = (schema.metadata or {}).get(METADATA_SOURCE_KEY, b"").decode("utf-8", "replace")
            if problem is None and declared != source:
                problem = f"file holds source {declared!r} but is stored under source={source}"
            if problem:
                self._problem(item.key, f"schema: {problem}")
                return
            problem = implausible_footer(parquet.metadata, item.size)
            if problem:
                self._problem(item.key, problem)
                return
            groups = _candidate_row_groups(parquet, remaining)
            if not groups:
                return
            column = parquet.read_row_groups(groups, columns=["uri"]).column("uri")
            hits = pc.filter(column, pc.is_in(column, value_set=pa.array(sorted(remaining), pa.string())))
            found = set(hits.to_pylist())
        except TransferError:
            raise
        except (pa.ArrowException, OSError, ValueError) as error:
            self._problem(item.key, f"unreadable parquet: {error}")
            return
        if found:
            with self.lock:
                self.found.update(found)

    def _checksum_problem(self, item: ListedObject, name_hash: str, headers: httpx.Headers) -> str | None:
        mode = self.options.checksum_check
        if mode == "off":
            return None
        checksum = b64_to_hex(headers.get("x-amz-checksum-sha256", ""))  # verified by the store; None if composite
        meta = (headers.get("x-amz-meta-sha256") or "").lower() or None
        if checksum and meta and checksum != meta:
            return f"checksum: the store's sha256 {checksum} differs from the recorded {meta}"
        recorded = checksum or meta
        if mode == "full" or recorded is None:
            actual, size = self._full_sha256(item.key)
            if size != item.size:
                return f"checksum: read {size} bytes, listed {item.size}"
            if recorded and actual != recorded:
                return f"checksum: content sha256 {actual} differs from the recorded {recorded}"
            recorded = actual
        if not recorded.startswith(name_hash):
            return f"checksum: sha256 {recorded} does not match the name {name_hash}"
        return None


def _complete_footer(fetch: Callable[[int, int], bytes], size: int, tail: bytes) -> bytes:
    """``tail`` extended (one more range read) until it holds the whole parquet footer."""
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("not a parquet file (no PAR1 magic at the end)")
    footer_length = int.from_bytes(tail[-8:-4], "little")
    needed = footer_length + 8
    if needed + 4 > size or footer_length > MAX_FOOTER_SIZE:
        raise ValueError(f"parquet footer length {footer_length} does not fit a {size}-byte file")
    if needed > len(tail):
        tail = fetch(size - needed, size - len(tail)) + tail
    return tail


def _footer_metadata(tail: bytes) -> pq.FileMetaData:
    """Parse the footer at the end of ``tail`` without pyarrow reading the file's end again."""
    footer_length = int.from_bytes(tail[-8:-4], "little")
    footer = tail[-(footer_length + 8):]
    return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))


def _content_range_total(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


def _candidate_row_groups(parquet: pq.ParquetFile, remaining: frozenset[str]) -> list[int]:
    """Row groups whose ``uri`` statistics admit at least one wanted URI (all of them without statistics)."""
    metadata = parquet.metadata
    column = next((i for i in range(metadata.num_columns) if metadata.schema.column(i).path == "uri"), None)
    wanted = sorted(remaining)
    groups = []
    for index in range(metadata.num_row_groups):
        statistics = metadata.row_group(index).column(column).statistics if column is not None else None
        if statistics is None or not statistics.has_min_max:
            groups.append(index)
            continue
        low, high = statistics.min, statistics.max
        if isinstance(low, bytes):
            low, high = low.decode("utf-8", "replace"), high.decode("utf-8", "replace")
        # the first wanted URI >= low must also be <= high
        position = _bisect_left(wanted, low)
        if position < len(wanted) and wanted[position] <= high:
            groups.append(index)
    return groups


def _bisect_left(values: list[str], target: str) -> int:
    return bisect.bisect_left(values, target)


def validate(options: S3Options, signer: Any, miner_hotkey: str, uris: tuple[str, ...]) -> ValidationResult:
    """The ``storage_validate`` hook's body."""
    with Checker(options, signer) as checker:
        return checker.validate(miner_hotkey, uris)


__all__ = ["Checker", "ListPage", "ListedObject", "RangeFile", "parse_list_page", "validate"]
