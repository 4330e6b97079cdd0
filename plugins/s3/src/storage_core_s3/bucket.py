"""The grant service's access to its bucket: its S3 clients, and the few store operations it makes itself."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from typing import Any

from storage_core.layout import miner_prefix
from storage_core.manifest.retention import superseded_manifests
from storage_core_s3.protocol import PARQUET_CONTENT_TYPE
from storage_core_s3.settings import GrantSettings

log = logging.getLogger("storage_core_s3.grants")

#: The headers every stored object carries, pinned by every grant (POST policy conditions, signed PUT
#: headers, the service's own CreateMultipartUpload): a client can set none of them to anything else.
PINNED_HEADERS = {
    "Content-Type": PARQUET_CONTENT_TYPE,
    "Content-Encoding": "identity",
    "Content-Disposition": "attachment",
    "Cache-Control": "no-transform",
}
#: The same, as boto3 parameters (presigned PUT, CreateMultipartUpload).
PINNED_PARAMS = {
    "ContentType": PARQUET_CONTENT_TYPE,
    "ContentEncoding": "identity",
    "ContentDisposition": "attachment",
    "CacheControl": "no-transform",
}
#: Headers some stores keep from a POST form field or an unsigned PUT header although no grant names them
#: (SeaweedFS: Content-Language, Expires): an object carrying one was stored outside its grant.
UNPINNED_HEADERS = ("ContentLanguage", "Expires", "WebsiteRedirectLocation")
_HASH_BLOCK = 1024 * 1024


def odd_headers(head: dict[str, Any]) -> list[str]:
    """What a HEAD answer shows that no grant allows (empty: the object's headers are the pinned ones)."""
    odd = [f"{name}={head.get(name)!r}" for name, value in PINNED_PARAMS.items()
           if head.get(name) not in (None, "", value)]
    odd += [f"{name}={head[name]!r}" for name in UNPINNED_HEADERS if head.get(name)]
    return odd


class BucketAccess:
    """The service's own S3 clients: one for requests it makes, one for presigning client URLs."""

    def __init__(self, settings: GrantSettings, client: Any = None, presign_client: Any = None) -> None:
        self.settings = settings
        self._session: Any = None
        self.client = client or self._new_client(settings.endpoint_url)
        if presign_client is not None:
            self.presign_client = presign_client
        elif settings.presign_endpoint_url and settings.presign_endpoint_url != settings.endpoint_url:
            self.presign_client = self._new_client(settings.presign_endpoint_url)
        else:
            self.presign_client = self.client

    @property
    def session(self) -> Any:
        import boto3

        if self._session is None:
            settings = self.settings
            self._session = boto3.session.Session(
                aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key, region_name=settings.region
            )
        return self._session

    def _new_client(self, endpoint_url: str | None) -> Any:
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": self.settings.addressing_style},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=64,
        )
        return self.session.client("s3", endpoint_url=endpoint_url, config=config)

    def ticket_key(self) -> bytes:
        """The HMAC key of multipart tickets: configured, else derived from the bucket credentials."""
        if self.settings.ticket_secret:
            return self.settings.ticket_secret
        secret = self.settings.secret_key
        if secret is None:
            credentials = self.session.get_credentials()
            secret = credentials.get_frozen_credentials().secret_key if credentials is not None else None
        if secret is None:
            log.warning("no ticket secret and no S3 secret key: multipart tickets work in this process only")
            return secrets.token_bytes(32)
        return hmac.new(secret.encode(), b"storage-core-s3 multipart ticket v1", hashlib.sha256).digest()

    def head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.settings.bucket, Key=key)

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` (all pages)."""
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", ()))
        return found

    def prune_manifests(self, hotkey: str) -> list[str]:
        """Delete ``hotkey``'s round manifests but the newest ``KEEP_MANIFESTS`` (see storage_core.manifest.retention)."""
        stale = superseded_manifests(self.keys(f"{miner_prefix(hotkey)}manifests/"), hotkey)
        for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1,000 keys
            self.client.delete_objects(Bucket=self.settings.bucket,
                                       Delete={"Objects": [{"Key": key} for key in stale[start:start + 1000]],
                                               "Quiet": True})
        if stale:
            log.info("pruned %d superseded manifests of %s", len(stale), hotkey)
        return stale

    def sha256_of(self, key: str) -> tuple[str, int]:
        """The sha256 (hex) and length of the stored bytes, streamed raw (never decoded) through hashlib."""
        body = self.client.get_object(Bucket=self.settings.bucket, Key=key)["Body"]
        digest, size = hashlib.sha256(), 0
        try:
            for block in iter(lambda: body.read(_HASH_BLOCK), b""):
                digest.update(block)
                size += len(block)
        finally:
            body.close()
        return digest.hexdigest(), size

    def uploads(self, prefix: str) -> list[dict[str, Any]]:
        """Every multipart upload in progress under ``prefix`` (all pages)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
        while True:
            page = self.client.list_multipart_uploads(**params)
            found.extend(page.get("Uploads", ()))
            if not page.get("IsTruncated"):
                return found
            params["KeyMarker"], params["UploadIdMarker"] = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")

    def abort(self, key: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    def abort_stale(self, prefix: str, now: float | None = None) -> list[dict[str, Any]]:
        """Abort uploads under ``prefix`` that can no longer be completed; return those still open."""
        now = time.time() if now is None else now
        open_uploads = []
        for upload in self.uploads(prefix):
            initiated = upload.get("Initiated")
            age = now - initiated.timestamp() if initiated is not None else 0.0
            if age > self.settings.stale_upload_after:
                log.info("aborting stale multipart upload %s of %s (%.0f s old)", upload["UploadId"], upload["Key"], age)
                self.abort(upload["Key"], upload["UploadId"])
            else:
                open_uploads.append(upload)
        return open_uploads
