"""The storage-core conformance kit against the development Hub, through the real huggingface_hub client."""

from __future__ import annotations

import pytest

import storage_core_huggingface.plugin
from storage_core.testing.conformance import BackendConformance, ConformanceTarget


class TestHuggingFaceConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, hf_world) -> ConformanceTarget:
        return ConformanceTarget(
            backend_id="huggingface",
            plugin=storage_core_huggingface.plugin,
            miners=hf_world.miners,
            validator=hf_world.validator,
            context_for=hf_world.context,
            put_raw=hf_world.put_raw,  # a commit of raw bytes at path = key into miner 0's own repo
        )
