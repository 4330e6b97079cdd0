"""The miner side: upload a batch of chunks through grants, streaming every byte from disk.

Per object: ask the grant service (signed with the miner's hotkey) -> the object is already there
(``already_present``) or a presigned POST/PUT, or for large files a multipart grant -> stream the file
(or each part) to the store with its sha256, which the store verifies -> a receipt with key, size,
sha256 and ETag. Requests that fail on throttling, 5xx or a connection error are retried with exponential
back-off and jitter; objects and parts move ``concurrency`` at a time. No file is ever read into memory
whole: bodies are produced in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from storage_core.chain.keys import hotkey_address
from storage_core.chunks import verify_batch
from storage_core.errors import BackendError, InvalidBatchError
from storage_core.layout import key_for
from storage_core.values import StagedFile, StoredObject, UploadBatch, UploadReceipt
from storage_core_s3 import protocol
from storage_core_s3.client import Backoff, Counters, GrantClient, backoff_for, make_http_client, s3_error
from storage_core_s3.checksums import b64_to_hex, sha256_b64
from storage_core_s3.options import S3Options

log = logging.getLogger(__name__)
BLOCK = 1024 * 1024
BACKEND_ID = "s3"


def _file_blocks(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, in blocks of at most 1 MiB (re-iterable per call)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            block = handle.read(min(BLOCK, remaining))
            if not block:
                raise InvalidBatchError(f"{path.name} shrank while it was being uploaded")
            remaining -= len(block)
            yield block


def part_sha256(path: Path, offset: int, length: int) -> str:
    """The sha256 (hex) of ``length`` bytes of ``path`` from ``offset``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for block in _file_blocks(path, offset, length):
        digest.update(block)
    return digest.hexdigest()


def part_checksums(path: Path, size: int, part_size: int, pool: ThreadPoolExecutor | None = None) -> list[str]:
    """Each part's sha256 (hex); parts are hashed in parallel on ``pool`` (hashlib releases the GIL)."""
    ranges = [(offset, min(part_size, size - offset)) for offset in range(0, size, part_size)]
    if pool is None:
        return [part_sha256(path, offset, length) for offset, length in ranges]
    return list(pool.map(lambda span: part_sha256(path, *span), ranges))


def _stat(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


class _Body:
    """A file (or file part) as a streaming request body."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self.path, self.offset, self.length = path, offset, length

    def __iter__(self) -> Iterator[bytes]:
        return _file_blocks(self.path, self.offset, self.length)


class Uploader:
    """Uploads batches for one miner (the signer) through one grant service."""

    def __init__(self, options: S3Options, signer: Any, *, http: httpx.Client | None = None,
                 backoff: Backoff | None = None) -> None:
        self.options = options
        self.signer = signer
        self._owns_http = http is None
        self.http = http or make_http_client(options)
        self.counters = Counters()
        self.backoff = backoff or backoff_for(options)
        self.grants = GrantClient(options, signer, self.http, self.counters, self.backoff)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- batch -----------------------------------------------------------------------------------

    def upload_batch(self, batch: UploadBatch, *, verified: bool = False) -> UploadReceipt:
        """Upload every file of ``batch``; raise BackendError naming the files that failed."""
        if not verified:
            verify_batch(batch)
        if self.signer is None:
            raise BackendError("backend 's3' needs the miner's hotkey (context.signer) to sign grant requests",
                               retryable=False)
        signer_hotkey = hotkey_address(self.signer)
        if signer_hotkey != batch.miner_hotkey:
            raise InvalidBatchError(
                f"the batch belongs to {batch.miner_hotkey} but the signing hotkey is {signer_hotkey}: "
                "the grant service stores objects under the signer's prefix only"
            )
        results: dict[str, StoredObject] = {}
        failures: list[str] = []
        retryable = True
        workers = max(1, min(self.options.concurrency, len(batch.files)))
        with ThreadPoolExecutor(workers, thread_name_prefix="s3-upload") as files_pool, \
                ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-part") as parts_pool:
            futures = {
                files_pool.submit(self.upload_file, batch.miner_hotkey, staged, parts_pool): staged
                for staged in batch.files
            }
            for future, staged in futures.items():
                try:
                    results[staged.sha256] = future.result()
                except InvalidBatchError:
                    raise
                except BackendError as error:
                    failures.append(f"{staged.path.name}: {error}")
                    retryable = retryable and error.retryable
        if failures:
            raise BackendError(
                f"{len(failures)} of {len(batch.files)} objects were not stored: " + "; ".join(failures[:5]),
                retryable=retryable,
            )
        objects = tuple(results[staged.sha256] for staged in batch.files)
        present = sum(1 for o in objects if o.already_present)
        log.info(
            "s3: stored %d objects (%d already present, %d bytes) for %s in s3://%s",
            len(objects), present, sum(o.size_bytes for o in objects), batch.miner_hotkey, self.options.bucket,
        )
        return UploadReceipt(backend=BACKEND_ID, location=f"s3://{self.options.bucket}", objects=objects)

    # -- one object ------------------------------------------------------------------------------

    def upload_file(self, hotkey: str, staged: StagedFile, parts_pool: ThreadPoolExecutor | None = None) -> StoredObject:
        if staged.size_bytes >= self.options.multipart_threshold:
            return self._upload_multipart(hotkey, staged, parts_pool)
        return self._upload_single(hotkey, staged)

    def _request(self, staged: StagedFile) -> dict[str, Any]:
        return {"sha256": staged.sha256, "size": staged.size_bytes, "source": staged.source, "date": staged.date}

    def _check_key(self, hotkey: str, staged: StagedFile, key: str) -> None:
        expected = key_for(hotkey, staged)
        if key != expected:
            raise BackendError(f"the grant service granted key {key!r}, expected {expected!r}", retryable=False)

    def _upload_single(self, hotkey: str, staged: StagedFile) -> StoredObject:
        what = f"upload of {staged.path.name}"

        def attempt() -> StoredObject:
            # A fresh grant per attempt: a retry never runs into an expired policy.
            grant = self.grants.call(protocol.PATH_UPLOAD, self._request(staged))
            key = grant["key"]
            self._check_key(hotkey, staged, key)
            if grant["status"] == "present":
                return StoredObject(key=key, size_bytes=staged.size_bytes, sha256=staged.sha256,
                                    etag=grant.get("etag"), already_present=True)
            if grant.get("method") == "put":
                response = self.http.put(grant["url"], content=_Body(staged.path, 0, staged.size_bytes),
                                         headers=grant["headers"])
            else:
                with open(staged.path, "rb") as handle:
                    response = self.http.post(
                        grant["url"], data=grant["fields"],
                        files={"file": (staged.path.name, handle, protocol.PARQUET_CONTENT_TYPE)},
                    )
            self.counters.add(requests=1)
            if not response.is_success:
                raise s3_error(response, what)
            self._check_echoed_checksum(response, staged)
            etag = (response.headers.get("etag") or "").strip('"') or None
            return StoredObject(key=key, size_bytes=staged.size_bytes, sha256=staged.sha256, etag=etag)

        return self.backoff.run(what, attempt)

    @staticmethod
    def _check_echoed_checksum(response: httpx.Response, staged: StagedFile) -> None:
        echoed = response.headers.get("x-amz-checksum-sha256")
        if echoed is not None and b64_to_hex(echoed) not in (None, staged.sha256):
            raise BackendError(f"the store recorded another sha256 for {staged.path.name}", retryable=True)

    def _upload_multipart(self, hotkey: str, staged: StagedFile, parts_pool: ThreadPoolExecutor | None) -> StoredObject:
        part_size = self.options.part_size
        # The whole file's sha256 was checked by verify_batch just before; the store checks each part's.
        # A file changed since then would be caught by the stat comparison after the upload.
        before = _stat(staged.path)
        if before[0] != staged.size_bytes:
            raise InvalidBatchError(f"staged file {staged.path.name} is {before[0]} bytes, batch says {staged.size_bytes}")
        part_hashes = part_checksums(staged.path, staged.size_bytes, part_size, parts_pool)
        grant = self.grants.call(
            protocol.PATH_MULTIPART, {**self._request(staged), "part_size": part_size, "part_sha256": part_hashes}
        )
        key = grant["key"]
        self._check_key(hotkey, staged, key)
        if grant["status"] == "present":
            return StoredObject(key=key, size_bytes=staged.size_bytes, sha256=staged.sha256,
                                etag=grant.get("etag"), already_present=True)
        upload_id = grant["upload_id"]
        pool = parts_pool or ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="s3-part")
        futures: list[Future[dict[str, Any]]] = []
        try:
            for part in grant["parts"]:
                digest = part_hashes[int(part["part_number"]) - 1]
                futures.append(pool.submit(self._upload_part, staged, part, digest, int(grant["part_size"])))
            completed = [future.result() for future in futures]
            if _stat(staged.path) != before:
                raise InvalidBatchError(f"staged file {staged.path.name} changed while it was being uploaded")
            done = self.grants.call(
                protocol.PATH_COMPLETE,
                {"key": key, "upload_id": upload_id, "ticket": grant["ticket"], "parts": completed},
            )
        except BaseException:
            for future in futures:
                future.cancel()
            try:
                self.grants.call(protocol.PATH_ABORT, {"key": key, "upload_id": upload_id})
            except Exception as error:  # the store expires abandoned uploads anyway
                log.warning("could not abort multipart upload of %s: %s", key, error)
            raise
        finally:
            if parts_pool is None:
                pool.shutdown()
        return StoredObject(key=key, size_bytes=staged.size_bytes, sha256=staged.sha256, etag=done.get("etag"))

    def _upload_part(self, staged: StagedFile, part: dict[str, Any], digest: str, part_size: int) -> dict[str, Any]:
        number = int(part["part_number"])
        offset = (number - 1) * part_size
        what = f"part {number} of {staged.path.name}"

        def attempt() -> dict[str, Any]:
            response = self.http.put(part["url"], content=_Body(staged.path, offset, int(part["size"])),
                                     headers=part["headers"])
            self.counters.add(requests=1)
            if not response.is_success:
                raise s3_error(response, what)
            echoed = response.headers.get("x-amz-checksum-sha256")
            if echoed is not None and echoed != sha256_b64(digest):
                raise BackendError(f"the store recorded another sha256 for {what}", retryable=True)
            return {"part_number": number, "etag": (response.headers.get("etag") or "").strip('"'), "sha256": digest}

        return self.backoff.run(what, attempt)


def upload(options: S3Options, signer: Any, batch: UploadBatch) -> UploadReceipt:
    """Verify ``batch`` and upload it (the ``storage_upload`` hook's body)."""
    verify_batch(batch)
    with Uploader(options, signer) as uploader:
        return uploader.upload_batch(batch, verified=True)


__all__ = ["Uploader", "part_checksums", "part_sha256", "upload"]
