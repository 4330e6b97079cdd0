"""The S3 client against a grant service that changes identity at the same URL (redeployed with a new
hotkey, or a recycled port): the client's cached service hotkey must not lock it out."""

from __future__ import annotations

import httpx

from storage_core.chain.keys import keypair_from_uri
from storage_core.membership import StaticMembership
from storage_core_s3 import protocol
from storage_core_s3.client import GrantClient
from storage_core_s3.grants import GrantSettings, create_app
from storage_core_s3.options import S3Options
from storage_core_s3.server import ServerThread

VALIDATOR = keypair_from_uri("//identity-validator")
MINER = keypair_from_uri("//identity-miner")


def service(identity: str, port: int = 0) -> ServerThread:
    # Read grants are presigned locally: the store is never contacted, so no S3 server is needed here.
    settings = GrantSettings(bucket="identity", service_hotkey=keypair_from_uri(identity).ss58_address,
                             endpoint_url="http://127.0.0.1:9", access_key="key", secret_key="secret")
    return ServerThread(create_app(settings, StaticMembership({MINER.ss58_address}, {VALIDATOR.ss58_address})),
                        port=port).start()


def read_grant(url: str) -> dict:
    options = S3Options.from_mapping({"bucket": "identity", "grant_url": url, "backoff_base": 0.01,
                                      "backoff_max": 0.05, "max_attempts": 2})
    with httpx.Client(timeout=10) as http:
        return GrantClient(options, VALIDATOR, http).call(protocol.PATH_READ, {"miner_hotkey": MINER.ss58_address})


def test_a_new_service_identity_at_the_same_url_is_picked_up() -> None:
    first = service("//identity-service-a")
    url, port = first.url, first.port
    try:
        assert read_grant(url)["list_url"]
    finally:
        first.stop()
    second = service("//identity-service-b", port=port)
    try:
        assert second.url == url
        assert read_grant(url)["list_url"]  # was: 401 wrong_receiver for the next 10 minutes
    finally:
        second.stop()
