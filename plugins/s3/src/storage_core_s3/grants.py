"""The grant service: an ASGI app that holds the bucket's credentials and hands out presigned grants.

Miners never hold S3 credentials. A miner asks for an *upload grant* for one chunk with a request signed
by its hotkey; the service verifies the signature (fresh timestamp nonce, never replayed, bound to this
service's hotkey), checks the hotkey is registered on the subnet, builds the object key itself from the
signer's hotkey, the chunk's sha256 and the partition the miner names, and answers with a presigned POST
whose policy pins that exact key, the exact size, the sha256 (the store verifies it), every header the
object keeps, and an expiry of minutes. Large chunks get a *multipart grant*: one presigned URL per part,
each pinned to its size and sha256, and a completion step the service performs after checking every part,
hashing the completed object itself. Validators (hotkeys with a validator permit) get *read grants*.

    app = create_app(GrantSettings(bucket="...", service_hotkey="5F..."), StaticMembership({...}))
    uvicorn.run(app, host="127.0.0.1", port=8080)

This module wires the app; the parts live in ``settings``, ``checks`` (client values), ``bucket`` (store
access), ``tickets``, ``plumbing`` (requests and error mapping) and ``handlers``. See plugins/s3/README.md
for the deployment behind a gateway and the security model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from storage_core.chain import http_auth
from storage_core.membership import SubnetMembership
from storage_core_s3 import protocol
from storage_core_s3.bucket import BucketAccess
from storage_core_s3.checks import GrantError, check_date, check_key_text, check_partition_value, check_sha256
from storage_core_s3.handlers import GrantService
from storage_core_s3.plumbing import RefuseEncodedPaths
from storage_core_s3.settings import ENV_PREFIX, GrantSettings, settings_from_env

__all__ = [
    "ENV_PREFIX", "BucketAccess", "GrantError", "GrantService", "GrantSettings", "app_from_env", "check_date",
    "check_key_text", "check_partition_value", "check_sha256", "create_app", "settings_from_env",
]


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
    app = Starlette(routes=routes, middleware=[Middleware(RefuseEncodedPaths)])
    app.state.service = service
    return app


def app_from_env() -> Starlette:
    """``uvicorn --factory storage_core_s3.grants:app_from_env``: settings, membership and nonce store from env."""
    from storage_core_s3.membership import membership_from_env
    from storage_core_s3.nonces import SqliteNonceStore

    settings = settings_from_env()
    nonce_db = os.environ.get(ENV_PREFIX + "NONCE_DB")
    store = SqliteNonceStore(nonce_db, retention=2 * settings.freshness_window + 10) if nonce_db else None
    return create_app(settings, membership_from_env(), nonce_store=store)
