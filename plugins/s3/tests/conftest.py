"""Fixtures of the S3 plugin's tests: one real SeaweedFS per session, grant services on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from storage_core.chain.keys import keypair_from_uri
from storage_core.membership import StaticMembership
from storage_core.values import BackendContext
from storage_core_s3.grants import BucketAccess, GrantSettings, create_app
from storage_core_s3.server import ServerThread
from storage_core_s3.testing import SeaweedFS


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS ``weed mini``) shared by the session, stopped by its pid at the end."""
    directory = tmp_path_factory.mktemp("seaweed")
    with SeaweedFS(directory) as server:
        yield server


@pytest.fixture(scope="session")
def keys() -> dict[str, Any]:
    """Deterministic hotkeys: two miners, a validator, an unregistered hotkey and the service's identity."""
    return {
        "miner0": keypair_from_uri("//s3-miner-0"),
        "miner1": keypair_from_uri("//s3-miner-1"),
        "miner2": keypair_from_uri("//s3-miner-2"),
        "validator": keypair_from_uri("//s3-validator-0"),
        "outsider": keypair_from_uri("//s3-unregistered"),
        "service": keypair_from_uri("//s3-grant-service"),
    }


@pytest.fixture(scope="session")
def membership(keys: dict[str, Any]) -> StaticMembership:
    return StaticMembership(
        registered=frozenset(keys[name].ss58_address for name in ("miner0", "miner1", "miner2")),
        validators=frozenset({keys["validator"].ss58_address}),
    )


@attrs.define
class GrantDeployment:
    """A bucket, its grant service running in a thread, and helpers to inspect the bucket."""

    seaweed: SeaweedFS
    bucket: str
    settings: GrantSettings
    server: ServerThread
    app: Any

    @property
    def url(self) -> str:
        return self.server.url

    def keys(self, prefix: str = "") -> list[str]:
        return self.seaweed.list_keys(self.bucket, prefix)

    def context(self, signer: Any, **options: Any) -> BackendContext:
        merged = {"bucket": self.bucket, "grant_url": self.url, "backoff_base": 0.05, "backoff_max": 0.5, **options}
        return BackendContext(backend_id="s3", options=merged, hotkey=signer.ss58_address, signer=signer)


def _deployer(seaweed: SeaweedFS, keys: dict[str, Any], membership: StaticMembership,
              servers: list[ServerThread], buckets: list[str] | None = None) -> Callable[..., GrantDeployment]:
    def make(bucket: str | None = None, membership_: Any = None, **settings: Any) -> GrantDeployment:
        name = seaweed.create_bucket(bucket)
        if buckets is not None and bucket is None:
            buckets.append(name)
        grant_settings = GrantSettings(
            bucket=name,
            service_hotkey=keys["service"].ss58_address,
            endpoint_url=seaweed.endpoint_url,
            access_key=seaweed.access_key,
            secret_key=seaweed.secret_key,
            **settings,
        )
        # Reuse the server's admin client (same endpoint and credentials): creating boto3 clients is slow.
        access = BucketAccess(grant_settings, client=seaweed.admin) if not settings.get("presign_endpoint_url") else None
        app = create_app(grant_settings, membership_ or membership, bucket=access)
        server = ServerThread(app).start()
        servers.append(server)
        return GrantDeployment(seaweed, name, grant_settings, server, app)

    return make


@pytest.fixture
def deploy(seaweed: SeaweedFS, keys: dict[str, Any], membership: StaticMembership) -> Iterator[Callable[..., GrantDeployment]]:
    """Factory: ``deploy(**settings)`` makes a fresh bucket with its own grant service; both go after the test."""
    servers: list[ServerThread] = []
    buckets: list[str] = []
    yield _deployer(seaweed, keys, membership, servers, buckets)
    for server in servers:
        server.stop()
    for bucket in buckets:  # a bucket holds volumes of its own: free them for the tests that follow
        seaweed.delete_bucket(bucket)


@pytest.fixture(scope="session")
def shared(seaweed: SeaweedFS, keys: dict[str, Any], membership: StaticMembership) -> Iterator[GrantDeployment]:
    """One grant service and bucket shared by tests that only add their own data."""
    servers: list[ServerThread] = []
    yield _deployer(seaweed, keys, membership, servers)()
    for server in servers:
        server.stop()


@pytest.fixture
def fresh(deploy: Callable[..., GrantDeployment]) -> GrantDeployment:
    """A bucket of this test's own (so 'nothing stored' means an empty listing)."""
    return deploy()


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    directory = tmp_path / "staging"
    directory.mkdir()
    return directory
