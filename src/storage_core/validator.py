"""The validator's side: check a miner's claimed URIs on every backend it should be on."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from storage_core.dispatch import INVALID, UNKNOWN, VALID, ValidationReport
from storage_core.node import StorageNode
from storage_core.verify import Reference

log = logging.getLogger(__name__)


class ValidatorStorage:
    """Answers "does miner M really hold URIs U?" by the config's validation policy."""

    def __init__(self, node: StorageNode) -> None:
        self.node = node

    def validate_miner_data(self, miner_hotkey: str, uris: Sequence[str], *, seed: str | None = None,
                            reference: Reference | None = None,
                            copies: Mapping[str, str] | None = None) -> ValidationReport:
        """Per-URI verdicts (valid / invalid / unknown) and each backend's part; never raises for a backend.

        ``seed`` chooses the URIs that get full-row checks (SN13 seeds by block hash; None: unpredictable);
        ``reference`` is the validator's own copy of posts (a fresh scrape) that sampled rows must match;
        ``copies`` the copied chunks ``storage-core audit`` found (object key -> why; ``audit.load_copies``).
        """
        report = self.node.dispatcher().validate(miner_hotkey, uris, seed=seed, reference=reference, copies=copies)
        log.info(
            "validated %d URIs of %s on %s: %d valid, %d invalid, %d unknown (%d requests, %d bytes)",
            len(report.verdicts), miner_hotkey, ", ".join(report.backends) or "no backend",
            report.count(VALID), report.count(INVALID), report.count(UNKNOWN), report.requests, report.bytes_read,
        )
        for outcome in report.outcomes:
            if not outcome.ok:
                log.warning("could not validate on %s: %s", outcome.backend, outcome.error)
        return report
