"""Storage usage telemetry: which backends hold each miner's data, and upload/validation metrics.

The validator-side monitor (the integration guide's ``monitor_storage_usage``) learns where each miner's
data really is from validation reports (a backend "holds" a miner's data when it found at least one of
the URIs asked), and compares that with where the rollout says it should be. Figures are logged, exposed
as Prometheus metrics on an optional port, and sent to wandb when it is installed and a run is active.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from storage_core.dispatch import ValidationReport
from storage_core.values import StoredUsage, UploadOutcome

log = logging.getLogger(__name__)


class StorageMetrics:
    """Prometheus metrics of one node, in a registry of its own (so tests and nodes never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter("storage_core_uploads", "Upload attempts per backend and status",
                               ["backend", "status"], registry=self.registry)
        self.upload_bytes = Counter("storage_core_upload_bytes", "Bytes stored per backend", ["backend"],
                                    registry=self.registry)
        self.upload_failures = Counter("storage_core_upload_failures", "Failed or timed-out uploads per backend",
                                       ["backend"], registry=self.registry)
        self.upload_latency = Histogram("storage_core_upload_seconds", "Upload time per batch and backend",
                                        ["backend"], registry=self.registry,
                                        buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))
        self.validations = Counter("storage_core_validations", "Validation answers per backend and status",
                                   ["backend", "status"], registry=self.registry)
        self.validation_bytes = Counter("storage_core_validation_bytes_read", "Bytes read to validate, per backend",
                                        ["backend"], registry=self.registry)
        self.miners = Gauge("storage_core_miners", "Miners whose data a backend holds", ["backend"],
                            registry=self.registry)
        self.stored_bytes = Gauge("storage_core_stored_bytes", "Bytes the surveyed miners hold per backend",
                                  ["backend"], registry=self.registry)
        self.miners_expected = Gauge("storage_core_miners_expected", "Miners the rollout puts on a backend",
                                     ["backend"], registry=self.registry)

    def record_uploads(self, outcomes: Iterable[UploadOutcome]) -> None:
        for outcome in outcomes:
            self.uploads.labels(outcome.backend, outcome.status).inc()
            self.upload_latency.labels(outcome.backend).observe(outcome.elapsed_s)
            if outcome.ok and outcome.receipt is not None:
                self.upload_bytes.labels(outcome.backend).inc(
                    sum(o.size_bytes for o in outcome.receipt.objects if not o.already_present))
            elif not outcome.ok:
                self.upload_failures.labels(outcome.backend).inc()

    def record_validation(self, report: ValidationReport) -> None:
        for outcome in report.outcomes:
            self.validations.labels(outcome.backend, outcome.status).inc()
            if outcome.result is not None:
                self.validation_bytes.labels(outcome.backend).inc(outcome.result.bytes_read)

    def serve(self, port: int) -> Any:
        """Expose /metrics on 127.0.0.1:``port`` (0 picks a free port); returns the server (``.server_port``)."""
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", server.server_port)
        return server


@attrs.frozen
class BackendUsage:
    backend: str
    miners_holding: int
    miners_expected: int
    share: float  # of all miners observed


@attrs.frozen
class UsageSummary:
    """Per backend: how many miners hold data there (observed) and should (rollout), out of ``miners``."""

    miners: int
    backends: tuple[BackendUsage, ...]
    holders: Mapping[str, tuple[str, ...]]  # hotkey -> backends that hold its data

    def as_metrics(self) -> dict[str, float]:
        figures: dict[str, float] = {"storage/miners": self.miners}
        for usage in self.backends:
            figures[f"storage/{usage.backend}/miners"] = usage.miners_holding
            figures[f"storage/{usage.backend}/miners_expected"] = usage.miners_expected
            figures[f"storage/{usage.backend}/share_percent"] = round(usage.share * 100, 2)
        return figures


class UsageMonitor:
    """Collects validation reports and summarises where miners' data lives."""

    def __init__(self, metrics: StorageMetrics | None = None) -> None:
        self.metrics = metrics or StorageMetrics()
        self._holders: dict[str, set[str]] = {}
        self._expected: dict[str, set[str]] = {}

    def observe(self, report: ValidationReport) -> None:
        """Record which backends answered with data for this miner, and which the rollout expects."""
        self.metrics.record_validation(report)
        self._expected[report.miner_hotkey] = set(report.backends)
        self._holders[report.miner_hotkey] = {
            o.backend for o in report.outcomes if o.ok and o.result is not None and o.result.found
        }

    def survey(self, dispatcher: Any, hotkeys: Sequence[str]) -> dict[str, dict[str, StoredUsage]]:
        """Ask every enabled backend that lists usage how much it holds for each hotkey (no reads of content).

        A backend holds a miner's data when it lists at least one object for it; a backend that fails is
        logged and counted for nobody. Returns hotkey -> backend -> StoredUsage.
        """
        registry, config = dispatcher.registry, dispatcher.config
        backends = [b for b in config.enabled_backends() if registry.implements(b, "storage_usage")]
        found: dict[str, dict[str, StoredUsage]] = {}
        for hotkey in hotkeys:
            found[hotkey] = {}
            for backend in backends:
                try:
                    usage = registry.call(backend, "storage_usage", context=dispatcher.context_for(backend),
                                          miner_hotkey=hotkey)
                except Exception as error:  # one backend or miner must not stop the survey
                    log.warning("usage of %s on %s unknown: %s", hotkey, backend, error)
                    continue
                found[hotkey][backend] = usage
            self._holders[hotkey] = {b for b, usage in found[hotkey].items() if usage.objects}
            self._expected[hotkey] = set(dispatcher.validation_backends(hotkey))
        for backend in backends:
            self.metrics.stored_bytes.labels(backend).set(sum(u[backend].bytes for u in found.values() if backend in u))
        return found

    def summary(self, hotkeys: Sequence[str] | None = None) -> UsageSummary:
        miners = list(hotkeys) if hotkeys is not None else sorted(self._holders)
        backends = sorted({b for held in self._holders.values() for b in held}
                          | {b for expected in self._expected.values() for b in expected})
        usages = []
        for backend in backends:
            holding = sum(1 for h in miners if backend in self._holders.get(h, ()))
            expected = sum(1 for h in miners if backend in self._expected.get(h, ()))
            usages.append(BackendUsage(backend, holding, expected, holding / len(miners) if miners else 0.0))
            self.metrics.miners.labels(backend).set(holding)
            self.metrics.miners_expected.labels(backend).set(expected)
        holders = {h: tuple(sorted(self._holders.get(h, ()))) for h in miners}
        return UsageSummary(len(miners), tuple(usages), holders)

    def report(self, hotkeys: Sequence[str] | None = None) -> UsageSummary:
        """Log the summary (counts and percentages) and send it to wandb if a run is active."""
        summary = self.summary(hotkeys)
        for usage in summary.backends:
            log.info("storage usage: %s holds data of %d/%d miners (%.1f%%), rollout expects %d",
                     usage.backend, usage.miners_holding, summary.miners, usage.share * 100, usage.miners_expected)
        log_to_wandb(summary.as_metrics())
        return summary


def log_to_wandb(figures: Mapping[str, float]) -> bool:
    """``wandb.log(figures)`` when wandb is installed and a run is active; False otherwise (optional dependency)."""
    try:
        import wandb
    except ImportError:
        return False
    if getattr(wandb, "run", None) is None:
        return False
    wandb.log(dict(figures))
    return True
