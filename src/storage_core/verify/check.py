"""The one checking path: does miner M hold the URIs it claims, as real rows of fresh, readable files?

Every backend's validation runs through :func:`check_claims`; a backend supplies only an
:class:`~storage_core.verify.store.ObjectStore` (listing and byte ranges). The steps:

1. List the miner's objects. Keys outside the layout or under another hotkey never count.
2. Open each object that can hold a claimed URI (its source; a date partition inside the freshness
   window): name vs content hash, footer within caps, schema, declared source, row counts, ``uri`` and
   ``datetime`` statistics (a partition whose rows lie outside its day or window is refused whole).
3. Find each claimed URI: read the ``uri`` column of only the row groups whose statistics admit it,
   checking each read against the footer. Days are searched newest first, every object of a day at
   once, and a URI stops being sought after the day it was found in: a copy in the same day's objects
   shows as a duplicate, and a copy under another day cannot pass step 2 (its datetime is not that
   day's) unless its row was altered.
4. Sampled URIs (chosen by the caller's seed, so a miner cannot predict them) get a full-row check:
   every column read and checked (:mod:`storage_core.verify.rows`); one bad row makes its whole object
   untrusted. The sampled rows come back as stored, for a validator to compare with a fresh scrape.

What the miner made and cannot be checked is invalid; only the store's own failure (an exception that
is not an ``ObjectError``) propagates, which the dispatcher reports as "could not validate".
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from collections import defaultdict
from itertools import groupby
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from storage_core.layout import ObjectName, miner_prefix, parse_key
from storage_core.manifest.document import ChunkEntry, ManifestError
from storage_core.values import IntegrityProblem, StoredRow, ValidationResult
from storage_core.verify.footer import TAIL_READ_BYTES, Limits, OpenedFile, RowGroup, miner_bytes, open_object, \
    read_columns
from storage_core.verify.rows import FUTURE_SKEW, MAX_CONTENT_BYTES, Reference, RowRules, reference_problem, \
    row_problem, source_of_uri
from storage_core.verify.manifest_index import ManifestIndex, load_manifest
from storage_core.verify.store import ListedObject, ObjectError, ObjectStore

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@attrs.frozen
class CheckSettings:
    """How a check samples and what it accepts. ``seed`` None draws an unpredictable one."""

    freshness_days: int = 30
    full_checks: int = 5
    seed: str | None = None
    now: datetime | None = None
    limits: Limits = Limits()
    concurrency: int = 8
    reference: Reference | None = attrs.field(default=None, eq=False)
    #: Chunks found to be copies of another miner's (object key -> why), from ``storage-core audit``.
    copies: Mapping[str, str] = attrs.field(factory=dict, eq=False)
    #: Chunks per check whose manifest description is held to their whole uri column.
    verify_chunks: int = 1

    def rules(self) -> RowRules:
        return RowRules(now=self.now or datetime.now(UTC), freshness=timedelta(days=self.freshness_days))


def sample_uris(uris: Sequence[str], count: int, seed: str | None) -> frozenset[str]:
    """``count`` of ``uris`` chosen by ``seed`` (SN13 seeds by block hash); the same seed, the same choice."""
    ordered = sorted(set(uris))
    if count >= len(ordered):
        return frozenset(ordered)
    material = seed.encode() if seed is not None else os.urandom(32)
    rng = random.Random(hashlib.sha256(b"storage-core sample:" + material).digest())
    return frozenset(rng.sample(ordered, count))


@attrs.define
class _Occurrence:
    file: OpenedFile
    group: RowGroup
    row: int


class _Check:
    """The state of one check: objects opened, problems found, where each URI was seen."""

    def __init__(self, store: ObjectStore, backend: str, miner_hotkey: str, uris: Sequence[str],
                 settings: CheckSettings) -> None:
        self.store = store
        self.backend = backend
        self.miner = miner_hotkey
        self.claimed = tuple(dict.fromkeys(uris))
        self.settings = settings
        self.rules = settings.rules()
        self.sampled = sample_uris(self.claimed, settings.full_checks, settings.seed)
        self.problems: dict[str, str] = {}  # object key -> why it cannot be trusted
        self.seen: dict[str, list[_Occurrence]] = defaultdict(list)
        self.rows: list[StoredRow] = []
        self.opened = 0
        self.lock = threading.Lock()
        #: (object key, row group) whose rows reach back past the freshness window: the oldest day only.
        self.edge_groups: set[tuple[str, int]] = set()
        self.stale: dict[str, str] = {}  # URI -> why its row is stale
        self.index: ManifestIndex | None = None  # the miner's latest round manifest, once believed
        self.refusal: str | None = None  # why the miner's manifest voids every claim here
        self.wanted: dict[str, frozenset[str]] = {}  # object key -> the claimed URIs the index puts in it
        self.described: dict[str, tuple[int, ChunkEntry]] = {}  # object key -> its manifest position and entry

    # -- 1 and 2: which objects, opened -----------------------------------------------------------

    def candidates(self, listing: Sequence[ListedObject]) -> list[tuple[ListedObject, ObjectName]]:
        """The miner's objects that may hold a claimed URI; problems for objects that cannot be the miner's."""
        sources = {source_of_uri(uri) for uri in self.claimed}
        wanted_sources = None if None in sources else sources
        oldest = self.rules.oldest().date().isoformat()
        newest = (self.rules.now + FUTURE_SKEW).date().isoformat()
        chosen = []
        for listed in listing:
            if not listed.key.endswith(".parquet"):
                continue  # repo files (README, manifests) are not data
            name = parse_key(listed.key)
            if name is None:
                self.problems[listed.key] = "key is not in the storage-core layout"
            elif name.hotkey != self.miner:
                self.problems[listed.key] = f"object under hotkey {name.hotkey}, not this miner's"
            elif name.date > newest:
                self.problems[listed.key] = f"date partition {name.date} is in the future"
            elif name.date >= oldest and (wanted_sources is None or name.source in wanted_sources):
                chosen.append((listed, name))
        return sorted(chosen, key=lambda item: (item[1].date, item[0].key), reverse=True)

    def indexed(self, chosen: list[tuple[ListedObject, ObjectName]],
                listing: Sequence[ListedObject]) -> list[tuple[ListedObject, ObjectName]]:
        """Of ``chosen``, the objects the manifest's index names for some claimed URI; the rest is noted."""
        assert self.index is not None
        listed_keys = {listed.key for listed in listing}
        oldest = self.rules.oldest().date().isoformat()
        for listed, _name in chosen:
            if self.index.position_of(listed.key) is None:
                self.problems[listed.key] = f"not listed in the round manifest {self.index.key}: never searched"
        wanted: dict[str, set[str]] = defaultdict(set)
        for uri, found in self.index.candidates(list(self.claimed)).items():
            for position, entry in found.items():
                key = entry.key(self.miner)
                self.described[key] = (position, entry)
                if entry.date >= oldest and key not in listed_keys and key not in self.problems:
                    self.problems[key] = f"listed in {self.index.key} but missing from the store"
                source = source_of_uri(uri)
                if source is None or source == entry.source:
                    wanted[key].add(uri)
        self.wanted = {key: frozenset(uris) for key, uris in wanted.items()}
        return [(listed, name) for listed, name in chosen if listed.key in self.wanted]

    def open(self, listed: ListedObject, name: ObjectName) -> OpenedFile | None:
        try:
            copy = self.settings.copies.get(listed.key)
            if copy is not None:
                raise ObjectError(listed.key, copy)
            described = self.described.get(listed.key)
            hint = described[1].footer + 8 if described is not None else TAIL_READ_BYTES
            opened = open_object(self.store, listed, name, self.settings.limits, hint)
            with miner_bytes(listed.key, "footer statistics"):
                self._check_partition(opened)
            if described is not None:
                self._check_entry(opened, described[1])
            return opened
        except ObjectError as error:
            self.problems[listed.key] = error.problem
            return None

    @staticmethod
    def _check_entry(opened: OpenedFile, entry: ChunkEntry) -> None:
        """The footer must say what the manifest says of the chunk: size, rows, URI range, content hash."""
        groups = opened.row_groups
        footer = (opened.listed.size, sum(g.rows for g in groups), opened.footer_bytes, min(g.uri_min for g in groups),
                  max(g.uri_max for g in groups))
        if footer != (entry.size, entry.rows, entry.footer, entry.uri_min, entry.uri_max):
            raise ObjectError(opened.key, f"footer disagrees with the manifest (size, rows, footer bytes: {footer[:3]} "
                                          f"vs {(entry.size, entry.rows, entry.footer)}, or the uri range)")
        if opened.listed.sha256 is not None and opened.listed.sha256 != entry.sha256:
            raise ObjectError(opened.key, "content sha256 disagrees with the manifest")

    def verify_descriptions(self, opened: list[OpenedFile], listing: Sequence[ListedObject]) -> None:
        """Hold ``settings.verify_chunks`` of the manifest's chunks (chosen by the seed among all it lists in
        the window, not only those opened) to their entries: a chunk left out of the index is never
        opened otherwise, and could hide a duplicate."""
        if self.index is None or self.refusal:
            return
        material = (self.settings.seed or os.urandom(16).hex()).encode()
        rng = random.Random(hashlib.sha256(b"storage-core manifest:" + material).digest())
        by_key = {item.key: item for item in opened}
        oldest = self.rules.oldest().date().isoformat()
        present = {listed.key: listed for listed in listing}
        pool = sorted((position, key) for key in present if key not in self.problems
                      and (name := parse_key(key)) is not None and name.hotkey == self.miner and name.date >= oldest
                      and (position := self.index.position_of(key)) is not None)
        drawn = rng.sample(pool, min(len(pool), self.settings.verify_chunks))
        try:  # an entry whose key is not the listed object's (another partition) is not that object's
            chosen_keys = [(position, key) for position, key in drawn
                           if self.index.entry(position).key(self.miner) == key]
        except ManifestError as error:
            self.refusal = f"manifest {self.index.key}: {error}"
            return
        for position, key in chosen_keys:
            self.described.setdefault(key, (position, self.index.entry(position)))
            chosen = by_key.get(key)
            if chosen is None:
                name = parse_key(key)
                if name is None or (chosen := self.open(present[key], name)) is None:
                    continue  # its problem is recorded; its claims fail with it
            try:
                uris: list[str] = []
                for group in chosen.row_groups:
                    uris.extend(read_columns(chosen, group, ["uri"]).column("uri").to_pylist())
                self.index.check_described(position, uris)
            except ObjectError as error:
                self.problems[key] = error.problem
            except ManifestError as error:
                self.refusal = f"manifest {self.index.key}: {error}"

    def _check_partition(self, opened: OpenedFile) -> None:
        """Footer statistics of ``datetime``, ``source`` and ``content_size_bytes`` must fit the object's name."""
        metadata, name = opened.parquet.metadata, opened.name
        paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
        when, source, size = paths.index("datetime"), paths.index("source"), paths.index("content_size_bytes")
        day_start = datetime.fromisoformat(name.date).replace(tzinfo=UTC)
        high_limit = min(day_start + timedelta(days=1), self.rules.now + FUTURE_SKEW)
        for group in opened.row_groups:
            columns = metadata.row_group(group.index)
            stats = columns.column(when).statistics
            if stats is None or not stats.has_min_max:
                raise ObjectError(opened.key, f"row group {group.index} has no datetime statistics")
            low = _EPOCH + timedelta(microseconds=stats.min_raw)
            high = _EPOCH + timedelta(microseconds=stats.max_raw)
            if low < day_start or high >= high_limit:
                why = "in the future" if high >= self.rules.now + FUTURE_SKEW else "relabelled"
                raise ObjectError(opened.key, f"row group {group.index} holds datetimes {low.isoformat()} to "
                                              f"{high.isoformat()}, outside its partition {name.date} ({why})")
            if low < self.rules.oldest():  # the window's oldest day: which rows are stale is read per row
                with self.lock:
                    self.edge_groups.add((opened.key, group.index))
            stats = columns.column(source).statistics
            if stats is None or not stats.has_min_max or {_text(stats.min), _text(stats.max)} != {name.source}:
                raise ObjectError(opened.key, f"row group {group.index}: source column is not all {name.source!r}")
            stats = columns.column(size).statistics
            if stats is None or not stats.has_min_max or stats.min_raw < 1 or stats.max_raw > MAX_CONTENT_BYTES:
                raise ObjectError(opened.key, f"row group {group.index}: content_size_bytes outside 1..{MAX_CONTENT_BYTES}")

    # -- 3: where each URI is ---------------------------------------------------------------------

    def search(self, opened: OpenedFile, sought: frozenset[str]) -> None:
        """Read the uri column of the row groups of ``opened`` that may hold a sought URI; record hits."""
        if self.index is not None:
            sought = self.wanted.get(opened.key, frozenset())
        wanted = [uri for uri in sought if source_of_uri(uri) in (None, opened.name.source)]
        groups = [group for group in opened.row_groups if any(group.may_hold(uri) for uri in wanted)]
        hits: list[tuple[str, _Occurrence]] = []
        stale: dict[str, str] = {}
        oldest = self.rules.oldest()
        try:
            for group in groups:
                edge = (opened.key, group.index) in self.edge_groups
                with miner_bytes(opened.key, f"row group {group.index} uri values"):
                    table = read_columns(opened, group, ["uri", "datetime"] if edge else ["uri"])
                    column = table.column("uri").to_pylist()
                    times = table.column("datetime").to_pylist() if edge else None
                for row, value in enumerate(column):
                    if value in sought:
                        hits.append((value, _Occurrence(opened, group, row)))
                        if times is not None and times[row] < oldest:
                            stale[value] = (f"stale: datetime {times[row].isoformat()} is older than the "
                                            f"{self.settings.freshness_days}-day freshness window")
        except ObjectError as error:
            with self.lock:
                self.problems[opened.key] = error.problem
            return
        with self.lock:
            self.stale.update(stale)
            for uri, occurrence in hits:
                self.seen[uri].append(occurrence)

    # -- 4: full rows of the sampled URIs ---------------------------------------------------------

    def full_row_checks(self) -> None:
        by_group: dict[tuple[str, int], list[tuple[str, _Occurrence]]] = defaultdict(list)
        for uri in sorted(self.sampled):
            occurrences = self.seen.get(uri, [])
            if len(occurrences) == 1 and occurrences[0].file.key not in self.problems:
                occurrence = occurrences[0]
                by_group[(occurrence.file.key, occurrence.group.index)].append((uri, occurrence))
        truth: dict[str, Any] = {}
        if self.settings.reference is not None and by_group:
            truth = dict(self.settings.reference([uri for items in by_group.values() for uri, _ in items]))
        for items in by_group.values():
            opened, group = items[0][1].file, items[0][1].group
            try:
                table = read_columns(opened, group, None)
                with miner_bytes(opened.key, "row values"):
                    self._check_datetime_statistics(opened, group, table)
                    rows = {uri: _row(table, occurrence.row) for uri, occurrence in items}
            except ObjectError as error:
                self.problems[opened.key] = error.problem
                continue
            for uri, row in rows.items():
                if uri in self.stale:  # an honest row that has aged out: invalid, but no sign of a cheat
                    self.rows.append(StoredRow(uri=uri, key=opened.key, values=row, problem=self.stale[uri]))
                    continue
                problem = row_problem(row, uri, opened.name, self.rules) or reference_problem(
                    row, truth.get(uri), opened.name.source)
                self.rows.append(StoredRow(uri=uri, key=opened.key, values=row, problem=problem))
                if problem and opened.key not in self.problems:
                    self.problems[opened.key] = f"holds a row that fails its check ({uri}: {problem})"

    @staticmethod
    def _check_datetime_statistics(opened: OpenedFile, group: RowGroup, table: pa.Table) -> None:
        """The footer's datetime range was believed when the object was opened; hold it to the data."""
        stats = opened.parquet.metadata.row_group(group.index).column(
            opened.parquet.schema_arrow.get_field_index("datetime")).statistics
        values = table.column("datetime").cast(pa.int64())
        bounds = pc.min_max(values)
        if bounds["min"].as_py() < stats.min_raw or bounds["max"].as_py() > stats.max_raw:
            raise ObjectError(opened.key, f"row group {group.index}: datetime statistics lie")

    # -- verdicts ---------------------------------------------------------------------------------

    def result(self) -> ValidationResult:
        found, rejected = set(), {}
        if self.refusal:
            self.problems.setdefault(self.index.key if self.index else f"{miner_prefix(self.miner)}manifests/",
                                     self.refusal)
            rejected = {uri: self.refusal for uri in self.claimed}
        named: dict[str, list[str]] = defaultdict(list)  # URI -> chunks the manifest's index named for it
        for key, uris in self.wanted.items():
            for uri in uris:
                named[uri].append(key)
        for uri in self.claimed if not self.refusal else ():
            occurrences = self.seen.get(uri, [])
            if not occurrences:
                bad = sorted(key for key in named.get(uri, ()) if key in self.problems)
                if bad:  # the miner's own manifest points at a chunk that cannot be trusted
                    rejected[uri] = f"indexed in {bad[0]}, which cannot be trusted: {self.problems[bad[0]]}"
                continue
            bad = [o.file.key for o in occurrences if o.file.key in self.problems]
            if bad:
                rejected[uri] = f"stored in {bad[0]}, which cannot be trusted: {self.problems[bad[0]]}"
            elif uri in self.stale:
                rejected[uri] = self.stale[uri]
            elif len(occurrences) > 1:
                keys = sorted({o.file.key for o in occurrences})
                rejected[uri] = f"duplicate: stored {len(occurrences)} times (in {', '.join(keys)})"
            else:
                found.add(uri)
        problems = tuple(IntegrityProblem(key=key, problem=why) for key, why in sorted(self.problems.items()))
        return ValidationResult(
            backend=self.backend, miner_hotkey=self.miner, found=frozenset(found), rejected=rejected,
            requests=self.store.meter.requests, bytes_read=self.store.meter.bytes_read,
            objects_scanned=self.opened, problems=problems, rows=tuple(sorted(self.rows, key=lambda r: r.uri)),
            manifest=self._manifest_note(),
        )

    def _manifest_note(self) -> str:
        if self.refusal:
            return f"refused: {self.refusal}"
        if self.index is not None:
            return f"round {self.index.manifest.seq} ({self.index.key})"
        return "none: checked by listing" if self.opened else "none"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _row(table: pa.Table, index: int) -> dict[str, Any]:
    return {name: table.column(name)[index].as_py() for name in table.column_names}


def check_claims(store: ObjectStore, backend: str, miner_hotkey: str, uris: Sequence[str],
                 settings: CheckSettings | None = None) -> ValidationResult:
    """Which of ``uris`` miner ``miner_hotkey`` holds on ``store``, checked as the module docstring says.

    Raises whatever the store raises for its own failures (the backend could not answer).
    """
    check = _Check(store, backend, miner_hotkey, uris, settings or CheckSettings())
    listing = list(store.list_objects())
    try:
        check.index = load_manifest(store, listing, miner_hotkey, backend)
    except ManifestError as error:
        check.refusal = str(error)
    candidates = check.candidates(listing)
    if check.refusal:
        candidates = []
    elif check.index is not None:
        try:
            candidates = check.indexed(candidates, listing)
        except ManifestError as error:
            check.refusal, candidates = f"manifest {check.index.key}: {error}", []
    elif candidates:
        log.warning("%s: %s has chunks but no round manifest: checked by listing (slower)", backend, miner_hotkey)
    with ThreadPoolExecutor(max(1, check.settings.concurrency), thread_name_prefix=f"{backend}-check") as pool:
        opened = [item for item in pool.map(lambda item: check.open(*item), candidates) if item is not None]
        check.opened = len(opened)
        if check.index is not None:  # the index named each object's URIs: one pass over all of them
            list(pool.map(lambda item: check.search(item, frozenset()), opened))
        else:
            for _day, same_day in groupby(opened, key=lambda item: item.name.date):  # newest day first
                sought = frozenset(uri for uri in check.claimed if not check.seen.get(uri))
                if not sought:
                    break
                list(pool.map(lambda item: check.search(item, sought), list(same_day)))
        check.verify_descriptions(opened, listing)
        check.full_row_checks()
    result = check.result()
    log.info("%s: %s holds %d of %d URIs (%d rejected; %d objects opened, %d requests, %d bytes, %d problems)",
             backend, miner_hotkey, len(result.found), len(check.claimed), len(result.rejected),
             result.objects_scanned, result.requests, result.bytes_read, len(result.problems))
    return result
