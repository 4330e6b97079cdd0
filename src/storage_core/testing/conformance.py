"""The conformance kit: one shared test suite that every storage backend package runs.

Subclass ``BackendConformance`` in your backend's tests and provide a ``conformance_target`` fixture
(see docs/writing-a-backend.md). The kit calls your hook implementations through a pluggy plugin
manager exactly as the dispatcher does (only the arguments your functions name are passed).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pluggy
import pytest

from storage_core import hookspecs
from storage_core.chunks import write_chunk
from storage_core.errors import StorageCoreError
from storage_core.layout import key_for
from storage_core.testing.data import make_batch, make_table, uris_of
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    StagedFile,
    UploadBatch,
    UploadReceipt,
    ValidationResult,
)


@attrs.frozen
class ConformanceTarget:
    """A configured backend under test: its plugin module and the identities it accepts."""

    backend_id: str
    plugin: ModuleType | object
    context_for: Callable[[Any], BackendContext]  # signer (miner or validator) -> context
    miners: tuple[Any, Any]  # two miner signers (bittensor Keypair or Wallet) the backend accepts
    validator: Any  # a signer allowed to validate


class BackendHarness:
    """Calls one plugin's hooks the way the dispatcher does."""

    def __init__(self, target: ConformanceTarget) -> None:
        self.target = target
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.manager.register(target.plugin, name=f"conformance-{target.backend_id}")

    @staticmethod
    def hotkey(signer: Any) -> str:
        from storage_core.chain.keys import hotkey_address

        return hotkey_address(signer)

    def descriptors(self) -> list[BackendDescriptor]:
        return [d for result in self.manager.hook.storage_backends() for d in result]

    def upload(self, signer: Any, batch: UploadBatch) -> UploadReceipt:
        results = self.manager.hook.storage_upload(context=self.target.context_for(signer), batch=batch)
        assert len(results) == 1, f"expected one receipt, got {results!r}"
        return results[0]

    def validate(self, miner_hotkey: str, uris: list[str]) -> ValidationResult:
        results = self.manager.hook.storage_validate(
            context=self.target.context_for(self.target.validator), miner_hotkey=miner_hotkey, uris=tuple(uris)
        )
        assert len(results) == 1, f"expected one validation result, got {results!r}"
        return results[0]


class BackendConformance:
    """Behaviour every backend must show. Subclass it and provide the ``conformance_target`` fixture."""

    #: Rows of the large-batch test; the issue's minimum is 100,000.
    large_batch_rows = 100_000

    @pytest.fixture
    def conformance_target(self) -> ConformanceTarget:
        pytest.fail("subclasses of BackendConformance must provide a 'conformance_target' fixture")

    @pytest.fixture
    def harness(self, conformance_target: ConformanceTarget) -> BackendHarness:
        return BackendHarness(conformance_target)

    @pytest.fixture
    def staging(self, tmp_path: Path) -> Iterator[Path]:
        directory = tmp_path / "staging"
        directory.mkdir()
        yield directory
        shutil.rmtree(directory, ignore_errors=True)

    def _batch(self, harness: BackendHarness, staging: Path, miner: int = 0, **kwargs: Any) -> tuple[Any, UploadBatch]:
        signer = harness.target.miners[miner]
        directory = staging / f"m{miner}-{kwargs.get('seed', 0)}-{kwargs.get('source', 'x')}"
        return signer, make_batch(directory, harness.hotkey(signer), **kwargs)

    def test_descriptor_names_the_backend(self, harness: BackendHarness) -> None:
        descriptors = {d.id: d for d in harness.descriptors()}
        assert harness.target.backend_id in descriptors
        descriptor = descriptors[harness.target.backend_id]
        assert descriptor.api_version == PLUGIN_API_VERSION
        assert {"upload", "validate"} <= descriptor.capabilities

    def test_uploaded_uris_are_all_found(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=2_000, chunks=2, seed=11)
        receipt = harness.upload(signer, batch)
        assert receipt.backend == harness.target.backend_id
        uris = uris_of(batch)
        result = harness.validate(batch.miner_hotkey, uris)
        assert result.found == frozenset(uris)
        assert result.requests >= 1 and result.problems == ()

    def test_receipt_describes_every_object(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=500, chunks=2, seed=12, source="reddit")
        receipt = harness.upload(signer, batch)
        by_sha = {o.sha256: o for o in receipt.objects}
        assert set(by_sha) == {f.sha256 for f in batch.files}
        for staged in batch.files:
            stored = by_sha[staged.sha256]
            assert stored.size_bytes == staged.size_bytes
            assert stored.key.endswith(key_for(batch.miner_hotkey, staged)), stored.key

    def test_absent_uris_are_not_found(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=300, seed=13)
        harness.upload(signer, batch)
        present = uris_of(batch)[:5]
        absent = [f"https://x.com/nobody/status/absent{i}" for i in range(5)]
        result = harness.validate(batch.miner_hotkey, present + absent)
        assert result.found == frozenset(present)

    def test_reupload_is_idempotent(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=400, chunks=2, seed=14)
        first = harness.upload(signer, batch)
        second = harness.upload(signer, batch)
        assert {o.key for o in first.objects} == {o.key for o in second.objects}
        assert all(o.already_present for o in second.objects)
        result = harness.validate(batch.miner_hotkey, uris_of(batch))
        assert result.found == frozenset(uris_of(batch))

    def test_other_miners_data_never_counts(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=300, seed=15)
        harness.upload(signer, batch)
        other = harness.hotkey(harness.target.miners[1])
        result = harness.validate(other, uris_of(batch))
        assert result.found == frozenset()

    def test_large_batch(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=self.large_batch_rows, chunks=2, seed=16)
        receipt = harness.upload(signer, batch)
        assert len(receipt.objects) == 2
        uris = uris_of(batch)
        sample = uris[:: max(1, len(uris) // 200)] + uris[-3:]
        result = harness.validate(batch.miner_hotkey, sample)
        assert result.found == frozenset(sample)

    def test_malformed_batch_gets_a_clear_error(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=50, seed=17)
        staged = batch.files[0]
        tampered = attrs.evolve(staged, sha256="0" * 64)
        with pytest.raises(StorageCoreError, match=staged.path.name):
            harness.upload(signer, attrs.evolve(batch, files=(tampered,)))
        missing = attrs.evolve(staged, path=staging / "missing.parquet")
        with pytest.raises(StorageCoreError, match="missing.parquet"):
            harness.upload(signer, attrs.evolve(batch, files=(missing,)))
        assert harness.validate(batch.miner_hotkey, uris_of(batch)).found == frozenset()

    def test_wrong_schema_is_rejected(self, harness: BackendHarness, staging: Path) -> None:
        signer, batch = self._batch(harness, staging, rows=50, seed=18)
        not_parquet = staging / "not-parquet.parquet"
        not_parquet.write_bytes(b"this is not parquet")
        from storage_core.chunks import sha256_file

        bogus = StagedFile(
            path=not_parquet,
            sha256=sha256_file(not_parquet),
            size_bytes=not_parquet.stat().st_size,
            rows=1,
            source="x",
            date="2026-11-01",
            min_datetime=batch.files[0].min_datetime,
            max_datetime=batch.files[0].max_datetime,
            schema_version=1,
        )
        with pytest.raises(StorageCoreError, match="not-parquet"):
            harness.upload(signer, attrs.evolve(batch, files=(bogus,)))

    def test_sources_share_one_miner(self, harness: BackendHarness, staging: Path) -> None:
        signer, x_batch = self._batch(harness, staging, rows=200, seed=19, source="x")
        _, reddit_batch = self._batch(harness, staging, rows=200, seed=19, source="reddit")
        harness.upload(signer, attrs.evolve(x_batch, files=x_batch.files + reddit_batch.files))
        uris = uris_of(x_batch) + uris_of(reddit_batch)
        assert harness.validate(x_batch.miner_hotkey, uris).found == frozenset(uris)


__all__ = ["BackendConformance", "BackendHarness", "ConformanceTarget", "make_batch", "make_table", "write_chunk"]
