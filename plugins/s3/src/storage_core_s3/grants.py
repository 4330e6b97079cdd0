"""The grant service: an ASGI app that holds the bucket's credentials and hands out presigned grants.

Miners never hold S3 credentials. A miner asks for an *upload grant* for one chunk with a request signed
by its hotkey; the service verifies the signature (fresh timestamp nonce, never replayed, bound to this
service's hotkey), checks the hotkey is registered on the subnet, builds the object key itself from the
signer's hotkey, the chunk's sha256 and the partition the miner names, and answers with a presigned POST
whose policy pins that exact key, the exact size, the sha256 (the store verifies it) and an expiry of
minutes. Large chunks get a *multipart grant*: one presigned URL per part, each pinned to its size and
sha256, and a completion step the service performs after checking every part. Validators (hotkeys with a
validator permit) get *read grants*: a presigned listing URL for one page of one miner's prefix and
presigned GETs for keys under that prefix, fresh for every page.

    app = create_app(GrantSettings(bucket="...", service_hotkey="5F..."), StaticMembership({...}))
    uvicorn.run(app, host="127.0.0.1", port=8080)

See plugins/s3/README.md for the deployment behind a gateway and the security model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from datetime import date as date_type
from typing import Any

import attrs
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage_core.chain import http_auth
from storage_core.layout import NAME_HASH_CHARS, check_hotkey, hotkey_of_key, miner_prefix, object_key
from storage_core.membership import SubnetMembership
from storage_core_s3 import protocol
from storage_core_s3.checksums import b64_to_hex as b64_to_hex, sha256_b64  # b64_to_hex: still importable here
from storage_core_s3.protocol import (
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    S3_MAX_SINGLE_UPLOAD,
    S3_MIN_PART_SIZE,
    AbortRequest,
    CompleteRequest,
    MultipartGrantRequest,
    ReadGrantRequest,
    UploadGrantRequest,
)
from storage_core_s3.ratelimit import RateLimiter

log = logging.getLogger("storage_core_s3.grants")

ADDRESSING_STYLES = ("path", "virtual", "auto")
UPLOAD_METHODS = ("post", "put")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MAX_KEY_LENGTH = 1024
_MAX_TOKEN_LENGTH = 2048
_MAX_PARTITION_LENGTH = 64
_PARTITION_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
_DRAIN_LIMIT = 16 * 1024 * 1024  # an oversized body is read (and dropped) up to this size, then cut off


def _positive(_instance: object, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"grant setting {attribute.name!r} must be positive, got {value!r}")


@attrs.frozen
class GrantSettings:
    """Configuration of one grant service (one bucket)."""

    bucket: str
    service_hotkey: str  # the ss58 address every request must be signed *for* (receiver binding)
    endpoint_url: str | None = None  # None: AWS S3 for ``region``
    presign_endpoint_url: str | None = None  # the endpoint clients reach, when it differs (a proxy)
    region: str = "us-east-1"
    addressing_style: str = attrs.field(default="path", validator=attrs.validators.in_(ADDRESSING_STYLES))
    access_key: str | None = attrs.field(default=None, repr=False)
    secret_key: str | None = attrs.field(default=None, repr=False)
    ticket_secret: bytes | None = attrs.field(default=None, repr=False)  # shared by every worker; derived if None
    upload_method: str = attrs.field(default="post", validator=attrs.validators.in_(UPLOAD_METHODS))
    freshness_window: float = attrs.field(default=60.0, validator=_positive)  # seconds back and ahead
    upload_grant_ttl: int = attrs.field(default=300, validator=_positive)
    multipart_grant_ttl: int = attrs.field(default=1800, validator=_positive)
    read_grant_ttl: int = attrs.field(default=900, validator=_positive)
    max_object_bytes: int = attrs.field(default=S3_MAX_SINGLE_UPLOAD, validator=_positive)
    max_single_upload_bytes: int = attrs.field(default=S3_MAX_SINGLE_UPLOAD, validator=_positive)
    min_part_size: int = attrs.field(default=S3_MIN_PART_SIZE, validator=_positive)
    max_keys: int = attrs.field(default=1000, validator=_positive)  # per listing page and per read grant
    max_body_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    rate_limit: float = 20.0  # requests per second per hotkey; 0 disables
    rate_burst: int = 200
    path_prefix: str = ""  # a prefix a gateway strips before forwarding (clients sign the full path)

    def __attrs_post_init__(self) -> None:
        check_hotkey(self.service_hotkey)
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        if self.path_prefix and (not self.path_prefix.startswith("/") or self.path_prefix.endswith("/")):
            raise ValueError(f"path_prefix must start with '/' and not end with '/': {self.path_prefix!r}")


class GrantError(Exception):
    """A request the service refuses: HTTP ``status``, a short ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _bad(code: str, message: str) -> GrantError:
    return GrantError(400, code, message)


# -- validation of client-given values --------------------------------------------------------------


def check_partition_value(field: str, value: str) -> str:
    """A partition value (``source`` or ``date``) that may appear in a key, or a 400 naming the problem."""
    if not isinstance(value, str) or not value:
        raise _bad("invalid_name", f"{field} must be a non-empty string")
    if len(value) > _MAX_PARTITION_LENGTH:
        raise _bad("invalid_name", f"{field} is {len(value)} characters long; at most {_MAX_PARTITION_LENGTH} allowed")
    if ".." in value:
        raise _bad("invalid_name", f"{field} {value!r} contains '..'")
    if "/" in value or "\\" in value:
        raise _bad("invalid_name", f"{field} {value!r} contains a path separator")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise _bad("invalid_name", f"{field} {value!r} contains control characters")
    if not _PARTITION_CHARS.match(value):
        raise _bad("invalid_name", f"{field} {value!r} may only hold letters, digits, '_', '.' and '-'")
    return value


def check_date(value: str) -> str:
    check_partition_value("date", value)
    try:
        parsed = date_type.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != value:
        raise _bad("invalid_name", f"date {value!r} is not a calendar date in YYYY-MM-DD form")
    return value


def check_sha256(field: str, value: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.match(value):
        raise _bad("invalid_checksum", f"{field} must be 64 lower-case hex characters")
    return value


def check_key_text(field: str, value: str) -> str:
    if len(value) > _MAX_KEY_LENGTH:
        raise _bad("invalid_key", f"{field} is longer than {_MAX_KEY_LENGTH} characters")
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise _bad("invalid_key", f"{field} contains control characters")
    if ".." in value.split("/") or "//" in value or "\\" in value:
        raise _bad("invalid_key", f"{field} {value!r} contains an empty, '..' or backslash path segment")
    return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _etag(value: str | None) -> str:
    return (value or "").strip().strip('"')


# -- the S3 side --------------------------------------------------------------------------------------


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


# -- the application ----------------------------------------------------------------------------------


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
        self.bucket = bucket or BucketAccess(settings)
        self.clock = clock
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self._ticket_key = self.bucket.ticket_key()

    # -- plumbing --------------------------------------------------------------------------------

    async def dispatch(self, request: Request, handler: Callable[..., Any], *, authenticated: bool = True) -> Response:
        started = time.perf_counter()
        event: dict[str, Any] = {"event": "request", "method": request.method, "path": request.url.path,
                                 "client": request.client.host if request.client else None}
        try:
            if authenticated:
                body = await self._read_body(request)
                hotkey = await self._authenticate(request, body)
                event["hotkey"] = hotkey
                payload = await handler(hotkey, body, event)
            else:
                payload = await handler(request, event)
            response: Response = payload if isinstance(payload, Response) else JSONResponse(payload)
        except GrantError as error:
            event["reason"] = error.code
            response = JSONResponse(protocol.error_body(error.code, error.message), error.status, headers=error.headers)
        except ClientDisconnect:
            event["reason"] = "client_disconnect"
            response = Response(status_code=400)
        except Exception as error:  # a bug or the storage failing: never leak details, always log them
            from botocore.exceptions import BotoCoreError, ClientError

            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) if isinstance(error, ClientError) else 500
            if isinstance(error, ClientError) and 400 <= status < 500 and status not in (401, 403):
                code = error.response.get("Error", {}).get("Code", "")
                message = error.response.get("Error", {}).get("Message", "")
                event["reason"] = "storage_refused"
                response = JSONResponse(
                    protocol.error_body("storage_refused", f"the store refused the operation: {code} {message}".strip()), 409
                )
            elif isinstance(error, (BotoCoreError, ClientError)):
                event["reason"] = "storage_error"
                if status in (401, 403):
                    log.error("the store refused the service's own credentials: %s", error)
                else:
                    log.warning("storage error: %s", error)
                response = JSONResponse(
                    protocol.error_body("storage_error", "the storage backend failed; retry later"), 502
                )
            else:
                event["reason"] = "internal_error"
                log.exception("internal error handling %s %s", request.method, request.url.path)
                response = JSONResponse(protocol.error_body("internal_error", "internal error"), 500)
        event["status"] = response.status_code
        event["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info(json.dumps(event, sort_keys=True, default=str), extra={"grant_event": event})
        return response

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_large = GrantError(413, "body_too_large", f"request body is larger than {limit} bytes")
        if declared is not None:
            try:
                declared_size = int(declared)
            except ValueError:
                raise _bad("bad_request", "Content-Length is not an integer") from None
            if declared_size > _DRAIN_LIMIT:
                too_large.headers["Connection"] = "close"
                raise too_large
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                # Keep reading (and dropping) so the client sees the 413 instead of a reset connection.
                if received > _DRAIN_LIMIT:
                    too_large.headers["Connection"] = "close"
                    raise too_large
                chunks = []
                continue
            chunks.append(chunk)
        if received > limit:
            raise too_large
        return b"".join(chunks)

    def signed_path(self, request: Request) -> str:
        """The request target the client signed: gateway prefix + path as received + query."""
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if raw else request.scope["path"]
        query = request.scope.get("query_string", b"")
        return self.settings.path_prefix + path + (f"?{query.decode('latin-1')}" if query else "")

    async def _authenticate(self, request: Request, body: bytes) -> str:
        window = self.settings.freshness_window
        try:
            hotkey = http_auth.verify_request(
                request.headers,
                body,
                request.method,
                self.signed_path(request),
                self.settings.service_hotkey,
                max_age=window,
                allowed_skew=window,
                nonce_store=self.nonce_store,
                now_ns=int(self.clock() * 1e9),
            )
        except http_auth.AuthenticationError as error:
            raise GrantError(401, error.reason, str(error)) from None
        wait = self.limiter.acquire(hotkey)
        if wait is not None:
            raise GrantError(
                429,
                "rate_limited",
                f"too many requests from {hotkey}; retry in {wait:.2f}s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return hotkey

    @staticmethod
    def _decode(body: bytes, kind: type[Any]) -> Any:
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as error:
            raise _bad("invalid_request", f"invalid request: {error}") from None
        except msgspec.DecodeError as error:
            raise _bad("malformed_json", f"request body is not valid JSON: {error}") from None

    async def _require_registered(self, hotkey: str) -> None:
        if not await run_in_threadpool(self.membership.is_registered, hotkey):
            raise GrantError(403, "not_registered", f"hotkey {hotkey} is not registered on the subnet")

    async def _require_validator(self, hotkey: str) -> None:
        if not await run_in_threadpool(self.membership.has_validator_permit, hotkey):
            raise GrantError(403, "no_validator_permit", f"hotkey {hotkey} has no validator permit on the subnet")

    def _key(self, hotkey: str, source: str, date: str, sha256: str) -> str:
        check_partition_value("source", source)
        check_date(date)
        check_sha256("sha256", sha256)
        return object_key(hotkey, source, date, sha256)

    def _check_size(self, size: int) -> None:
        if size <= 0:
            raise _bad("invalid_size", f"size must be a positive number of bytes, got {size}")
        if size > self.settings.max_object_bytes:
            raise GrantError(
                413, "object_too_large", f"size {size} is over this service's limit of {self.settings.max_object_bytes} bytes"
            )

    async def _present(self, key: str, sha256: str, size: int) -> dict[str, Any] | None:
        """The answer for an object that is already stored intact, else None."""
        head = await run_in_threadpool(self.bucket.head, key)
        if head is None:
            return None
        recorded = (head.get("Metadata") or {}).get("sha256")
        if head.get("ContentLength") == size and recorded == sha256:
            return {"status": "present", "key": key, "etag": _etag(head.get("ETag")), "size": size}
        log.warning("object %s exists but differs (size %s, sha256 %s); granting a new upload", key, head.get("ContentLength"), recorded)
        return None

    # -- handlers --------------------------------------------------------------------------------

    async def upload_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: UploadGrantRequest = self._decode(body, UploadGrantRequest)
        key = self._key(hotkey, request.source, request.date, request.sha256)
        event["key"] = key
        self._check_size(request.size)
        if request.size > self.settings.max_single_upload_bytes:
            raise _bad(
                "use_multipart",
                f"size {request.size} is over {self.settings.max_single_upload_bytes} bytes: ask {protocol.PATH_MULTIPART}",
            )
        present = await self._present(key, request.sha256, request.size)
        if present is not None:
            event["present"] = True
            return present
        return self._single_grant(key, request.sha256, request.size)

    def _single_grant(self, key: str, sha256: str, size: int) -> dict[str, Any]:
        settings = self.settings
        ttl = settings.upload_grant_ttl
        checksum = sha256_b64(sha256)
        expires_at = int(self.clock()) + ttl
        if settings.upload_method == "put":
            url = self.bucket.presign_client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": settings.bucket,
                    "Key": key,
                    "ContentLength": size,
                    "ChecksumSHA256": checksum,
                    "Metadata": {"sha256": sha256},
                },
                ExpiresIn=ttl,
            )
            headers = {
                "Content-Length": str(size),
                "x-amz-checksum-sha256": checksum,
                "x-amz-meta-sha256": sha256,
            }
            return {"status": "upload", "method": "put", "key": key, "url": url, "headers": headers, "expires_at": expires_at}
        fields = {
            "Content-Type": protocol.PARQUET_CONTENT_TYPE,
            "x-amz-checksum-algorithm": "SHA256",
            "x-amz-checksum-sha256": checksum,
            "x-amz-meta-sha256": sha256,
        }
        conditions: list[Any] = [{name: value} for name, value in fields.items()]
        conditions.append(["content-length-range", size, size])
        post = self.bucket.presign_client.generate_presigned_post(
            settings.bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=ttl
        )
        return {
            "status": "upload",
            "method": "post",
            "key": key,
            "url": post["url"],
            "fields": post["fields"],
            "expires_at": expires_at,
        }

    async def multipart_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: MultipartGrantRequest = self._decode(body, MultipartGrantRequest)
        key = self._key(hotkey, request.source, request.date, request.sha256)
        event["key"] = key
        self._check_size(request.size)
        part_size = request.part_size
        if not self.settings.min_part_size <= part_size <= S3_MAX_PART_SIZE:
            raise _bad(
                "invalid_part_size",
                f"part_size must be between {self.settings.min_part_size} and {S3_MAX_PART_SIZE} bytes, got {part_size}",
            )
        count = math.ceil(request.size / part_size)
        if count > S3_MAX_PARTS:
            raise _bad("invalid_part_size", f"{count} parts of {part_size} bytes; S3 allows at most {S3_MAX_PARTS}")
        if len(request.part_sha256) != count:
            raise _bad(
                "invalid_parts", f"a {request.size}-byte object in {part_size}-byte parts has {count} parts, got {len(request.part_sha256)} checksums"
            )
        for index, digest in enumerate(request.part_sha256, 1):
            check_sha256(f"part_sha256[{index}]", digest)
        present = await self._present(key, request.sha256, request.size)
        if present is not None:
            event["present"] = True
            return present
        settings = self.settings
        created = await run_in_threadpool(
            lambda: self.bucket.client.create_multipart_upload(
                Bucket=settings.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                ContentType=protocol.PARQUET_CONTENT_TYPE,
                Metadata={"sha256": request.sha256},
            )
        )
        upload_id = created["UploadId"]
        ttl = settings.multipart_grant_ttl
        expires_at = int(self.clock()) + ttl
        def presign_parts() -> list[dict[str, Any]]:  # up to 10,000 signatures: off the event loop
            parts = []
            for number, digest in enumerate(request.part_sha256, 1):
                size = min(part_size, request.size - (number - 1) * part_size)
                checksum = sha256_b64(digest)
                url = self.bucket.presign_client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": settings.bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": number,
                        "ContentLength": size,
                        "ChecksumSHA256": checksum,
                    },
                    ExpiresIn=ttl,
                )
                parts.append(
                    {
                        "part_number": number,
                        "size": size,
                        "url": url,
                        "headers": {"Content-Length": str(size), "x-amz-checksum-sha256": checksum},
                    }
                )
            return parts

        parts = await run_in_threadpool(presign_parts)
        ticket = self._make_ticket(
            {
                "k": key,
                "u": upload_id,
                "s": request.size,
                "p": part_size,
                "n": count,
                "d": self._parts_digest(request.part_sha256),
                "e": expires_at + 900,
            }
        )
        event["parts"] = count
        return {
            "status": "multipart",
            "key": key,
            "upload_id": upload_id,
            "ticket": ticket,
            "part_size": part_size,
            "parts": parts,
            "expires_at": expires_at,
        }

    @staticmethod
    def _parts_digest(part_sha256: list[str]) -> str:
        return hashlib.sha256("\n".join(part_sha256).encode()).hexdigest()

    def _make_ticket(self, claims: dict[str, Any]) -> str:
        body = _b64url(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
        mac = hmac.new(self._ticket_key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64url(mac)}"

    def _read_ticket(self, ticket: str) -> dict[str, Any]:
        invalid = GrantError(403, "invalid_ticket", "the multipart ticket is invalid or was not issued by this service")
        try:
            body, mac = ticket.split(".", 1)
            expected = hmac.new(self._ticket_key, body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64url(mac)):
                raise invalid
            claims = json.loads(_unb64url(body))
        except (ValueError, binascii.Error):
            raise invalid from None
        if not isinstance(claims, dict):
            raise invalid
        if claims.get("e", 0) < self.clock():
            raise GrantError(403, "expired_ticket", "the multipart ticket has expired; start a new upload")
        return claims

    def _own_key(self, hotkey: str, key: str) -> str:
        check_key_text("key", key)
        if hotkey_of_key(key) != hotkey or not key.startswith(miner_prefix(hotkey)):
            raise GrantError(403, "outside_prefix", f"key {key!r} is outside your prefix {miner_prefix(hotkey)!r}")
        return key

    async def complete_multipart(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: CompleteRequest = self._decode(body, CompleteRequest)
        key = self._own_key(hotkey, request.key)
        event["key"] = key
        claims = self._read_ticket(request.ticket)
        if claims.get("k") != key or claims.get("u") != request.upload_id:
            raise GrantError(403, "invalid_ticket", "the ticket was issued for another key or upload")
        count, part_size, size = int(claims["n"]), int(claims["p"]), int(claims["s"])
        numbers = [part.part_number for part in request.parts]
        if numbers != list(range(1, count + 1)):
            raise _bad("invalid_parts", f"parts must be numbered 1..{count} in order, got {len(numbers)} parts")
        digests = [part.sha256 for part in request.parts]
        if self._parts_digest(digests) != claims["d"]:
            raise _bad("invalid_parts", "the parts' sha256 values differ from the granted ones")
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
                    raise _bad("invalid_parts", f"part {part.part_number} was not uploaded")
                if int(found["Size"]) != expected or _etag(found.get("ETag")) != _etag(part.etag):
                    raise GrantError(409, "part_mismatch", f"part {part.part_number} differs from the granted part")
            result = self.bucket.client.complete_multipart_upload(
                Bucket=settings.bucket,
                Key=key,
                UploadId=request.upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": part.part_number, "ETag": f'"{_etag(part.etag)}"', "ChecksumSHA256": sha256_b64(part.sha256)}
                        for part in request.parts
                    ]
                },
            )
            head = self.bucket.head(key)
            if head is None or head.get("ContentLength") != size:
                self.bucket.client.delete_object(Bucket=settings.bucket, Key=key)
                raise GrantError(409, "size_mismatch", f"the completed object is not {size} bytes; it was removed")
            return {"status": "complete", "key": key, "etag": _etag(result.get("ETag")), "size": size}

        return await run_in_threadpool(finish)

    async def abort_multipart(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_registered(hotkey)
        request: AbortRequest = self._decode(body, AbortRequest)
        key = self._own_key(hotkey, request.key)
        event["key"] = key
        from botocore.exceptions import ClientError

        def abort() -> None:
            try:
                self.bucket.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=request.upload_id)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

        await run_in_threadpool(abort)
        return {"status": "aborted", "key": key}

    async def read_grant(self, hotkey: str, body: bytes, event: dict[str, Any]) -> dict[str, Any]:
        await self._require_validator(hotkey)
        request: ReadGrantRequest = self._decode(body, ReadGrantRequest)
        try:
            prefix = miner_prefix(request.miner_hotkey)
        except ValueError as error:
            raise _bad("invalid_hotkey", f"miner_hotkey: {error}") from None
        event["miner"] = request.miner_hotkey
        settings = self.settings
        if len(request.keys) > settings.max_keys:
            raise _bad("too_many_keys", f"at most {settings.max_keys} keys per read grant, got {len(request.keys)}")
        ttl = settings.read_grant_ttl
        answer: dict[str, Any] = {"prefix": prefix, "list_url": None, "objects": {}, "expires_at": int(self.clock()) + ttl}
        if request.list_page:
            max_keys = settings.max_keys if request.max_keys is None else request.max_keys
            if not 1 <= max_keys <= settings.max_keys:
                raise _bad("invalid_request", f"max_keys must be between 1 and {settings.max_keys}, got {max_keys}")
            params: dict[str, Any] = {"Bucket": settings.bucket, "Prefix": prefix, "MaxKeys": max_keys}
            token = request.continuation_token
            if token is not None:
                if not token or len(token) > _MAX_TOKEN_LENGTH or not token.isprintable():
                    raise _bad("invalid_request", "continuation_token must be a printable string of at most 2048 characters")
                params["ContinuationToken"] = token
            answer["list_url"] = self.bucket.presign_client.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=ttl)
        for key in request.keys:
            check_key_text("key", key)
            if not key.startswith(prefix):
                raise GrantError(403, "outside_prefix", f"key {key!r} is outside the miner's prefix {prefix!r}")

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
            "min_part_size": settings.min_part_size,
            "max_parts": S3_MAX_PARTS,
            "max_keys": settings.max_keys,
            "max_body_bytes": settings.max_body_bytes,
            "key_layout": "hotkey={hotkey}/source={source}/date={YYYY-MM-DD}/{sha256[:%d]}.parquet" % NAME_HASH_CHARS,
        }

    async def health(self, request: Request, event: dict[str, Any]) -> Response:
        if request.query_params.get("deep") in ("1", "true"):
            try:
                await run_in_threadpool(lambda: self.bucket.client.head_bucket(Bucket=self.settings.bucket))
            except Exception as error:  # any failure means "not healthy"; the detail is logged only
                log.warning("deep health check failed: %s", error)
                return JSONResponse({"status": "unhealthy", "detail": "bucket not reachable"}, 503)
        return JSONResponse({"status": "ok"})


def create_app(
    settings: GrantSettings,
    membership: SubnetMembership,
    *,
    nonce_store: http_auth.NonceStore | None = None,
    bucket: BucketAccess | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The grant service as an ASGI app (``app.state.service`` is its :class:`GrantService`)."""
    service = GrantService(settings, membership, nonce_store=nonce_store, bucket=bucket, clock=clock)

    def signed(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await service.dispatch(request, handler)

        return endpoint

    def public(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await service.dispatch(request, handler, authenticated=False)

        return endpoint

    routes = [
        Route(protocol.PATH_HEALTH, public(service.health), methods=["GET"]),
        Route(protocol.PATH_INFO, public(service.info), methods=["GET"]),
        Route(protocol.PATH_UPLOAD, signed(service.upload_grant), methods=["POST"]),
        Route(protocol.PATH_MULTIPART, signed(service.multipart_grant), methods=["POST"]),
        Route(protocol.PATH_COMPLETE, signed(service.complete_multipart), methods=["POST"]),
        Route(protocol.PATH_ABORT, signed(service.abort_multipart), methods=["POST"]),
        Route(protocol.PATH_READ, signed(service.read_grant), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service
    return app


# -- configuration from the environment (for ``uvicorn --factory`` with several workers) ----------------

ENV_PREFIX = "STORAGE_CORE_S3_"


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> GrantSettings:
    """GrantSettings from ``STORAGE_CORE_S3_*`` variables (names in plugins/s3/README.md), then overrides."""
    env = dict(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name)
        return value if value not in (None, "") else None

    values: dict[str, Any] = {
        "bucket": get("BUCKET"),
        "service_hotkey": get("SERVICE_HOTKEY"),
        "endpoint_url": get("ENDPOINT_URL"),
        "presign_endpoint_url": get("PRESIGN_ENDPOINT_URL"),
        "region": get("REGION"),
        "addressing_style": get("ADDRESSING_STYLE"),
        "access_key": get("ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": get("SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY") or None,
        "ticket_secret": (get("TICKET_SECRET") or "").encode() or None,
        "upload_method": get("UPLOAD_METHOD"),
        "path_prefix": get("PATH_PREFIX"),
    }
    numbers = {
        "freshness_window": ("FRESHNESS_WINDOW", float),
        "upload_grant_ttl": ("UPLOAD_GRANT_TTL", int),
        "multipart_grant_ttl": ("MULTIPART_GRANT_TTL", int),
        "read_grant_ttl": ("READ_GRANT_TTL", int),
        "max_object_bytes": ("MAX_OBJECT_BYTES", int),
        "max_keys": ("MAX_KEYS", int),
        "max_body_bytes": ("MAX_BODY_BYTES", int),
        "rate_limit": ("RATE_LIMIT", float),
        "rate_burst": ("RATE_BURST", int),
    }
    for field, (name, kind) in numbers.items():
        raw = get(name)
        if raw is not None:
            try:
                values[field] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a {kind.__name__}") from None
    values.update(overrides)
    values = {name: value for name, value in values.items() if value is not None}
    for required in ("bucket", "service_hotkey"):
        if required not in values:
            raise ValueError(f"{ENV_PREFIX}{required.upper()} is required")
    return GrantSettings(**values)


def app_from_env() -> Starlette:
    """``uvicorn --factory storage_core_s3.grants:app_from_env``: settings, membership and nonce store from env."""
    from storage_core_s3.membership import membership_from_env
    from storage_core_s3.nonces import SqliteNonceStore

    settings = settings_from_env()
    nonce_db = os.environ.get(ENV_PREFIX + "NONCE_DB")
    store = SqliteNonceStore(nonce_db, retention=2 * settings.freshness_window + 10) if nonce_db else None
    return create_app(settings, membership_from_env(), nonce_store=store)
