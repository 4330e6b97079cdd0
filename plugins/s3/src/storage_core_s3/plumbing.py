"""Request plumbing of the grant service: bodies, the signed path, client addresses, refusing encoded paths,
and mapping every failure to a JSON answer that never leaks internals."""

from __future__ import annotations

import logging
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from storage_core_s3 import protocol
from storage_core_s3.checks import GrantError, bad

log = logging.getLogger("storage_core_s3.grants")
DRAIN_LIMIT = 16 * 1024 * 1024  # an oversized body is read (and dropped) up to this size, then cut off


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (else a 413 the client gets to read)."""
    declared = request.headers.get("content-length")
    too_large = GrantError(413, "body_too_large", f"request body is larger than {limit} bytes")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise bad("bad_request", "Content-Length is not an integer") from None
        if declared_size > DRAIN_LIMIT:
            too_large.headers["Connection"] = "close"
            raise too_large
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            # Keep reading (and dropping) so the client sees the 413 instead of a reset connection.
            if received > DRAIN_LIMIT:
                too_large.headers["Connection"] = "close"
                raise too_large
            chunks = []
            continue
        chunks.append(chunk)
    if received > limit:
        raise too_large
    return b"".join(chunks)


def signed_path(request: Request, path_prefix: str) -> str:
    """The request target the client signed: gateway prefix + path as received + query."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.scope["path"]
    query = request.scope.get("query_string", b"")
    return path_prefix + path + (f"?{query.decode('latin-1')}" if query else "")


def client_address(request: Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The peer address; ``X-Forwarded-For`` counts only when the peer is a configured proxy, and then its
    right-most address that is not itself a trusted proxy (the one the proxy saw)."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if peer is None or peer not in trusted_proxies or not forwarded:
        return peer
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if hop not in trusted_proxies:
            return hop
    return peer


def rate_limited(hotkey: str, wait: float, what: str = "requests") -> GrantError:
    return GrantError(429, "rate_limited", f"too many {what} from {hotkey}; retry in {wait:.2f}s",
                      headers={"Retry-After": str(max(1, math.ceil(wait)))})


def error_response(error: BaseException, request: Request, event: dict[str, Any]) -> Response:
    """The answer for a failed request: the client's mistakes as 4xx, the store's and ours as 5xx (logged)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, GrantError):
        event["reason"] = error.code
        return JSONResponse(protocol.error_body(error.code, error.message), error.status, headers=error.headers)
    if isinstance(error, ClientDisconnect):
        event["reason"] = "client_disconnect"
        return Response(status_code=400)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500) if isinstance(error, ClientError) else 500
    if isinstance(error, ClientError) and 400 <= status < 500 and status not in (401, 403):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        event["reason"] = "storage_refused"
        return JSONResponse(
            protocol.error_body("storage_refused", f"the store refused the operation: {code} {message}".strip()), 409
        )
    if isinstance(error, (BotoCoreError, ClientError)):
        event["reason"] = "storage_error"
        if status in (401, 403):
            log.error("the store refused the service's own credentials: %s", error)
        else:
            log.warning("storage error: %s", error)
        return JSONResponse(protocol.error_body("storage_error", "the storage backend failed; retry later"), 502)
    event["reason"] = "internal_error"
    log.error("internal error handling %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(protocol.error_body("internal_error", "internal error"), 500)


class RefuseEncodedPaths:
    """ASGI middleware: a path with any percent-escape (``/v1/read%2fgrant``) is a 404 before routing, so the
    route a request reaches is the path a gateway's exact-path rules saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            if b"%" in raw.split(b"?", 1)[0]:
                body = protocol.error_body("encoded_path", "percent-encoded paths are not served")
                await JSONResponse(body, 404)(scope, receive, send)
                return
        await self.app(scope, receive, send)
