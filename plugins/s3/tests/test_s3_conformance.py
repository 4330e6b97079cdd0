"""The storage-core conformance kit, run against SeaweedFS through the grant service."""

from __future__ import annotations

from typing import Any

import pytest

from storage_core.testing.conformance import BackendConformance, ConformanceTarget
from storage_core_s3 import plugin


class TestS3Conformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, shared: Any, keys: dict[str, Any]) -> ConformanceTarget:
        return ConformanceTarget(
            backend_id="s3",
            plugin=plugin,
            context_for=lambda signer: shared.context(signer),
            miners=(keys["miner0"], keys["miner1"]),
            validator=keys["validator"],
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
        )
