"""The grant service's request handlers: who may ask, what each grant pins, and what the service checks itself."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from storage_core.chain import http_auth
from storage_core.layout import MAX_MANIFEST_SEQ, NAME_HASH_CHARS, miner_prefix
from storage_core.membership import SubnetMembership
from storage_core_s3 import protocol
from storage_core_s3.bucket import PINNED_HEADERS, PINNED_PARAMS, BucketAccess, odd_headers
from storage_core_s3.checks import (
    GrantError,
    bad,
    build_key,
    build_manifest_key,
    check_key_text,
    check_sha256,
    check_size,
    decode,
    own_key,
)
from storage_core_s3.checksums import sha256_b64
from storage_core_s3.plumbing import client_address, error_response, rate_limited, read_body, signed_path
from storage_core_s3.protocol import (
    S3_MAX_PART_SIZE,
    AbortRequest,
    CompleteRequest,
    MultipartGrantRequest,
    ReadGrantRequest,
    UploadGrantRequest,
)
from storage_core_s3.ratelimit import DailyQuota, RateLimiter
from storage_core_s3.settings import GrantSettings
from storage_core_s3.tickets import Tickets, parts_digest

log = logging.getLogger("storage_core_s3.grants")
_MAX_TOKEN_LENGTH = 2048


def _etag(value: str | None) -> str:
    return (value or "").strip().strip('"')


class GrantService:
    """The request handlers; ``create_app`` wires them into a Starlette app (``app.state.service``)."""

    def __init__(
        self,
        settings: GrantSettings,
        membership: SubnetMembership,
        *,
        nonce_store: http_auth.NonceStore | None = None,
        bucket: BucketAccess | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.membership = membership
        window = settings.freshness_window
        self.nonce_store = nonce_store if nonce_store is not None else http_auth.memory_nonce_store(2 * window + 5)
        retention = getattr(self.nonce_store, "retention", None)
        if retention is not None and retention < 2 * window:
            raise ValueError(f"the nonce store keeps entries {retention:g}s; the window needs at least {2 * window:g}s")
        # A store that forgets on restart cannot refuse a replay of a request signed before the restart:
        # such requests are refused outright (a client re-signs; it waits at most the freshness window).
        self.started_ns = 0 if getattr(self.nonce_store, "persistent", False) else int(clock() * 1e9)
        self.bucket = bucket or BucketAccess(settings)
        self.clock = clock
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.quota = DailyQuota(settings.daily_quota_bytes, clock)
        self.tickets = Tickets(self.bucket.ticket_key())
        self._last_sweep = clock()
        self._sweep_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    async def dispatch(self, request: Request, handler: Callable[..., Any], *, authenticated: bool = True) -> Response:
        started = time.perf_counter()
        event: dict[str, Any] = {"event": "request", "method": request.method, "path": request.url.path,
                                 "client": client_address(request, self.settings.trusted_proxies)}
        try:
            if authenticated:
                body = await read_body(request, self.settings.max_body_bytes)
                hotkey = self._authenticate(request, body)
                event["hotkey"] = hotkey
                payload = await handler(hotkey, body, event)
            else:
                payload = await handler(request, event)
            response: Response = payload if isinstance(payload, Response) else JSONResponse(payload)
        except Exception as error:  # mapped to 4xx/5xx; details of our own failures are logged, never sent
            response = error_response(error, request, event)
        event["status"] = response.status_code
        event["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(json.dumps(event, sort_keys=True, default=str), extra={"grant_event": event})
        return response

    def signed_path(self, request: Request) -> str:
        return signed_path(request, self.settings.path_prefix)

    def _authenticate(self, request: Request, body: bytes) -> str:
        window = self.settings.freshness_window
        try:
            hotkey = http_auth.verify_request(
                request.headers, body, request.method, self.signed_path(request), self.settings.service_hotkey,
                max_age=window, allowed_skew=window, nonce_store=self.nonce_store, now_ns=int(self.clock() * 1e9),
            )
        except http_auth.AuthenticationError as error:
            raise GrantError(401, error.reason, str(error)) from None
        if int(request.headers.get(http_auth.HEADER_NONCE, "0")) < self.started_ns:
            raise GrantError(401, "signed_before_start", "the request was signed before this service started; sign it again")
        self._charge(hotkey, 1.0)
        return hotkey

    def _charge(self, hotkey: str, cost: float, what: str = "requests") -> None:
        wait = self.limiter.acquire(hotkey, cost)
        if wait is not None:
            raise rate_limited(hotkey, wait, what)

    def _charge_quota(self, hotkey: str, size: int) -> None:
        left = self.quota.charge(hotkey, size)
        if left is not None:
            raise GrantError(429, "quota_exceeded", f"{hotkey} may store {left} more bytes today (UTC); "
                                                    f"the daily quota is {self.settings.daily_quota_bytes} bytes")

    async def _require_registered(self, hotkey: str) -> None:
        if not await run_in_threadpool(self.membership.is_registered, hotkey):
            raise GrantError(403, "not_registered", f"hotkey {hotkey} is not registered on the subnet")

    async def _require_validator(self, hotkey: str) -> None:
        if not await run_in_threadpool(self.membership.has_validator_permit, hotkey):
            raise GrantError(403, "no_validator_permit", f"hotkey {hotkey} has no validator permit on the subnet")

    async def _present(self, key: str, sha256: str, size: int) -> dict[str, Any] | None:
        """The answer for an object stored intact, None when nothing is stored; an object that is stored but
        differs is never replaced (409), whatever the client now says about it."""
        head = await run_in_threadpool(self.bucket.head, key)
        if head is None:
            return None
        recorded = (head.get("Metadata") or {}).get("sha256")
        odd = odd_headers(head)
        if head.get("ContentLength") == size and recorded == sha256 and not odd:
            return {"status": "present", "key": key, "etag": _etag(head.get("ETag")), "size": size}
        log.warning("object %s exists but differs (size %s, sha256 %s, headers %s); not replacing it",
                    key, head.get("ContentLength"), recorded, odd)
        raise GrantError(409, "object_exists", f"{key} is already stored and differs from this request "
                                               f"(size {head.get('ContentLength')}{', headers ' + ', '.join(odd) if odd else ''}); "
                                               "stored objects are never replaced")

    async def _prune_manifests(self, hotkey: str) -> None:
        """Before a new manifest: delete the signer's superseded ones (a failure here never fails the grant)."""
        try:
            await run_in_threadpool(self.bucket.prune_manifests, hotkey)
        except Exception as error:  # the store is the owner's; the next manifest grant tries again
            log.warning("could not prune the manifests of %s: %s", hotkey, error)

    # -- upload grants ---------------------------------------------------------------------------

    async def upload_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: UploadGrantRequest = decode(body, UploadGrantRequest)
        if request.manifest_seq is None:
            key = build_key(hotkey, request.source, request.date, request.sha256)
            event["key"] = key
            check_size(request.size, self.settings.max_object_bytes)
        else:  # a round manifest: the signer's manifest key, immutable like a chunk (content-addressed name)
            if request.source or request.date:
                raise bad("invalid_request", "a manifest grant (manifest_seq) names no source or date")
            key = build_manifest_key(hotkey, request.manifest_seq, request.sha256)
            event["key"] = key
            if request.size > self.settings.max_manifest_bytes:
                raise GrantError(413, "manifest_too_large", f"a manifest of {request.size} bytes is over this "
                                                            f"service's limit of {self.settings.max_manifest_bytes} bytes")
            check_size(request.size, self.settings.max_object_bytes)
            await self._prune_manifests(hotkey)
        if request.size > self.settings.max_single_upload_bytes:
            raise bad("use_multipart",
                      f"size {request.size} is over {self.settings.max_single_upload_bytes} bytes: ask {protocol.PATH_MULTIPART}")
        present = await self._present(key, request.sha256, request.size)
        if present is not None:
            event["present"] = True
            return present
        self._charge_quota(hotkey, request.size)
        return self._single_grant(key, request.sha256, request.size)

    def _single_grant(self, key: str, sha256: str, size: int) -> dict[str, Any]:
        settings = self.settings
        ttl = settings.upload_grant_ttl
        checksum = sha256_b64(sha256)
        expires_at = int(self.clock()) + ttl
        if settings.upload_method == "put":
            # Every header the object keeps is signed, and If-None-Match: * keeps an existing object.
            url = self.bucket.presign_client.generate_presigned_url(
                "put_object",
                Params={"Bucket": settings.bucket, "Key": key, "ContentLength": size, "ChecksumSHA256": checksum,
                        "Metadata": {"sha256": sha256}, "IfNoneMatch": "*", **PINNED_PARAMS},
                ExpiresIn=ttl,
            )
            headers = {"Content-Length": str(size), "x-amz-checksum-sha256": checksum, "x-amz-meta-sha256": sha256,
                       "If-None-Match": "*", **PINNED_HEADERS}
            return {"status": "upload", "method": "put", "key": key, "url": url, "headers": headers, "expires_at": expires_at}
        # Every field the object keeps is pinned by an exact policy condition: a store that keeps unlisted
        # fields (SeaweedFS) still refuses another value for these.
        fields = {**PINNED_HEADERS, "x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-sha256": checksum,
                  "x-amz-meta-sha256": sha256}
        conditions: list[Any] = [{name: value} for name, value in fields.items()]
        conditions.append(["content-length-range", size, size])
        post = self.bucket.presign_client.generate_presigned_post(
            settings.bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=ttl
        )
        return {"status": "upload", "method": "post", "key": key, "url": post["url"], "fields": post["fields"],
                "expires_at": expires_at}

    # -- multipart -------------------------------------------------------------------------------

    async def multipart_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: MultipartGrantRequest = decode(body, MultipartGrantRequest)
        key = build_key(hotkey, request.source, request.date, request.sha256)
        event["key"] = key
        settings = self.settings
        check_size(request.size, settings.max_object_bytes)
        part_size = request.part_size
        if not settings.min_part_size <= part_size <= S3_MAX_PART_SIZE:
            raise bad("invalid_part_size",
                      f"part_size must be between {settings.min_part_size} and {S3_MAX_PART_SIZE} bytes, got {part_size}")
        count = math.ceil(request.size / part_size)
        if count > settings.max_parts_per_grant:
            raise bad("invalid_part_size", f"{count} parts of {part_size} bytes; this service grants at most "
                                           f"{settings.max_parts_per_grant} parts: use larger parts")
        if len(request.part_sha256) != count:
            raise bad("invalid_parts", f"a {request.size}-byte object in {part_size}-byte parts has {count} parts, "
                                       f"got {len(request.part_sha256)} checksums")
        for index, digest in enumerate(request.part_sha256, 1):
            check_sha256(f"part_sha256[{index}]", digest)
        present = await self._present(key, request.sha256, request.size)
        if present is not None:
            event["present"] = True
            return present
        self._charge(hotkey, count / settings.parts_per_token, "part URLs")  # the signatures are the work
        open_uploads = await run_in_threadpool(self.bucket.abort_stale, miner_prefix(hotkey), self.clock())
        if len(open_uploads) >= settings.max_pending_uploads:
            raise GrantError(429, "too_many_uploads", f"{len(open_uploads)} multipart uploads of {hotkey} are open; "
                                                      "complete or abort one first", headers={"Retry-After": "60"})
        self._charge_quota(hotkey, request.size)
        self._maybe_sweep()
        created = await run_in_threadpool(
            lambda: self.bucket.client.create_multipart_upload(
                Bucket=settings.bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata={"sha256": request.sha256},
                **PINNED_PARAMS,
            )
        )
        upload_id = created["UploadId"]
        ttl = settings.multipart_grant_ttl
        expires_at = int(self.clock()) + ttl

        def presign_parts() -> list[dict[str, Any]]:  # up to max_parts_per_grant signatures: off the event loop
            parts = []
            for number, digest in enumerate(request.part_sha256, 1):
                size = min(part_size, request.size - (number - 1) * part_size)
                checksum = sha256_b64(digest)
                url = self.bucket.presign_client.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": settings.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                            "ContentLength": size, "ChecksumSHA256": checksum},
                    ExpiresIn=ttl,
                )
                parts.append({"part_number": number, "size": size, "url": url,
                              "headers": {"Content-Length": str(size), "x-amz-checksum-sha256": checksum}})
            return parts

        parts = await run_in_threadpool(presign_parts)
        ticket = self.tickets.make({"k": key, "u": upload_id, "s": request.size, "p": part_size, "n": count,
                                    "d": parts_digest(request.part_sha256), "h": request.sha256,
                                    "e": expires_at + settings.ticket_grace})
        event["parts"] = count
        return {"status": "multipart", "key": key, "upload_id": upload_id, "ticket": ticket, "part_size": part_size,
                "parts": parts, "expires_at": expires_at}

    def _maybe_sweep(self) -> None:
        """At most every ``stale_sweep_interval`` seconds, abort the whole bucket's stale uploads in the
        background (uploads of miners who never ask again)."""
        now = self.clock()
        with self._sweep_lock:
            if now - self._last_sweep < self.settings.stale_sweep_interval:
                return
            self._last_sweep = now

        def sweep() -> None:
            try:
                self.bucket.abort_stale("", now)
            except Exception as error:  # the next sweep tries again
                log.warning("sweeping stale multipart uploads failed: %s", error)

        threading.Thread(target=sweep, name="grant-sweep", daemon=True).start()

    async def complete_multipart(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: CompleteRequest = decode(body, CompleteRequest)
        key = own_key(hotkey, request.key)
        event["key"] = key
        claims = self.tickets.read(request.ticket, self.clock())
        if claims.get("k") != key or claims.get("u") != request.upload_id or not isinstance(claims.get("h"), str):
            raise GrantError(403, "invalid_ticket", "the ticket was issued for another key or upload")
        count, part_size, size, sha256 = int(claims["n"]), int(claims["p"]), int(claims["s"]), str(claims["h"])
        numbers = [part.part_number for part in request.parts]
        if numbers != list(range(1, count + 1)):
            raise bad("invalid_parts", f"parts must be numbered 1..{count} in order, got {len(numbers)} parts")
        if parts_digest([part.sha256 for part in request.parts]) != claims["d"]:
            raise bad("invalid_parts", "the parts' sha256 values differ from the granted ones")
        self._charge(hotkey, size / self.settings.hashed_bytes_per_token, "bytes to verify")
        settings = self.settings

        def finish() -> dict[str, Any]:
            stored: dict[int, dict[str, Any]] = {}
            marker = 0
            while True:
                page = self.bucket.client.list_parts(
                    Bucket=settings.bucket, Key=key, UploadId=request.upload_id, PartNumberMarker=marker, MaxParts=1000
                )
                for part in page.get("Parts", ()):
                    stored[int(part["PartNumber"])] = part
                if not page.get("IsTruncated"):
                    break
                marker = int(page["NextPartNumberMarker"])
            for part in request.parts:
                expected = min(part_size, size - (part.part_number - 1) * part_size)
                found = stored.get(part.part_number)
                if found is None:
                    raise bad("invalid_parts", f"part {part.part_number} was not uploaded")
                if int(found["Size"]) != expected or _etag(found.get("ETag")) != _etag(part.etag):
                    raise GrantError(409, "part_mismatch", f"part {part.part_number} differs from the granted part")
            result = self._complete(key, request)
            # The parts were each verified by the store; their concatenation is checked here, by the service,
            # against the sha256 the object is named after (the client's word for it is never kept).
            digest, length = self.bucket.sha256_of(key)
            if length != size or digest != sha256:
                self.bucket.delete(key)
                raise GrantError(409, "sha256_mismatch", f"the completed object is {length} bytes with sha256 "
                                                         f"{digest[:NAME_HASH_CHARS]}..., not the granted object; it was removed")
            return {"status": "complete", "key": key, "etag": _etag(result.get("ETag")), "size": size}

        return await run_in_threadpool(finish)

    def _complete(self, key: str, request: CompleteRequest) -> dict[str, Any]:
        """CompleteMultipartUpload with If-None-Match: * (an existing object is never replaced)."""
        from botocore.exceptions import ClientError

        try:
            result: dict[str, Any] = self.bucket.client.complete_multipart_upload(
                Bucket=self.settings.bucket, Key=key, UploadId=request.upload_id, IfNoneMatch="*",
                MultipartUpload={"Parts": [{"PartNumber": part.part_number, "ETag": f'"{_etag(part.etag)}"',
                                            "ChecksumSHA256": sha256_b64(part.sha256)} for part in request.parts]},
            )
            return result
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            self.bucket.abort(key, request.upload_id)
            raise GrantError(409, "object_exists", f"{key} was stored meanwhile; it is never replaced") from None

    async def abort_multipart(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: AbortRequest = decode(body, AbortRequest)
        key = own_key(hotkey, request.key)
        event["key"] = key
        await run_in_threadpool(self.bucket.abort, key, request.upload_id)
        return {"status": "aborted", "key": key}

    # -- reading ---------------------------------------------------------------------------------

    async def read_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_validator(hotkey)
        request: ReadGrantRequest = decode(body, ReadGrantRequest)
        try:
            prefix = miner_prefix(request.miner_hotkey)
        except ValueError as error:
            raise bad("invalid_hotkey", f"miner_hotkey: {error}") from None
        event["miner"] = request.miner_hotkey
        settings = self.settings
        if len(request.keys) > settings.max_keys:
            raise bad("too_many_keys", f"at most {settings.max_keys} keys per read grant, got {len(request.keys)}")
        ttl = settings.read_grant_ttl
        answer: dict[str, Any] = {"prefix": prefix, "list_url": None, "objects": {}, "expires_at": int(self.clock()) + ttl}
        if request.list_page:
            max_keys = settings.max_keys if request.max_keys is None else request.max_keys
            if not 1 <= max_keys <= settings.max_keys:
                raise bad("invalid_request", f"max_keys must be between 1 and {settings.max_keys}, got {max_keys}")
            params: dict[str, Any] = {"Bucket": settings.bucket, "Prefix": prefix, "MaxKeys": max_keys}
            token = request.continuation_token
            if token is not None:
                if not token or len(token) > _MAX_TOKEN_LENGTH or not token.isprintable():
                    raise bad("invalid_request", "continuation_token must be a printable string of at most 2048 characters")
                params["ContinuationToken"] = token
            answer["list_url"] = self.bucket.presign_client.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=ttl)
        for key in request.keys:
            check_key_text("key", key)
            if not key.startswith(prefix):
                raise GrantError(403, "outside_prefix", f"key {key!r} is outside the miner's prefix {prefix!r}")
        self._charge(hotkey, len(request.keys) / settings.read_keys_per_token, "read URLs")

        def presign_reads() -> dict[str, str]:  # up to max_keys signatures: off the event loop
            return {
                key: self.bucket.presign_client.generate_presigned_url(
                    "get_object", Params={"Bucket": settings.bucket, "Key": key}, ExpiresIn=ttl
                )
                for key in request.keys
            }

        if request.keys:
            answer["objects"] = await run_in_threadpool(presign_reads)
        event["keys"] = len(request.keys)
        return answer

    # -- public ----------------------------------------------------------------------------------

    async def info(self, request: Request, event: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        return {
            "api": protocol.API_VERSION,
            "service_hotkey": settings.service_hotkey,
            "bucket": settings.bucket,
            "region": settings.region,
            "upload_method": settings.upload_method,
            "freshness_window": settings.freshness_window,
            "max_object_bytes": settings.max_object_bytes,
            "max_single_upload_bytes": settings.max_single_upload_bytes,
            "max_manifest_bytes": settings.max_manifest_bytes,
            "min_part_size": settings.min_part_size,
            "max_parts": settings.max_parts_per_grant,
            "max_keys": settings.max_keys,
            "max_body_bytes": settings.max_body_bytes,
            "daily_quota_bytes": settings.daily_quota_bytes,
            "key_layout": "hotkey={hotkey}/source={source}/date={YYYY-MM-DD}/{sha256[:%d]}.parquet" % NAME_HASH_CHARS,
            "manifest_key_layout": "hotkey={hotkey}/manifests/{seq:0%dd}-{sha256[:%d]}.manifest"
                                   % (len(str(MAX_MANIFEST_SEQ)), NAME_HASH_CHARS),
        }

    async def health(self, request: Request, event: dict[str, Any]) -> Response:
        if request.query_params.get("deep") in ("1", "true"):
            try:
                await run_in_threadpool(lambda: self.bucket.client.head_bucket(Bucket=self.settings.bucket))
            except Exception as error:  # any failure means "not healthy"; the detail is logged only
                log.warning("deep health check failed: %s", error)
                return JSONResponse({"status": "unhealthy", "detail": "bucket not reachable"}, 503)
        return JSONResponse({"status": "ok"})
