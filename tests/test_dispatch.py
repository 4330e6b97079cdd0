"""The dispatcher: selection, isolated dual-write, time-outs, fallback, and policy-combined validation."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from storage_core import hookimpl
from storage_core.config import parse_config
from storage_core.dispatch import INVALID, UNKNOWN, VALID, Dispatcher, combine, select
from storage_core.plugins import PluginRegistry
from storage_core.layout import key_for
from storage_core.testing.data import make_batch, uris_of
from storage_core.testing.memory_store import MemoryStore
from storage_core.values import (
    PLUGIN_API_VERSION,
    BackendContext,
    BackendDescriptor,
    StoredObject,
    UploadReceipt,
    ValidationOutcome,
    ValidationResult,
)


class MemoryBackend:
    """An in-process backend whose behaviour a test chooses: ok, raise, or hang."""

    def __init__(self, backend_id: str, mode: str = "ok") -> None:
        self.id = backend_id
        self.mode = mode
        self.stored: dict[str, bytes] = {}  # object key -> bytes
        self.release = threading.Event()
        self.calls = 0

    def _misbehave(self) -> None:
        self.calls += 1
        if self.mode == "raise":
            raise ConnectionError(f"{self.id} is down")
        if self.mode == "hang":
            self.release.wait(30)

    @hookimpl
    def storage_backends(self):
        return [BackendDescriptor(id=self.id, api_version=PLUGIN_API_VERSION, package=f"{self.id}-pkg", version="1",
                                  capabilities={"upload", "validate"})]

    @hookimpl
    def storage_upload(self, context: BackendContext, batch):
        assert context.backend_id == self.id
        self._misbehave()
        for staged in batch.files:
            self.stored[key_for(batch.miner_hotkey, staged)] = staged.path.read_bytes()
        return UploadReceipt(backend=self.id, location="memory",
                             objects=[StoredObject(f.sha256, f.size_bytes, f.sha256) for f in batch.files])

    @hookimpl
    def storage_reader(self, miner_hotkey):
        self._misbehave()
        return MemoryStore(self.stored, miner_hotkey)


def make_dispatcher(backends: list[MemoryBackend], document: dict, timeout_s: float = 10.0) -> Dispatcher:
    registry = PluginRegistry(points=[], environ={}, extra_plugins={b.id: b for b in backends})
    return Dispatcher(registry, parse_config(document), lambda b: BackendContext(backend_id=b), timeout_s=timeout_s)


def doc(*entries: tuple[str, bool, float], policy: str = "any", order: tuple[str, ...] = ()) -> dict:
    return {
        "backends": {name: {"enabled": enabled, "rollout_percent": percent} for name, enabled, percent in entries},
        "validation_policy": policy,
        "fallback_order": list(order),
    }


@pytest.fixture
def batch(tmp_path: Path, miner_keys):
    return make_batch(tmp_path, miner_keys[0].ss58_address, rows=50)


def test_selection_explains_itself(miner_keys) -> None:
    config = parse_config(doc(("s3", True, 100), ("hf", True, 0), ("r2", False, 100), ("gcs", True, 100)))
    registry = PluginRegistry(points=[], environ={}, extra_plugins={"s3": MemoryBackend("s3"), "hf": MemoryBackend("hf"),
                                                                    "r2": MemoryBackend("r2")})
    selections = {s.backend: s for s in select(config, registry, miner_keys[0].ss58_address)}
    assert selections["s3"].selected and "<" in selections["s3"].reason
    assert not selections["hf"].selected and "rollout position" in selections["hf"].reason
    assert not selections["r2"].selected and selections["r2"].reason == "disabled in config"
    # no plugin for gcs here: still selected (owed, checked), and the reason says the plugin is missing
    assert selections["gcs"].selected and not selections["gcs"].available
    assert "not available here (no installed plugin provides it)" in selections["gcs"].reason


def test_dual_write_reaches_every_selected_backend(batch) -> None:
    s3, hf = MemoryBackend("s3"), MemoryBackend("hf")
    outcomes = make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 100))).upload(batch)
    assert [(o.backend, o.status) for o in outcomes] == [("hf", "ok"), ("s3", "ok")]
    assert s3.stored == hf.stored == {key_for(batch.miner_hotkey, f): f.path.read_bytes() for f in batch.files}


def test_a_raising_backend_does_not_stop_another(batch) -> None:
    s3, hf = MemoryBackend("s3", "raise"), MemoryBackend("hf")
    outcomes = {o.backend: o for o in make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 100))).upload(batch)}
    assert outcomes["s3"].status == "failed" and "s3 is down" in outcomes["s3"].error
    assert outcomes["hf"].ok and hf.stored


def test_a_hanging_backend_times_out_alone(batch) -> None:
    slow, fast = MemoryBackend("slow", "hang"), MemoryBackend("fast")
    try:
        outcomes = {o.backend: o for o in make_dispatcher(
            [slow, fast], doc(("slow", True, 100), ("fast", True, 100)), timeout_s=0.5).upload(batch)}
        assert outcomes["slow"].status == "timeout" and "0.5 s" in outcomes["slow"].error
        assert outcomes["fast"].ok
    finally:
        slow.release.set()


def test_fallback_takes_over_when_the_primary_fails(batch) -> None:
    s3, hf = MemoryBackend("s3", "raise"), MemoryBackend("hf")
    dispatcher = make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 0), order=("s3", "hf")))
    assert dispatcher.upload_backends(batch.miner_hotkey) == ("s3",)
    outcomes = {o.backend: o for o in dispatcher.upload(batch)}
    assert outcomes["s3"].status == "failed"
    assert outcomes["hf"].ok and outcomes["hf"].fallback_for == "s3"
    assert set(hf.stored) == {key_for(batch.miner_hotkey, f) for f in batch.files}


def test_no_extra_upload_when_a_later_backend_already_holds_the_batch(batch) -> None:
    s3, hf, spare = MemoryBackend("s3", "raise"), MemoryBackend("hf"), MemoryBackend("spare")
    outcomes = make_dispatcher([s3, hf, spare], doc(("s3", True, 100), ("hf", True, 100), ("spare", True, 0),
                                                     order=("s3", "hf", "spare"))).upload(batch)
    assert {o.backend for o in outcomes} == {"s3", "hf"}
    assert spare.calls == 0


def test_failed_fallback_moves_down_the_order(batch) -> None:
    s3, hf, spare = MemoryBackend("s3", "raise"), MemoryBackend("hf", "raise"), MemoryBackend("spare")
    outcomes = {o.backend: o for o in make_dispatcher(
        [s3, hf, spare], doc(("s3", True, 100), ("hf", True, 0), ("spare", True, 0), order=("s3", "hf", "spare"))
    ).upload(batch)}
    assert outcomes["hf"].status == "failed" and outcomes["hf"].fallback_for == "s3"
    assert outcomes["spare"].ok and outcomes["spare"].fallback_for == "s3"


def test_registration_order_never_changes_a_result(batch) -> None:
    results = set()
    for modes in itertools.permutations([("a", "ok"), ("b", "raise"), ("c", "ok")]):
        backends = [MemoryBackend(name, mode) for name, mode in modes]
        dispatcher = make_dispatcher(backends, doc(("a", True, 100), ("b", True, 100), ("c", True, 100)))
        uploads = tuple((o.backend, o.status) for o in dispatcher.upload(batch))
        report = dispatcher.validate(batch.miner_hotkey, uris_of(batch)[:3] + ["absent"])
        results.add((uploads, tuple(sorted(report.verdicts.items()))))
    assert len(results) == 1


def test_validation_policies(batch) -> None:
    uris = uris_of(batch)
    a, b = MemoryBackend("a"), MemoryBackend("b")
    make_dispatcher([a], doc(("a", True, 100))).upload(batch)  # only "a" holds the data
    for policy, expected in (("any", VALID), ("all", INVALID), ("primary", VALID)):
        report = make_dispatcher([a, b], doc(("a", True, 100), ("b", True, 100), policy=policy, order=("a", "b"))
                                 ).validate(batch.miner_hotkey, uris[:2])
        assert set(report.verdicts.values()) == {expected}, policy
    report = make_dispatcher([a, b], doc(("a", True, 100), ("b", True, 100))).validate(batch.miner_hotkey, ["absent"])
    assert report.verdicts == {"absent": INVALID}


def test_a_crashed_checker_means_could_not_validate(batch) -> None:
    broken = MemoryBackend("s3", "raise")
    report = make_dispatcher([broken], doc(("s3", True, 100))).validate(batch.miner_hotkey, uris_of(batch)[:3])
    assert set(report.verdicts.values()) == {UNKNOWN}
    assert report.outcomes[0].status == "failed"
    nobody = make_dispatcher([], doc(("s3", True, 100))).validate(batch.miner_hotkey, ["u"])
    assert nobody.verdicts == {"u": UNKNOWN}


def test_combine_with_one_backend_down() -> None:
    ok = ValidationOutcome("a", "ok", ValidationResult(backend="a", miner_hotkey="m", found={"x"}))
    down = ValidationOutcome("b", "failed", error="boom")
    assert combine("any", ("a", "b"), (ok, down), ("x", "y")) == {"x": VALID, "y": UNKNOWN}
    assert combine("all", ("a", "b"), (ok, down), ("x", "y")) == {"x": UNKNOWN, "y": INVALID}
    assert combine("primary", ("b", "a"), (ok, down), ("x",)) == {"x": UNKNOWN}


def test_validators_find_data_a_fallback_holds(batch) -> None:
    """S3 selected (100%), HF enabled at 0% as fallback: rows that fell back to HF still validate under 'any'."""
    s3, hf = MemoryBackend("s3", "raise"), MemoryBackend("hf")
    dispatcher = make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 0), order=("s3", "hf")))
    outcomes = {o.backend: o for o in dispatcher.upload(batch)}
    assert outcomes["hf"].fallback_for == "s3"
    s3.mode = "ok"  # S3 is back but never got this batch
    uris = uris_of(batch)[:4]
    report = dispatcher.validate(batch.miner_hotkey, uris + ["https://x.com/fake/status/9"])
    assert report.backends == ("s3",)
    assert [uri for uri, verdict in report.verdicts.items() if verdict == VALID] == uris
    assert report.verdicts["https://x.com/fake/status/9"] == INVALID
    assert [o.backend for o in report.outcomes] == ["s3", "hf"]


def test_fallback_lookup_never_downgrades_and_is_skipped_when_all_found(batch) -> None:
    s3, hf = MemoryBackend("s3"), MemoryBackend("hf", "raise")
    dispatcher = make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 0), order=("s3", "hf")))
    dispatcher.upload(batch)
    found = dispatcher.validate(batch.miner_hotkey, uris_of(batch)[:3])
    assert set(found.verdicts.values()) == {VALID} and [o.backend for o in found.outcomes] == ["s3"]
    fake = dispatcher.validate(batch.miner_hotkey, ["https://x.com/fake/status/1"])
    assert fake.verdicts == {"https://x.com/fake/status/1": INVALID}  # HF down does not make it "unknown"
    strict = make_dispatcher([s3, hf], doc(("s3", True, 100), ("hf", True, 0), policy="all", order=("s3", "hf")))
    assert [o.backend for o in strict.validate(batch.miner_hotkey, ["x"]).outcomes] == ["s3"]


def test_a_backend_without_a_plugin_stays_owed_and_fails_the_upload(batch) -> None:
    """Bug 4: the config selects gcs for this miner; its plugin is missing, so the upload to it fails (never skipped)."""
    s3 = MemoryBackend("s3")
    dispatcher = make_dispatcher([s3], doc(("s3", True, 100), ("gcs", True, 100)))
    assert dispatcher.upload_backends(batch.miner_hotkey) == ("gcs", "s3")
    outcomes = {o.backend: o for o in dispatcher.upload(batch)}
    assert outcomes["s3"].ok
    assert outcomes["gcs"].status == "failed" and "plugin not available" in outcomes["gcs"].error


@pytest.mark.parametrize("policy", ["any", "all", "primary"])
def test_validation_fails_closed_without_a_plugin(batch, policy: str) -> None:
    """Bug 5: gcs is configured but this validator cannot check it: its URIs are unknown, never invalid or dropped."""
    s3 = MemoryBackend("s3")
    make_dispatcher([s3], doc(("s3", True, 100))).upload(batch)
    dispatcher = make_dispatcher([s3], doc(("gcs", True, 100), ("s3", True, 100), policy=policy, order=("gcs", "s3")))
    uris = uris_of(batch)[:3]
    report = dispatcher.validate(batch.miner_hotkey, uris + ["https://x.com/never/status/1"])
    assert report.backends == ("gcs", "s3")
    gcs = next(o for o in report.outcomes if o.backend == "gcs")
    assert gcs.status == "failed" and "could not validate" in report.reason("https://x.com/never/status/1")
    # gcs might hold it: not "invalid" unless s3's answer decides it on its own (policy all)
    assert report.verdicts["https://x.com/never/status/1"] == (INVALID if policy == "all" else UNKNOWN)
    expected = {"any": VALID, "all": UNKNOWN, "primary": UNKNOWN}[policy]  # never VALID without gcs under all
    assert {report.verdicts[uri] for uri in uris} == {expected}


def test_a_timed_out_call_never_blocks_exit(tmp_path: Path) -> None:
    """Bug 2: a process whose backend call hangs exits as soon as its work is done (no join at exit)."""
    import subprocess
    import sys
    import time

    script = (
        "import threading\n"
        "from storage_core.dispatch import _run_isolated\n"
        "r = _run_isolated({'hung': threading.Event().wait, 'quick': lambda: 1}, 0.5)\n"
        "print(r['hung'][0], r['quick'][0])\n"
    )
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["timeout", "ok"]
    assert time.monotonic() - started < 20
