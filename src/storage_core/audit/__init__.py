"""The subnet-wide audit (``storage-core audit``): manifests, chains and copies across miners."""

from storage_core.audit.copies import Copy, MinerHoldings, copy_verdicts, find_copies
from storage_core.audit.survey import AuditReport, MinerAudit, run_audit

__all__ = ["AuditReport", "Copy", "MinerAudit", "MinerHoldings", "copy_verdicts", "find_copies", "run_audit"]
