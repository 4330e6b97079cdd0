"""The audit's figures as Prometheus metrics, beside the usage survey's (``storage_core_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from storage_core.audit.survey import AuditReport


def audit_metrics_text(report: AuditReport) -> str:
    """Prometheus text exposition of one audit (per backend; per miner only for copies)."""
    registry = CollectorRegistry()
    miners = Gauge("storage_core_audit_miners", "Miners audited per backend", ["backend"], registry=registry)
    rows = Gauge("storage_core_audit_rows", "Rows listed in the miners' manifests", ["backend"], registry=registry)
    size = Gauge("storage_core_audit_bytes", "Bytes of the miners' chunks", ["backend"], registry=registry)
    refused = Gauge("storage_core_audit_manifest_problems", "Miners whose manifest is missing or refused",
                    ["backend"], registry=registry)
    copied = Gauge("storage_core_audit_copied_chunks", "Chunks found to be copies, per copier", ["backend", "hotkey"],
                   registry=registry)
    read = Gauge("storage_core_audit_bytes_read", "Bytes the audit read", registry=registry)
    for audit in report.miners:
        miners.labels(audit.backend).inc()
        rows.labels(audit.backend).inc(audit.rows)
        size.labels(audit.backend).inc(audit.bytes)
        if audit.problem:
            refused.labels(audit.backend).inc()
        if audit.copied_chunks:
            copied.labels(audit.backend, audit.hotkey).set(audit.copied_chunks)
    read.set(report.bytes_read)
    return generate_latest(registry).decode()
