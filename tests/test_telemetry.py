"""Usage telemetry: holders per backend from validation reports, Prometheus exposition, optional wandb."""

from __future__ import annotations

import sys
import types
import urllib.request

from storage_core.dispatch import ValidationReport
from storage_core.telemetry import StorageMetrics, UsageMonitor, log_to_wandb
from storage_core.values import ValidationOutcome, ValidationResult


def report(hotkey: str, found: dict[str, set[str]], failed: tuple[str, ...] = ()) -> ValidationReport:
    outcomes = [ValidationOutcome(b, "ok", ValidationResult(backend=b, miner_hotkey=hotkey, found=f, bytes_read=10))
                for b, f in found.items()]
    outcomes += [ValidationOutcome(b, "failed", error="down") for b in failed]
    backends = tuple(sorted(found) + list(failed))
    return ValidationReport(hotkey, "any", backends, {}, tuple(outcomes))


def test_summary_counts_holders_and_expected() -> None:
    monitor = UsageMonitor()
    monitor.observe(report("m1", {"s3": {"u"}, "hf": {"u"}}))
    monitor.observe(report("m2", {"hf": {"u"}}))
    monitor.observe(report("m3", {"hf": set()}, failed=("s3",)))  # s3 down: not counted as holding
    summary = monitor.summary(["m1", "m2", "m3", "m4"])
    usage = {u.backend: u for u in summary.backends}
    assert summary.miners == 4
    assert (usage["hf"].miners_holding, usage["hf"].miners_expected) == (2, 3)
    assert (usage["s3"].miners_holding, usage["s3"].miners_expected) == (1, 2)
    assert usage["hf"].share == 0.5
    assert summary.holders["m4"] == () and summary.holders["m1"] == ("hf", "s3")
    assert summary.as_metrics()["storage/s3/share_percent"] == 25.0


def test_prometheus_exposes_the_figures() -> None:
    metrics = StorageMetrics()
    monitor = UsageMonitor(metrics)
    monitor.observe(report("m1", {"s3": {"u"}}))
    monitor.summary()
    server = metrics.serve(0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'storage_core_miners{backend="s3"} 1.0' in body
    assert 'storage_core_validation_bytes_read_total{backend="s3"} 10.0' in body


def test_wandb_is_optional(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    assert log_to_wandb({"a": 1}) is False
    logged = []
    fake = types.SimpleNamespace(run=None, log=logged.append)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert log_to_wandb({"a": 1}) is False  # installed, no active run
    fake.run = object()
    assert log_to_wandb({"a": 1}) is True and logged == [{"a": 1}]


def test_upload_outcomes_become_metrics() -> None:
    from storage_core.values import StoredObject, UploadOutcome, UploadReceipt

    metrics = StorageMetrics()
    receipt = UploadReceipt(backend="s3", location="b", objects=[StoredObject("k", 100, "0" * 64),
                                                                 StoredObject("j", 50, "1" * 64, already_present=True)])
    metrics.record_uploads([UploadOutcome("s3", "ok", receipt, elapsed_s=1.5),
                            UploadOutcome("huggingface", "timeout", error="slow", elapsed_s=9.0)])
    value = metrics.registry.get_sample_value
    assert value("storage_core_upload_bytes_total", {"backend": "s3"}) == 100  # already-present bytes not counted
    assert value("storage_core_upload_failures_total", {"backend": "huggingface"}) == 1
    assert value("storage_core_uploads_total", {"backend": "huggingface", "status": "timeout"}) == 1
    assert value("storage_core_upload_seconds_count", {"backend": "s3"}) == 1
