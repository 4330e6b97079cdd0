"""The conformance kit: one shared test suite that every storage backend package runs.

Subclass ``BackendConformance`` in your backend's tests and provide a ``conformance_target`` fixture
(see docs/writing-a-backend.md). The kit loads your plugin into the production ``PluginRegistry`` and
validates through the production ``Dispatcher``, so what passes here is what runs on a validator.

The integrity tests plant files a dishonest miner could store (``storage_core.testing.cheats``); they
need the target's optional ``put_raw`` (store raw bytes under a key, as a miner could) and are skipped
for a backend that has none, the way fsspec's abstract tests skip by capability.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from storage_core.chunks import read_uris, write_chunk
from storage_core.errors import StorageCoreError
from storage_core.schema import SCHEMA_VERSION
from storage_core.layout import key_for
from storage_core.dispatch import INVALID, UNKNOWN, VALID, ValidationReport
from storage_core.testing import cheats
from storage_core.testing.data import make_batch, make_table, recent_day, uris_of
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    StagedFile,
    StoredObject,
    UploadBatch,
    UploadReceipt,
    ValidationResult,
)


@attrs.frozen
class ConformanceTarget:
    """A configured backend under test: its plugin module and the identities it accepts.

    ``put_raw(key, data)`` stores ``data`` under object key ``key`` exactly as a miner could (bypassing the
    uploader's checks); without it the integrity tests are skipped.
    """

    backend_id: str
    plugin: ModuleType | object
    context_for: Callable[[Any], BackendContext]  # signer (miner or validator) -> context
    miners: tuple[Any, Any]  # two miner signers (bittensor Keypair or Wallet) the backend accepts
    validator: Any  # a signer allowed to validate
    put_raw: Callable[[str, bytes], None] | None = None


class BackendHarness:
    """Calls one plugin's hooks through the production registry and dispatcher."""

    def __init__(self, target: ConformanceTarget) -> None:
        from storage_core.config import parse_config
        from storage_core.dispatch import Dispatcher
        from storage_core.plugins import PluginRegistry

        self.target = target
        self.registry = PluginRegistry(points=[], environ={})
        record = self.registry.register(target.backend_id, target.plugin)
        assert record.status == "loaded", f"the plugin did not load: {record.reason}"
        config = parse_config({"backends": {target.backend_id: {"enabled": True, "rollout_percent": 100}},
                               "validation_policy": "all", "fallback_order": [target.backend_id]})
        self.dispatcher = Dispatcher(self.registry, config, lambda _backend: target.context_for(target.validator),
                                     timeout_s=300)

    @staticmethod
    def hotkey(signer: Any) -> str:
        from storage_core.chain.keys import hotkey_address

        return hotkey_address(signer)

    def descriptors(self) -> list[BackendDescriptor]:
        return [self.registry.descriptor(self.target.backend_id)]

    def upload(self, signer: Any, batch: UploadBatch) -> UploadReceipt:
        receipt = self.registry.call(self.target.backend_id, "storage_upload",
                                     context=self.target.context_for(signer), batch=batch)
        assert isinstance(receipt, UploadReceipt), receipt
        return receipt

    def report(self, miner_hotkey: str, uris: list[str], seed: str = "conformance") -> ValidationReport:
        """The dispatcher's verdicts for ``uris`` (policy ``all`` over this backend alone)."""
        return self.dispatcher.validate(miner_hotkey, uris, seed=seed)

    def listed_keys(self, miner_hotkey: str) -> list[str]:
        """Every key this backend's reader lists for the miner (as a validator sees them)."""
        store = self.registry.call(self.target.backend_id, "storage_reader",
                                   context=self.target.context_for(self.target.validator), miner_hotkey=miner_hotkey)
        try:
            return sorted(listed.key for listed in store.list_objects())
        finally:
            store.close()

    def validate(self, miner_hotkey: str, uris: list[str], seed: str = "conformance") -> ValidationResult:
        """This backend's answer; fails the test when the backend could not answer."""
        report = self.report(miner_hotkey, uris, seed)
        (outcome,) = report.outcomes
        assert outcome.ok and outcome.result is not None, f"{outcome.backend} could not validate: {outcome.error}"
        return outcome.result


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
        assert result.requests >= 1 and result.problems == () and not result.rejected
        assert result.rows and all(row.problem is None for row in result.rows)  # sampled rows, as stored
        assert set(harness.report(batch.miner_hotkey, uris).verdicts.values()) == {VALID}

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
            date=recent_day().isoformat(),
            min_datetime=batch.files[0].min_datetime,
            max_datetime=batch.files[0].max_datetime,
            schema_version=SCHEMA_VERSION,
        )
        with pytest.raises(StorageCoreError, match="not-parquet"):
            harness.upload(signer, attrs.evolve(batch, files=(bogus,)))

    def test_sources_share_one_miner(self, harness: BackendHarness, staging: Path) -> None:
        signer, x_batch = self._batch(harness, staging, rows=200, seed=19, source="x")
        _, reddit_batch = self._batch(harness, staging, rows=200, seed=19, source="reddit")
        harness.upload(signer, attrs.evolve(x_batch, files=x_batch.files + reddit_batch.files))
        uris = uris_of(x_batch) + uris_of(reddit_batch)
        assert harness.validate(x_batch.miner_hotkey, uris).found == frozenset(uris)


    # -- integrity: what a dishonest miner stores must make its claims invalid ----------------------

    @pytest.fixture
    def put_raw(self, harness: BackendHarness) -> Callable[[str, bytes], None]:
        if harness.target.put_raw is None:
            pytest.skip("the target has no put_raw: integrity tests need a way to store raw bytes")
        return harness.target.put_raw

    def _plant(self, harness: BackendHarness, put_raw: Callable[[str, bytes], None],
               planted: cheats.Planted, honest_rows: int = 300) -> tuple[str, list[str]]:
        """Store an honest file and ``planted`` for miner 0; return its hotkey and the honest file's URIs."""
        hotkey = harness.hotkey(harness.target.miners[0])
        honest = cheats.honest(hotkey, make_table(honest_rows, "x", seed=901, day=recent_day(2)))
        put_raw(honest.key, honest.data)
        for key, data in planted.also:
            put_raw(key, data)
        put_raw(planted.key, planted.data)
        return hotkey, list(honest.claims)

    def _assert_caught(self, harness: BackendHarness, put_raw: Callable[[str, bytes], None],
                       planted: cheats.Planted) -> ValidationReport:
        hotkey, honest_uris = self._plant(harness, put_raw, planted)
        claims = list(planted.claims[:20]) + honest_uris[:10]
        report = harness.report(hotkey, claims)
        verdicts = [report.verdicts[uri] for uri in planted.claims[:20]]
        assert verdicts == [INVALID] * len(verdicts), (planted.cheat, report.outcomes)
        assert all(report.verdicts[uri] == VALID for uri in honest_uris[:10]), (planted.cheat, report.outcomes)
        return report

    def _table(self, seed: int, rows: int = 500, source: str = "x") -> Any:
        return make_table(rows, source, seed=seed)

    def _hotkey(self, harness: BackendHarness) -> str:
        return harness.hotkey(harness.target.miners[0])

    def test_integrity_damaged_object(self, harness: BackendHarness, put_raw: Any) -> None:
        hotkey = self._hotkey(harness)
        report = self._assert_caught(harness, put_raw, cheats.damaged(cheats.honest(hotkey, self._table(902))))
        assert any(p.problem for o in report.outcomes if o.result for p in o.result.problems)

    def test_integrity_lying_footer(self, harness: BackendHarness, put_raw: Any) -> None:
        self._assert_caught(harness, put_raw, cheats.lying_row_counts(self._hotkey(harness), self._table(903)))

    def test_integrity_lying_statistics(self, harness: BackendHarness, put_raw: Any) -> None:
        self._assert_caught(harness, put_raw, cheats.lying_statistics(self._hotkey(harness), self._table(904)))

    def test_integrity_wrong_source(self, harness: BackendHarness, put_raw: Any) -> None:
        self._assert_caught(harness, put_raw, cheats.wrong_source(self._hotkey(harness), self._table(905)))

    def test_integrity_duplicates(self, harness: BackendHarness, put_raw: Any) -> None:
        hotkey = self._hotkey(harness)
        self._assert_caught(harness, put_raw, cheats.duplicate_rows(hotkey, self._table(906)))
        self._assert_caught(harness, put_raw, cheats.duplicate_file(hotkey, self._table(907)))

    def test_integrity_uri_shells(self, harness: BackendHarness, put_raw: Any) -> None:
        report = self._assert_caught(harness, put_raw, cheats.uri_shells(self._hotkey(harness), self._table(908)))
        assert any(row.problem for row in report.rows)

    def test_integrity_inflated_sizes(self, harness: BackendHarness, put_raw: Any) -> None:
        self._assert_caught(harness, put_raw, cheats.inflated_sizes(self._hotkey(harness), self._table(909)))

    def test_integrity_stale_rows(self, harness: BackendHarness, put_raw: Any) -> None:
        hotkey = self._hotkey(harness)
        self._assert_caught(harness, put_raw, cheats.stale(hotkey, self._table(910)))
        self._assert_caught(harness, put_raw, cheats.stale_relabelled(hotkey, self._table(911)))

    def test_integrity_unbounded_work_is_invalid_not_unknown(self, harness: BackendHarness, put_raw: Any) -> None:
        planted = cheats.no_statistics_many_groups(self._hotkey(harness), self._table(912, rows=1_000))
        report = self._assert_caught(harness, put_raw, planted)
        assert report.count(UNKNOWN) == 0

    def test_integrity_another_miners_key(self, harness: BackendHarness, put_raw: Any) -> None:
        """Miner 1's object, planted by miner 0 under miner 1's key, never counts for miner 0."""
        other = harness.hotkey(harness.target.miners[1])
        table = self._table(913)
        planted = cheats.honest(other, table)
        put_raw(planted.key, planted.data)
        report = harness.report(self._hotkey(harness), list(planted.claims[:20]))
        assert set(report.verdicts.values()) == {INVALID}

    def test_integrity_name_is_not_the_content_hash(self, harness: BackendHarness, put_raw: Any) -> None:
        hotkey = self._hotkey(harness)
        self._assert_caught(harness, put_raw, cheats.truncated_name(cheats.honest(hotkey, self._table(914))))


    # -- round manifests: a backend with ``storage_publish_manifest`` stores them; checks then read them --

    @pytest.fixture
    def manifests(self, harness: BackendHarness) -> None:
        record = harness.registry.record(harness.target.backend_id)
        if record is None or "manifest" not in record.capabilities:
            pytest.skip("the backend stores no round manifests (no storage_publish_manifest hook)")

    def _publish_manifest(self, harness: BackendHarness, signer: Any, miner_hotkey: str, key: str,
                          data: bytes) -> StoredObject:
        stored = harness.registry.call(harness.target.backend_id, "storage_publish_manifest",
                                       context=harness.target.context_for(signer), miner_hotkey=miner_hotkey,
                                       key=key, data=data)
        assert isinstance(stored, StoredObject), stored
        return stored

    def test_manifest_is_stored_and_indexes_the_check(self, harness: BackendHarness, staging: Path,
                                                      manifests: None) -> None:
        from storage_core.manifest import ManifestBook

        signer, batch = self._batch(harness, staging, rows=2_000, chunks=2, seed=21)
        harness.upload(signer, batch)
        hotkey = harness.hotkey(signer)
        book = ManifestBook(staging / "manifests", hotkey)
        book.add(harness.target.backend_id, batch.files)
        built = book.build(harness.target.backend_id, signer)
        stored = self._publish_manifest(harness, signer, hotkey, built.key, built.data)
        assert (stored.key, stored.size_bytes, stored.sha256) == (built.key, len(built.data), built.sha256)
        again = self._publish_manifest(harness, signer, hotkey, built.key, built.data)  # content-addressed
        assert again.key == built.key
        uris = sorted(read_uris(staged.path for staged in batch.files))[::100]
        result = harness.validate(hotkey, uris)
        assert result.found == set(uris) and result.manifest.startswith(f"round {built.seq} ("), result

    def test_superseded_manifests_are_deleted_and_the_latest_still_holds(self, harness: BackendHarness, staging: Path,
                                                                        manifests: None) -> None:
        """Rounds go on for months: a backend keeps a miner's newest manifests only, and the newest still
        names a previous one that is stored (its chain holds)."""
        from datetime import UTC, datetime, timedelta

        from storage_core.layout import parse_manifest_key
        from storage_core.manifest import ManifestBook
        from storage_core.manifest.retention import KEEP_MANIFESTS

        backend = harness.target.backend_id
        signer, batch = self._batch(harness, staging, rows=400, chunks=1, seed=23)
        harness.upload(signer, batch)
        hotkey = harness.hotkey(signer)
        book = ManifestBook(staging / "manifests", hotkey)
        start = datetime.now(UTC)
        for round_number in range(KEEP_MANIFESTS + 3):
            book.add(backend, batch.files)
            built = book.build(backend, signer, now=start + timedelta(seconds=round_number))
            self._publish_manifest(harness, signer, hotkey, built.key, built.data)
            book.published(built, now=start + timedelta(seconds=round_number))
        held = [key for key in harness.listed_keys(hotkey) if parse_manifest_key(key) is not None]
        assert built.key in held and len(held) <= KEEP_MANIFESTS + 1, held
        uris = sorted(read_uris(staged.path for staged in batch.files))[::50]
        result = harness.validate(hotkey, uris)
        assert result.found == set(uris) and result.manifest.startswith(f"round {built.seq} ("), result

    def test_manifest_for_another_miner_is_refused(self, harness: BackendHarness, staging: Path,
                                                   manifests: None) -> None:
        from storage_core.layout import manifest_key

        signer, other = harness.target.miners
        victim = harness.hotkey(other)
        data = b"SCM2 not really a manifest"
        with pytest.raises(Exception):  # noqa: B017 - each backend names the refusal its own way
            self._publish_manifest(harness, signer, victim, manifest_key(victim, 1, hashlib.sha256(data).hexdigest()),
                                   data)


__all__ = ["BackendConformance", "BackendHarness", "ConformanceTarget", "make_batch", "make_table", "write_chunk"]
