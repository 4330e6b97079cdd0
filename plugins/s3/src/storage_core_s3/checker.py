"""The validator side of S3: one miner's prefix as an ``ObjectStore`` for the core's checks. Transport only.

What the objects prove (names, checksums, footers, schema, rows) is decided by ``storage_core.verify``;
this module lists and reads bytes. For each listing page it gets a fresh read grant signed with the
validator's hotkey: a presigned ListObjectsV2 URL for the page and presigned GETs for the objects of the
page before, renewed when they expire. Every read is one ranged GET of RAW stored bytes: a miner can store
an object with ``Content-Encoding: gzip`` (or any other header), and a reader that decodes would either
see other bytes than the store verified or fail on the whole validation. So:

* ``ObjectError`` (that object's claims are invalid, the check goes on): a 404 or 416 after listing, a
  ``Content-Encoding`` other than identity, a ``Content-Range`` other than the one asked for, a short or
  long body, an unparsable header, any other 4xx.
* ``TransferError`` (a ``BackendError``: "could not validate"): connection errors, time-outs, 5xx and
  throttling after retries, grant-service failures, redirects, and a 403 that persists on a fresh grant.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx

from storage_core.layout import miner_prefix, parse_key, parse_manifest_key
from storage_core.verify.store import ListedObject, Meter, ObjectError, ObjectTail
from storage_core_s3 import protocol
from storage_core_s3.checksums import b64_to_hex
from storage_core_s3.client import Backoff, Counters, GrantClient, TransferError, make_http_client, s3_error
from storage_core_s3.options import S3Options

log = logging.getLogger(__name__)
BACKEND_ID = "s3"
#: A ListObjectsV2 page of 1000 keys is a few hundred KB; more is not a listing.
MAX_LISTING_BYTES = 16 * 1024 * 1024
_ERROR_BODY_BYTES = 4096
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class ListPage:
    objects: tuple[ListedObject, ...]
    next_token: str | None


def parse_last_modified(key: str, value: str | None) -> datetime | None:
    """A listing's ``LastModified`` (ISO 8601, the time the store recorded the object) as an aware UTC datetime.

    None when the store gives none; an unparsable one is the store's failure, like an unparsable size.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TransferError(f"the listing gives {key!r} the LastModified {text[:40]!r}", retryable=False) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_list_page(body: bytes) -> ListPage:
    """Parse a ListObjectsV2 answer (namespace-agnostic); a malformed one is the store's failure."""
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
            size = fields.get("Size", "").strip()
            if not size.isdigit():
                raise TransferError(f"the listing gives {fields.get('Key')!r} the size {size!r}", retryable=False)
            key = fields.get("Key", "")
            objects.append(ListedObject(key, int(size), stored_at=parse_last_modified(key, fields.get("LastModified"))))
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = child.text or None
    if truncated and not token:
        raise TransferError("the listing is truncated but has no continuation token", retryable=False)
    return ListPage(tuple(objects), token if truncated else None)


class _Metered(Counters):
    """Counters that also feed the store's meter: the core reports storage and grant requests alike."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    def add(self, requests: int = 0, received: int = 0, grant_requests: int = 0) -> None:
        super().add(requests, received, grant_requests)
        self.meter.add(requests=requests + grant_requests, bytes_read=received)


class S3Store:
    """One miner's prefix in the bucket, read through read grants (the validator's hotkey signs them)."""

    def __init__(self, options: S3Options, signer: Any, miner_hotkey: str, *, http: httpx.Client | None = None,
                 backoff: Backoff | None = None) -> None:
        try:
            self.prefix = miner_prefix(miner_hotkey)
        except ValueError as error:
            raise TransferError(f"cannot read: {error}", retryable=False) from None
        self.options = options
        self.miner_hotkey = miner_hotkey
        self.meter = Meter()
        self.counters = _Metered(self.meter)
        self._owns_http = http is None
        self.http = http or make_http_client(options)
        self.backoff = backoff or Backoff(options.max_attempts, options.backoff_base, options.backoff_max)
        self.grants = GrantClient(options, signer, self.http, self.counters, self.backoff)
        self._urls: dict[str, tuple[str, float]] = {}  # key -> (presigned GET, expires_at)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> S3Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- listing ---------------------------------------------------------------------------------

    def list_objects(self) -> Iterator[ListedObject]:
        """Every object under the prefix, page by page (GET URLs of each page come with the next grant)."""
        return self._listing(presign=True)

    def list_objects_timed(self) -> Iterator[ListedObject]:
        """The same listing: every object already carries ``stored_at`` (S3's LastModified costs nothing)."""
        return self.list_objects()

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) of the miner's parquet objects, from listing pages only."""
        objects = size = 0
        for item in self._listing(presign=False):
            if item.key.endswith(".parquet"):
                objects += 1
                size += item.size
        return objects, size

    def _listing(self, presign: bool) -> Iterator[ListedObject]:
        token: str | None = None
        pending: list[str] = []
        while True:
            answer = self._grant(pending, list_page=True, token=token)
            page = self._list(answer.get("list_url"))
            mine = [item for item in page.objects if item.key.startswith(self.prefix)]
            if len(mine) != len(page.objects):
                log.warning("listing of %s returned %d keys outside it; ignored", self.prefix, len(page.objects) - len(mine))
            # Presign only what the core may open (its key parsers: chunks and round manifests); odd keys never
            # reach a grant request.
            pending = [item.key for item in mine
                       if presign and (parse_key(item.key) is not None or parse_manifest_key(item.key) is not None)]
            yield from mine
            if page.next_token is None:
                break
            if page.next_token == token:
                raise TransferError(f"listing of {self.prefix} does not advance (same continuation token)", retryable=False)
            token = page.next_token
        if pending:
            self._grant(pending)

    def _grant(self, keys: list[str], *, list_page: bool = False, token: str | None = None) -> dict[str, Any]:
        """One read grant: a listing URL when ``list_page``, GET URLs for ``keys`` (remembered until expiry)."""
        payload: dict[str, Any] = {"miner_hotkey": self.miner_hotkey, "list": list_page, "keys": keys}
        if list_page:
            payload.update(continuation_token=token, max_keys=self.options.page_size)
        answer = self.grants.call(protocol.PATH_READ, payload)
        urls, expires_at = answer.get("objects") or {}, answer.get("expires_at")
        if (not isinstance(urls, dict) or not isinstance(expires_at, (int, float)) or set(urls) != set(keys)
                or not all(isinstance(url, str) for url in urls.values())):
            raise TransferError("the grant service's read grant does not match the request", retryable=False)
        with self._lock:
            self._urls.update((key, (url, float(expires_at))) for key, url in urls.items())
        return answer

    def _list(self, url: object) -> ListPage:
        what = f"listing of {self.prefix}"
        if not isinstance(url, str):
            raise TransferError(f"{what}: the read grant has no listing URL", retryable=False)

        def attempt() -> ListPage:
            with self._send(url, None) as response:
                if response.status_code != 200:
                    raise s3_error(response, what, self._raw(response, _ERROR_BODY_BYTES))
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise TransferError(f"{what}: answered with Content-Encoding {encoding!r}", retryable=False)
                body = self._raw(response, MAX_LISTING_BYTES)
            if len(body) > MAX_LISTING_BYTES:
                raise TransferError(f"{what}: a page over {MAX_LISTING_BYTES} bytes", retryable=False)
            return parse_list_page(body)

        return self.backoff.run(what, attempt)

    # -- reads -----------------------------------------------------------------------------------

    def read_tail(self, key: str, length: int) -> ObjectTail:
        """The last ``length`` bytes in one ``Range: bytes=-N`` GET, the size, and the store's sha256."""
        if length < 1:
            raise ValueError(f"tail length must be positive, got {length}")
        data, total, headers = self._get(key, f"bytes=-{length}", lambda total: (max(0, total - length), total - 1))
        return ObjectTail(data=data, size=total, sha256=self._recorded_sha256(key, headers))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) in one ranged GET."""
        if end <= start:
            return b""
        data, _, _ = self._get(key, f"bytes={start}-{end - 1}", lambda _total: (start, end - 1))
        return data

    def _recorded_sha256(self, key: str, headers: httpx.Headers) -> str | None:
        """The store-verified ``x-amz-checksum-sha256`` (None when composite), else ``x-amz-meta-sha256``.

        None under ``checksum_check=full``: the core then hashes the whole object itself.
        """
        checksum_header = headers.get("x-amz-checksum-sha256")
        checksum = b64_to_hex(checksum_header.strip()) if checksum_header else None
        meta_header = headers.get("x-amz-meta-sha256")
        meta = meta_header.strip().lower() if meta_header is not None else None
        if meta is not None and not _SHA256_HEX.fullmatch(meta):
            raise ObjectError(key, f"unparsable x-amz-meta-sha256 header {meta_header[:80]!r}")
        if checksum and meta and checksum != meta:
            raise ObjectError(key, f"checksum: the store's sha256 {checksum} differs from the recorded {meta}")
        return None if self.options.checksum_check == "full" else checksum or meta

    def _get(self, key: str, byte_range: str, expected: Callable[[int], tuple[int, int]]) -> tuple[bytes, int, httpx.Headers]:
        """One ranged GET of raw bytes, checked against ``expected(total)`` = (first, last) byte asked for."""
        if not key.startswith(self.prefix):
            raise ObjectError(key, f"not under the miner's prefix {self.prefix}")
        what = f"read of {key} ({byte_range})"
        renew = False

        def attempt() -> tuple[bytes, int, httpx.Headers]:
            nonlocal renew
            url, fresh = self._url(key, renew)
            renew = False
            with self._send(url, byte_range) as response:
                status = response.status_code
                if status in (200, 206):
                    return self._answer(key, response, expected)
                if status in (401, 403):
                    if fresh:  # the grant service just signed it: the store or the service is wrong, not the miner
                        raise TransferError(f"{what}: HTTP {status} on a fresh read grant", status=status, retryable=False)
                    renew = True
                    raise TransferError(f"{what}: HTTP {status}; renewing the read grant", status=status, retryable=True)
                if 300 <= status < 400:  # S3 redirects for a bucket (wrong region, endpoint), never for one object
                    raise TransferError(f"{what}: redirected (HTTP {status}); check region and endpoint", status=status,
                                        retryable=False)
                error = s3_error(response, what, self._raw(response, _ERROR_BODY_BYTES))
                if error.retryable or status >= 500:
                    raise error
                if status == 404:
                    raise ObjectError(key, "no such object (gone after it was listed)")
                raise ObjectError(key, f"the store answers HTTP {status} {error.code or ''}".strip())

        return self.backoff.run(what, attempt)

    def _answer(self, key: str, response: httpx.Response, expected: Callable[[int], tuple[int, int]]) -> tuple[bytes, int, httpx.Headers]:
        """The raw body of a 200/206, refused unless it is exactly the bytes asked for, unencoded."""
        headers = response.headers
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ObjectError(key, f"stored with Content-Encoding {encoding!r}: the raw bytes are not what a reader sees")
        if response.status_code == 206:
            content_range = headers.get("content-range", "")
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if match is None:
                raise ObjectError(key, f"unparsable Content-Range {content_range[:80]!r}")
            first, last, total = (int(value) for value in match.groups())
        else:  # 200: the whole object, right only when the whole object is what was asked for
            length = headers.get("content-length", "").strip()
            if not length.isdigit():
                raise ObjectError(key, f"a whole-object answer with Content-Length {length[:40]!r}")
            total = int(length)
            first, last = 0, total - 1
        want = expected(total)
        if (first, last) != want or last < first:
            raise ObjectError(key, f"asked for bytes {want[0]}-{want[1]} of {total}, the store sent {first}-{last}")
        size = last - first + 1
        data = self._raw(response, size)
        if len(data) != size:
            raise ObjectError(key, f"a body of {len(data)}{'+' if len(data) > size else ''} bytes for a {size}-byte range")
        return data, total, headers

    def _url(self, key: str, renew: bool) -> tuple[str, bool]:
        """A presigned GET for ``key`` and whether it was granted just now (expired or ``renew``: a new grant)."""
        with self._lock:
            entry = self._urls.get(key)
        if entry is not None and not renew and time.time() < entry[1]:
            return entry[0], False
        self._grant([key])
        with self._lock:
            return self._urls[key][0], True

    @contextmanager
    def _send(self, url: str, byte_range: str | None) -> Iterator[httpx.Response]:
        """A streamed GET asking for identity encoding (the body is read raw, never decoded)."""
        headers = {"Accept-Encoding": "identity"}
        if byte_range:
            headers["Range"] = byte_range
        response = self.http.send(self.http.build_request("GET", url, headers=headers), stream=True)
        self.counters.add(requests=1)
        try:
            yield response
        finally:
            response.close()

    def _raw(self, response: httpx.Response, limit: int) -> bytes:
        """At most ``limit`` + 1 bytes of the raw body (one more tells a body that is too long), counted."""
        chunks, size = [], 0
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            self.counters.add(received=len(chunk))
            if size > limit:
                break
        return b"".join(chunks)[: limit + 1]


__all__ = ["ListPage", "S3Store", "parse_list_page"]
