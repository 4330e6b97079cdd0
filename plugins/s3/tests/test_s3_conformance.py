"""The storage-core conformance kit, run against SeaweedFS through the grant service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage_core.testing.conformance import BackendConformance, ConformanceTarget
from storage_core_s3 import plugin


def _put_raw(deployment: Any) -> Callable[[str, bytes], None]:
    """Store raw bytes under any key with the bucket's admin client: no grant, no metadata, no checks."""

    def put_raw(key: str, data: bytes) -> None:
        deployment.seaweed.admin.put_object(Bucket=deployment.bucket, Key=key, Body=data)

    return put_raw


class TestS3Conformance(BackendConformance):
    """A bucket per test: the integrity tests plant a cheating miner's files, which must not reach other tests."""

    @pytest.fixture
    def conformance_target(self, fresh: Any, keys: dict[str, Any]) -> ConformanceTarget:
        return ConformanceTarget(
            backend_id="s3",
            plugin=plugin,
            context_for=lambda signer: fresh.context(signer),
            miners=(keys["miner0"], keys["miner1"]),
            validator=keys["validator"],
            put_raw=_put_raw(fresh),
        )


class TestS3ConformanceMultipart(BackendConformance):
    """The same kit with every object going up in parts (small threshold, presigned PUT parts)."""

    large_batch_rows = 100_000

    @pytest.fixture
    def conformance_target(self, deploy: Any, keys: dict[str, Any]) -> ConformanceTarget:
        deployment = deploy(min_part_size=64 * 1024)
        return ConformanceTarget(
            backend_id="s3",
            plugin=plugin,
            context_for=lambda signer: deployment.context(signer, multipart_threshold=1, part_size=5 * 1024 * 1024),
            miners=(keys["miner0"], keys["miner1"]),
            validator=keys["validator"],
            put_raw=_put_raw(deployment),
        )
