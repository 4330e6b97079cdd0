"""The miner side of round manifests: store one signed manifest through an upload grant.

The core builds, signs and names the manifest (``layout.manifest_key``); this module asks the grant service
for a manifest grant (``UploadGrantRequest.manifest_seq``), which builds the same key itself from the
signer's hotkey, the round number and the sha256, and sends the bytes with the presigned POST or PUT. The
grant pins what a chunk's grant pins (exact size, sha256 checked by the store, the object's headers,
``If-None-Match: *`` on PUT) and counts against the daily quota. A manifest already stored is a success
(``already_present``): its name is content-addressed, so the stored bytes are these.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from storage_core.chain.keys import hotkey_address
from storage_core.errors import BackendError
from storage_core.layout import NAME_HASH_CHARS, parse_manifest_key
from storage_core.values import StoredObject
from storage_core_s3 import protocol
from storage_core_s3.checksums import b64_to_hex
from storage_core_s3.client import TransferError, s3_error
from storage_core_s3.options import S3Options
from storage_core_s3.uploader import Uploader

log = logging.getLogger(__name__)
MANIFEST_FILENAME = "round.manifest"


def check_manifest(signer: Any, miner_hotkey: str, key: str, data: bytes) -> tuple[int, str]:
    """(round number, sha256) of a manifest this signer may store under ``key``; BackendError naming why not."""
    if signer is None:
        raise BackendError("backend 's3' needs the miner's hotkey (context.signer) to sign grant requests",
                           retryable=False)
    signer_hotkey = hotkey_address(signer)
    if signer_hotkey != miner_hotkey:
        raise BackendError(f"s3: the manifest belongs to {miner_hotkey} but the signing hotkey is {signer_hotkey}: "
                           "the grant service stores manifests under the signer's prefix only", retryable=False)
    name = parse_manifest_key(key)
    if name is None or name.hotkey != miner_hotkey:
        raise BackendError(f"s3: {key!r} is not a manifest key of {miner_hotkey}", retryable=False)
    sha256 = hashlib.sha256(data).hexdigest()
    if name.name_hash != sha256[:NAME_HASH_CHARS]:
        raise BackendError(f"s3: manifest key {key!r} does not name these bytes (sha256 {sha256[:NAME_HASH_CHARS]}...)",
                           retryable=False)
    if not data:
        raise BackendError("s3: an empty manifest", retryable=False)
    return name.seq, sha256


def publish_manifest(options: S3Options, signer: Any, miner_hotkey: str, key: str, data: bytes, *,
                     uploader: Uploader | None = None) -> StoredObject:
    """Store ``data`` under ``key`` through a manifest grant; retries like a chunk's upload (fresh grant each try)."""
    seq, sha256 = check_manifest(signer, miner_hotkey, key, data)
    if uploader is None:
        with Uploader(options, signer) as owned:
            return _publish(owned, key, seq, sha256, data)
    return _publish(uploader, key, seq, sha256, data)


def _publish(uploader: Uploader, key: str, seq: int, sha256: str, data: bytes) -> StoredObject:
    what = f"upload of manifest {key}"
    request = {"sha256": sha256, "size": len(data), "manifest_seq": seq}

    def attempt() -> StoredObject:
        grant = uploader.grants.call(protocol.PATH_UPLOAD, request)
        if grant.get("key") != key:
            raise BackendError(f"the grant service granted key {grant.get('key')!r}, expected {key!r}", retryable=False)
        if grant.get("status") == "present":
            return StoredObject(key=key, size_bytes=len(data), sha256=sha256, etag=grant.get("etag"),
                                already_present=True)
        if grant.get("method") == "put":
            response = uploader.http.put(grant["url"], content=data, headers=grant["headers"])
        else:
            response = uploader.http.post(grant["url"], data=grant["fields"],
                                          files={"file": (MANIFEST_FILENAME, data, protocol.PARQUET_CONTENT_TYPE)})
        uploader.counters.add(requests=1)
        if response.status_code == 412:  # stored meanwhile (If-None-Match: *): the next grant says "present"
            raise TransferError(f"{what}: stored meanwhile (HTTP 412); asking again", status=412, retryable=True)
        if not response.is_success:
            raise s3_error(response, what)
        echoed = response.headers.get("x-amz-checksum-sha256")
        if echoed is not None and b64_to_hex(echoed) not in (None, sha256):
            raise BackendError(f"the store recorded another sha256 for manifest {key}", retryable=True)
        etag = (response.headers.get("etag") or "").strip('"') or None
        return StoredObject(key=key, size_bytes=len(data), sha256=sha256, etag=etag)

    stored = uploader.backoff.run(what, attempt)
    log.info("s3: manifest %s %s (%d bytes) in s3://%s", key, "already present" if stored.already_present else "stored",
             len(data), uploader.options.bucket)
    return stored


__all__ = ["check_manifest", "publish_manifest"]
