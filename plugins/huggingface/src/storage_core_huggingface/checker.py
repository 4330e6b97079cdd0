"""Answering "which of these URIs does miner M hold?" from the miner's repo with range reads only.

The checker lists the repo once, checks each data file's name against the sha256 the Hub reports for
its LFS object (no download needed), then reads each file's parquet footer and only the ``uri`` column
chunks of the row groups whose min/max statistics may hold a sought URI. It stops reading once every
sought URI is found. Files are read by ``read_concurrency`` threads. Whole files are never downloaded.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from storage_core.footers import implausible_footer
from storage_core.layout import NAME_HASH_CHARS, hotkey_of_key, miner_prefix
from storage_core.schema import schema_problem
from storage_core.values import BackendContext, IntegrityProblem, ValidationResult
from storage_core_huggingface.client import Meter, hf_api, hf_filesystem, metered
from storage_core_huggingface.identity import MANIFEST_PATH, SIGNATURE_PATH, manifest_problem, repo_id_for
from storage_core_huggingface.options import HfOptions
from storage_core_huggingface.uploader import BACKEND_ID, backend_error, backoff_for

logger = logging.getLogger(__name__)
FOOTER_GUESS = 16 * 1024
_DATA_NAME = re.compile(rf"^hotkey=[^/]+/source=[^/]+/date=[^/]+/([0-9a-f]{{{NAME_HASH_CHARS}}})\.parquet$")


def _sought_in(stats: Any, sought: set[str]) -> bool:
    """Whether a row group's uri statistics allow any sought URI (no statistics: assume yes)."""
    if stats is None or not stats.has_min_max:
        return True
    low, high = stats.min, stats.max
    if isinstance(low, bytes):
        low, high = low.decode("utf-8", "replace"), high.decode("utf-8", "replace")
    return any(low <= uri <= high for uri in sought)


def read_footer(handle: Any, size: int) -> pq.FileMetaData:
    """The parquet footer from one tail read of ``FOOTER_GUESS`` bytes (two reads when the footer is larger).

    pyarrow's own reader fetches a fixed 64 KiB tail; footers of storage-core chunks are a few KiB.
    """
    guess = min(size, FOOTER_GUESS)
    handle.seek(size - guess)
    tail = handle.read(guess)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("no parquet trailer (PAR1)")
    length = struct.unpack("<I", tail[-8:-4])[0]
    if length + 12 > size:
        raise ValueError(f"footer length {length} exceeds the file size {size}")
    if length + 8 > len(tail):
        handle.seek(size - length - 8)
        tail = handle.read(length + 8)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-(length + 8):]))


class _Progress:
    """The URIs still sought, shared by the threads that read files (early stop when none is left)."""

    def __init__(self, sought: set[str]) -> None:
        self.sought = sought
        self.found: set[str] = set()
        self._lock = threading.Lock()

    def remaining(self) -> set[str]:
        with self._lock:
            return self.sought - self.found

    def add(self, hits: set[str]) -> None:
        with self._lock:
            self.found |= hits


def scan_file(handle: Any, size: int, progress: _Progress) -> str | None:
    """Record the sought URIs found in one parquet file object; return a schema problem, if any.

    Reads the footer and the uri column chunks of row groups that may hold a URI still sought.
    """
    try:
        parquet = pq.ParquetFile(handle, metadata=read_footer(handle, size), pre_buffer=False)
    except (pa.ArrowInvalid, OSError, ValueError) as error:
        _raise_if_transport(error)
        return f"not a readable parquet file: {error}"
    problem = schema_problem(parquet.schema_arrow)
    if problem:
        return problem
    column = parquet.schema_arrow.get_field_index("uri")
    problem = implausible_footer(parquet.metadata, size)
    if problem:
        return problem
    try:
        for index in range(parquet.metadata.num_row_groups):
            remaining = progress.remaining()
            if not remaining:
                break
            if not _sought_in(parquet.metadata.row_group(index).column(column).statistics, remaining):
                continue
            uris = parquet.read_row_group(index, columns=["uri"], use_threads=False).column("uri")
            progress.add(remaining.intersection(uris.to_pylist()))
    except (pa.ArrowException, OSError, ValueError) as error:
        # A lying footer, a corrupt page header (pyarrow raises a plain OSError) or statistics that are not
        # UTF-8 once escaped from here and voided the whole validation ("unknown" for every URI), which let
        # a hostile miner dodge "invalid" verdicts. It is this file's problem; a failure to reach the Hub
        # still fails the validation.
        _raise_if_transport(error)
        return f"not a readable parquet file: {error}"
    return None


def _raise_if_transport(error: Exception) -> None:
    """Re-raise errors of the Hub connection (HfHubHTTPError, ConnectionError, TimeoutError: OSError
    subclasses) so they fail the validation ("could not validate") instead of blaming the miner's file.

    pyarrow reports corrupt data as a plain OSError; errors raised by the Python file object pass through
    pyarrow unchanged, with their own subclass.
    """
    if isinstance(error, OSError) and type(error) is not OSError:
        raise error


def classify(entries: dict[str, Any], miner_hotkey: str) -> tuple[list[tuple[str, Any]], list[IntegrityProblem]]:
    """Split a listing into this miner's data files worth reading and the problems visible from names alone.

    The checksum check needs no download: the Hub reports each LFS object's sha256, which must start with
    the hash in the file's name.
    """
    readable: list[tuple[str, Any]] = []
    problems: list[IntegrityProblem] = []
    own_prefix = miner_prefix(miner_hotkey)
    for path, entry in sorted(entries.items()):
        if not path.endswith(".parquet"):
            continue
        if not path.startswith(own_prefix):
            owner = hotkey_of_key(path)
            problems.append(IntegrityProblem(key=path, problem=f"file under hotkey {owner}, not this miner's"))
            continue
        match = _DATA_NAME.match(path)
        lfs_sha = getattr(getattr(entry, "lfs", None), "sha256", None)
        if match is None:
            problems.append(IntegrityProblem(key=path, problem="name is not in the storage-core layout"))
        elif lfs_sha is None:
            problems.append(IntegrityProblem(key=path, problem="not stored as LFS: no sha256 to check its name"))
        elif not lfs_sha.startswith(match.group(1)):
            problems.append(IntegrityProblem(
                key=path, problem=f"checksum mismatch: content sha256 {lfs_sha} does not match its name"))
        else:
            readable.append((path, entry))
    return readable, problems


def validate(context: BackendContext, miner_hotkey: str, uris: tuple[str, ...]) -> ValidationResult:
    """Report which ``uris`` the miner's repo holds, what it cost, and any file that cannot be trusted."""
    options = HfOptions.from_mapping(context.options)
    backoff = backoff_for(options)
    repo_id = repo_id_for(options.namespace, options.repo_prefix, miner_hotkey)
    api = hf_api(options)
    progress = _Progress(set(uris))

    def answer(meter: Meter, problems: list[IntegrityProblem], scanned: int = 0) -> ValidationResult:
        return ValidationResult(backend=BACKEND_ID, miner_hotkey=miner_hotkey, found=frozenset(progress.found),
                                requests=meter.requests, bytes_read=meter.bytes_read, objects_scanned=scanned,
                                problems=problems)

    with metered() as meter:
        try:
            revision: str = backoff.call(
                f"read {repo_id}", lambda: api.repo_info(repo_id, repo_type="dataset").sha or "main")
        except RepositoryNotFoundError:
            return answer(meter, [])
        except (HfHubHTTPError, OSError) as error:
            raise backend_error("reading", repo_id, error) from error
        try:
            entries = backoff.call(f"list {repo_id}", lambda: _list(api, repo_id, revision))
            fs = hf_filesystem(options)
            root = f"datasets/{repo_id}"
            problem = manifest_problem(_cat(fs, f"{root}/{MANIFEST_PATH}", revision, entries),
                                       _cat(fs, f"{root}/{SIGNATURE_PATH}", revision, entries), repo_id, miner_hotkey)
        except (HfHubHTTPError, OSError) as error:
            raise backend_error("reading", repo_id, error) from error
        if problem:
            logger.warning("huggingface: %s: %s; counting nothing in it", repo_id, problem)
            return answer(meter, [IntegrityProblem(key=MANIFEST_PATH, problem=problem)])
        readable, problems = classify(entries, miner_hotkey)

        def read(path: str, entry: Any) -> tuple[str | None, Meter, bool]:
            """Scan one file in a worker thread, metering it there; (problem, meter, whether it was read)."""
            with metered() as file_meter:
                if not progress.remaining():
                    return None, file_meter, False  # every URI found: checked by name and checksum only
                try:
                    with fs.open(f"{root}/{path}", "rb", revision=revision, cache_type="none",
                                 size=entry.size) as handle:
                        return scan_file(handle, entry.size, progress), file_meter, True
                except (HfHubHTTPError, OSError) as error:
                    raise backend_error(f"reading {path} in", repo_id, error) from error

        scanned = 0
        with ThreadPoolExecutor(max_workers=options.read_concurrency, thread_name_prefix="hf-check") as pool:
            futures = [(path, pool.submit(read, path, entry)) for path, entry in readable]
            for path, future in futures:  # in path order, so problems come back in a stable order
                problem, file_meter, was_read = future.result()
                meter.add(file_meter)
                scanned += was_read
                if problem:
                    problems.append(IntegrityProblem(key=path, problem=problem))
    logger.info("huggingface: %s holds %d/%d URIs (%d files read, %d requests, %d bytes)", repo_id,
                len(progress.found), len(progress.sought), scanned, meter.requests, meter.bytes_read)
    return answer(meter, problems, scanned)


def _list(api: Any, repo_id: str, revision: str) -> dict[str, Any]:
    try:
        entries = api.list_repo_tree(repo_id, recursive=True, repo_type="dataset", revision=revision)
        return {entry.path: entry for entry in entries if hasattr(entry, "size")}
    except EntryNotFoundError:
        return {}


def _cat(fs: Any, path: str, revision: str, entries: dict[str, Any]) -> bytes | None:
    """A small file's bytes, or None when the listing does not have it."""
    relative = path.split("/", 3)[3]
    if relative not in entries or entries[relative].size > 64 * 1024:
        return None
    return fs.cat_file(path, revision=revision)


def usage(context: BackendContext, miner_hotkey: str) -> tuple[int, int]:
    """(parquet files, bytes) in the miner's repo, from one tree listing; (0, 0) when it has no repo."""
    options = HfOptions.from_mapping(context.options)
    api = hf_api(options)
    repo_id = repo_id_for(options.namespace, options.repo_prefix, miner_hotkey)
    try:
        revision: str = backoff_for(options).call(
            f"read {repo_id}", lambda: api.repo_info(repo_id, repo_type="dataset").sha or "main")
        entries = _list(api, repo_id, revision)
    except RepositoryNotFoundError:
        return 0, 0
    except (HfHubHTTPError, OSError) as error:
        raise backend_error("listing", repo_id, error) from error
    files = [entry for path, entry in entries.items() if path.endswith(".parquet")]
    return len(files), sum(entry.size for entry in files)
