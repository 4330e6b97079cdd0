"""The dispatcher: sends one miner's batch to the backends the config and rollout select, and combines
validators' per-backend answers by the configured policy.

Each backend runs isolated in its own worker thread with a time limit: an exception or a time-out becomes
that backend's outcome and never stops another. Results come back in a fixed order (fallback order, then
backend id), so the order in which plugins were registered never changes a result.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from storage_core.config import StorageConfig
from storage_core.errors import PluginError
from storage_core.plugins import PluginRegistry
from storage_core.rollout import is_selected, rollout_position
from storage_core.verify import CheckSettings, ObjectStore, Reference, check_claims
from storage_core.values import (
    BackendContext,
    StoredObject,
    StoredRow,
    UploadBatch,
    UploadOutcome,
    UploadReceipt,
    ValidationOutcome,
    ValidationResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"
DEFAULT_TIMEOUT_S = 900.0
#: Environment variable for the per-call backend time limit (seconds, or 90s/15m/2h); ``--backend-timeout`` wins.
TIMEOUT_ENV = "STORAGE_CORE_BACKEND_TIMEOUT"


def parse_timeout(text: str) -> float:
    """'90', '90s', '15m', '2h' or '1d' -> seconds (positive); ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    factor = units.get(raw[-1:], 1)
    number = float(raw[:-1] if raw[-1:] in units else raw)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{text!r} is not a positive duration like 90s, 15m or 2h")
    return number * factor


def default_timeout(environ: Mapping[str, str] | None = None) -> float:
    """The backend time limit from $STORAGE_CORE_BACKEND_TIMEOUT, else 900 s."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "").strip()
    return parse_timeout(raw) if raw else DEFAULT_TIMEOUT_S


@attrs.frozen
class Selection:
    """Whether one backend serves one hotkey, and why."""

    backend: str
    enabled: bool
    rollout_percent: float
    position: int
    selected: bool
    available: bool
    reason: str


@attrs.frozen
class ValidationReport:
    """A validator's combined answer for one miner: a verdict per URI and each backend's part."""

    miner_hotkey: str
    policy: str
    backends: tuple[str, ...]
    verdicts: Mapping[str, str]
    outcomes: tuple[ValidationOutcome, ...]

    def count(self, verdict: str) -> int:
        return sum(1 for value in self.verdicts.values() if value == verdict)

    def reason(self, uri: str) -> str:
        """Why ``uri`` got its verdict, from each backend's part (one line)."""
        verdict = self.verdicts.get(uri)
        if verdict == VALID:
            return "found and checked"
        parts = []
        for outcome in self.outcomes:
            if outcome.result is None:
                parts.append(f"{outcome.backend}: could not validate ({outcome.error})")
            elif uri in outcome.result.rejected:
                parts.append(f"{outcome.backend}: {outcome.result.rejected[uri]}")
            elif uri not in outcome.result.found:
                parts.append(f"{outcome.backend}: not found")
        return "; ".join(parts) or "no backend can validate this miner"

    @property
    def rows(self) -> tuple[StoredRow, ...]:
        """The sampled rows, as each backend stored them."""
        return tuple(row for o in self.outcomes if o.result for row in o.result.rows)

    @property
    def requests(self) -> int:
        return sum(o.result.requests for o in self.outcomes if o.result)

    @property
    def bytes_read(self) -> int:
        return sum(o.result.bytes_read for o in self.outcomes if o.result)


ContextFactory = Callable[[str], BackendContext]


def backend_order(config: StorageConfig) -> tuple[str, ...]:
    """Every configured backend: fallback order first, then the rest by id."""
    ordered = [b for b in config.fallback_order if b in config.backends]
    return tuple(ordered + sorted(b for b in config.backends if b not in ordered))


def select(config: StorageConfig, registry: PluginRegistry | None, hotkey: str) -> tuple[Selection, ...]:
    """For every configured backend: does the config select it for ``hotkey`` (enabled, within rollout)?

    A selected backend stays selected (owed data, checked by validators) whether or not its plugin is
    available here: ``available`` and the reason say when it is not, so the gap is reported, never hidden.
    """
    selections = []
    for backend in backend_order(config):
        entry = config.backends[backend]
        position = rollout_position(backend, hotkey)
        within = is_selected(backend, hotkey, entry.rollout_percent)
        available = registry.available(backend) if registry is not None else True
        if not entry.enabled:
            reason = "disabled in config"
        elif not within:
            reason = f"rollout position {position} >= {round(entry.rollout_percent * 100)} ({entry.rollout_percent}%)"
        else:
            reason = f"rollout position {position} < {round(entry.rollout_percent * 100)} ({entry.rollout_percent}%)"
            if not available:
                reason += f", but the plugin is not available here ({unavailable_reason(registry, backend)})"
        selections.append(
            Selection(backend, entry.enabled, entry.rollout_percent, position, entry.enabled and within, available,
                      reason)
        )
    return tuple(selections)


def unavailable_reason(registry: PluginRegistry | None, backend: str) -> str:
    """Why backend ``backend``'s plugin cannot be used: failed, disabled, or not installed."""
    record = registry.record(backend) if registry is not None else None
    if record is None:
        return "no installed plugin provides it"
    return f"{record.status}: {record.reason}" if record.reason else record.status


def _run_isolated(
    jobs: Mapping[str, Callable[[], T]], timeout_s: float
) -> dict[str, tuple[str, T | None, str | None, float]]:
    """Run each job in its own daemon thread; return (status, value, error, elapsed) per job, never raising.

    Daemon threads, never an executor: Python joins executor workers at exit, so one hung backend call
    would keep the process alive forever. A timed-out call is abandoned and dies with the process.
    """
    results: dict[str, tuple[str, T | None, str | None, float]] = {}
    if not jobs:
        return results
    answers: dict[str, tuple[str, T | None, str | None, float]] = {}
    done = threading.Condition()
    started = time.monotonic()

    def run(name: str, job: Callable[[], T]) -> None:
        try:
            answer: tuple[str, T | None, str | None, float] = ("ok", job(), None, time.monotonic() - started)
        except BaseException as error:  # isolation is the point
            answer = ("failed", None, f"{type(error).__name__}: {error}", time.monotonic() - started)
        with done:
            answers[name] = answer
            done.notify_all()

    for name, job in jobs.items():
        threading.Thread(target=run, args=(name, job), name=f"storage-core-backend-{name}", daemon=True).start()
    deadline = started + timeout_s
    with done:
        while len(answers) < len(jobs) and (left := deadline - time.monotonic()) > 0:
            done.wait(left)
        for name in jobs:
            results[name] = answers.get(name) or (
                "timeout", None, f"no answer within {timeout_s:g} s", time.monotonic() - started)
    return results


class Dispatcher:
    """Fans uploads out to selected backends and combines validations, one config and registry at a time."""

    def __init__(
        self,
        registry: PluginRegistry,
        config: StorageConfig,
        context_for: ContextFactory,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.config = config
        self.context_for = context_for
        self.timeout_s = timeout_s

    # ------------------------------------------------------------------ miner side

    def upload_backends(self, hotkey: str) -> tuple[str, ...]:
        """The backends a miner dual-writes to this round."""
        return tuple(s.backend for s in select(self.config, self.registry, hotkey) if s.selected)

    def _upload_job(self, backend: str, batch: UploadBatch) -> Callable[[], UploadReceipt]:
        def job() -> UploadReceipt:
            if not self.registry.available(backend):
                raise PluginError(f"plugin not available ({unavailable_reason(self.registry, backend)})")
            receipt = self.registry.call(backend, "storage_upload", context=self.context_for(backend), batch=batch)
            if not isinstance(receipt, UploadReceipt):
                raise TypeError(f"storage_upload returned {type(receipt).__name__}, not UploadReceipt")
            return receipt

        return job

    def _outcome(self, backend: str, result: tuple[str, Any, str | None, float], fallback_for: str | None = None) -> UploadOutcome:
        status, receipt, error, elapsed = result
        if error:
            log.warning("upload to %s %s: %s", backend, status, error)
        return UploadOutcome(backend, status, receipt, error, elapsed, fallback_for)

    def _fallback_for(self, failed: str, taken: set[str]) -> list[str]:
        """Backends after ``failed`` in the fallback order that are enabled, installed and not yet used."""
        order = list(self.config.fallback_order)
        later = order[order.index(failed) + 1 :] if failed in order else []
        return [b for b in later if self.config.backends[b].enabled and b not in taken and self.registry.available(b)]

    def upload(self, batch: UploadBatch, backends: Sequence[str] | None = None) -> tuple[UploadOutcome, ...]:
        """Dual-write ``batch`` to ``backends`` (default: those selected for the miner), falling back on failure.

        A failed backend's data goes to the next backend in the fallback order that the round does not already
        write to; if a later backend in that order is already part of the round and succeeded, it covers the
        failed one and no extra upload is made. Never raises.
        """
        targets = tuple(backends) if backends is not None else self.upload_backends(batch.miner_hotkey)
        results = _run_isolated({b: self._upload_job(b, batch) for b in targets}, self.timeout_s)
        outcomes = {b: self._outcome(b, results[b]) for b in targets}
        taken = set(targets)
        fallback_order = list(self.config.fallback_order)
        for failed in [b for b in targets if not outcomes[b].ok]:
            later = fallback_order[fallback_order.index(failed) + 1 :] if failed in fallback_order else []
            covering = [b for b in later if b in outcomes and outcomes[b].ok]
            if covering:
                log.info("%s failed; %s already holds this batch", failed, covering[0])
                continue
            for candidate in self._fallback_for(failed, taken):
                taken.add(candidate)
                log.info("%s failed; falling back to %s", failed, candidate)
                result = _run_isolated({candidate: self._upload_job(candidate, batch)}, self.timeout_s)[candidate]
                outcomes[candidate] = self._outcome(candidate, result, fallback_for=failed)
                if outcomes[candidate].ok:
                    break
        ranking = backend_order(self.config)
        return tuple(sorted(outcomes.values(),
                            key=lambda o: (ranking.index(o.backend) if o.backend in ranking else len(ranking), o.backend)))

    def publish_manifest(self, backend: str, miner_hotkey: str, key: str, data: bytes) -> UploadOutcome:
        """Store one signed round manifest on ``backend`` (isolated, with the upload time-out); never raises.

        "skipped" when the backend's plugin has no ``storage_publish_manifest`` hook.
        """
        if not self.registry.available(backend) or not self.registry.implements(backend, "storage_publish_manifest"):
            return UploadOutcome(backend, "skipped", error="backend stores no manifests")

        def job() -> UploadReceipt:
            stored = self.registry.call(backend, "storage_publish_manifest", context=self.context_for(backend),
                                        miner_hotkey=miner_hotkey, key=key, data=data)
            if not isinstance(stored, StoredObject):
                raise TypeError(f"storage_publish_manifest returned {type(stored).__name__}, not StoredObject")
            return UploadReceipt(backend=backend, location=key, objects=(stored,))

        return self._outcome(backend, _run_isolated({backend: job}, self.timeout_s)[backend])

    # ------------------------------------------------------------------ validator side

    def validation_backends(self, miner_hotkey: str) -> tuple[str, ...]:
        """Every backend the miner should be on (enabled and within rollout), whether or not this validator can
        check it: one it cannot (plugin missing, failed, disabled or without ``storage_reader``) answers
        "could not validate" for the URIs it would decide, so a validator never fails open."""
        return tuple(s.backend for s in select(self.config, self.registry, miner_hotkey) if s.selected)

    def validation_fallbacks(self, asked: Sequence[str]) -> tuple[str, ...]:
        """Enabled backends in the fallback order, not yet asked, that can validate: where a miner's upload
        may have gone when one of its own backends failed."""
        return tuple(
            b for b in self.config.fallback_order
            if b not in asked and self.config.backends[b].enabled and self.registry.capable(b, "validate")
        )

    def _validate_on(self, backends: Sequence[str], miner_hotkey: str, uris: tuple[str, ...],
                     settings: CheckSettings) -> tuple[ValidationOutcome, ...]:
        def job_for(backend: str) -> Callable[[], ValidationResult]:
            def job() -> ValidationResult:
                store = self.registry.call(backend, "storage_reader", context=self.context_for(backend),
                                           miner_hotkey=miner_hotkey)
                if not isinstance(store, ObjectStore):
                    raise TypeError(f"storage_reader returned {type(store).__name__}, not an ObjectStore")
                try:
                    return check_claims(store, backend, miner_hotkey, uris, settings)
                finally:
                    store.close()

            return job

        results = _run_isolated({b: job_for(b) for b in backends}, self.timeout_s)
        return tuple(ValidationOutcome(b, results[b][0], results[b][1], results[b][2], results[b][3]) for b in backends)

    def check_settings(self, seed: str | None = None, reference: Reference | None = None,
                       copies: Mapping[str, str] | None = None) -> CheckSettings:
        """The checks' settings under this config: its freshness window, the caller's seed, reference and copies."""
        return CheckSettings(freshness_days=self.config.freshness_days, seed=seed, reference=reference,
                             copies=copies or {})

    def validate(self, miner_hotkey: str, uris: Sequence[str], *, seed: str | None = None,
                 reference: Reference | None = None, copies: Mapping[str, str] | None = None) -> ValidationReport:
        """Ask every backend the miner is eligible for, then combine by the config's policy. Never raises.

        ``seed`` picks the URIs that get full-row checks (SN13 seeds by block hash; None draws one a miner
        cannot predict); ``reference`` is the validator's own copy of posts to compare sampled rows with;
        ``copies`` the copied chunks found by ``storage-core audit`` (object key -> why), whose claims are invalid.
        Under policy ``any``, URIs not found there get a second look on the enabled fallback backends (a miner
        whose upload fell back holds them there); a fallback can only turn a URI valid, never invalid or unknown.
        """
        backends = self.validation_backends(miner_hotkey)
        asked = tuple(dict.fromkeys(uris))
        settings = self.check_settings(seed, reference, copies)
        outcomes = self._validate_on(backends, miner_hotkey, asked, settings)
        verdicts = combine(self.config.validation_policy, backends, outcomes, asked)
        if self.config.validation_policy == "any":
            unresolved = tuple(uri for uri in asked if verdicts[uri] != VALID)
            fallbacks = self.validation_fallbacks(backends)
            if unresolved and fallbacks:
                second = self._validate_on(fallbacks, miner_hotkey, unresolved, settings)
                found = {uri for o in second if o.ok and o.result is not None for uri in o.result.found}
                verdicts.update({uri: VALID for uri in unresolved if uri in found})
                outcomes += second
        return ValidationReport(miner_hotkey, self.config.validation_policy, backends, verdicts, outcomes)


def combine(
    policy: str, backends: Sequence[str], outcomes: Sequence[ValidationOutcome], uris: Sequence[str]
) -> dict[str, str]:
    """Per-URI verdicts. A backend that could not answer makes a URI "unknown", never "invalid".

    - ``any``: valid if any eligible backend found it; invalid only if every one answered and none found it.
    - ``all``: valid if every eligible backend found it; invalid if one answered without it.
    - ``primary``: the first eligible backend in fallback order decides.
    """
    answered = {o.backend: o.result.found for o in outcomes if o.ok and o.result is not None}
    if policy == "primary":
        backends = backends[:1]
    verdicts: dict[str, str] = {}
    for uri in uris:
        hits = [b for b in backends if b in answered and uri in answered[b]]
        misses = [b for b in backends if b in answered and uri not in answered[b]]
        silent = [b for b in backends if b not in answered]
        if not backends:
            verdicts[uri] = UNKNOWN
        elif policy == "all":
            verdicts[uri] = INVALID if misses else (VALID if not silent else UNKNOWN)
        else:  # "any", and "primary" over its single backend
            verdicts[uri] = VALID if hits else (UNKNOWN if silent else INVALID)
    return verdicts
