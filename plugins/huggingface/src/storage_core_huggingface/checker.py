"""Answering "which of these URIs does miner M hold?" from the miner's repo with range reads only.

The checker lists the repo once, checks each data file's name against the sha256 the Hub reports for
its LFS object (no download needed), then reads each file's parquet footer and only the ``uri`` column
chunks of the row groups whose min/max statistics may hold a sought URI. It stops reading once every
sought URI is found. Whole files are never downloaded.
"""

from __future__ import annotations

import logging
import re
import struct
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from storage_core.layout import NAME_HASH_CHARS, hotkey_of_key, miner_prefix
from storage_core.schema import schema_problem
from storage_core.values import BackendContext, IntegrityProblem, ValidationResult
from storage_core_huggingface.client import hf_api, hf_filesystem, metered
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


def scan_file(handle: Any, size: int, sought: set[str]) -> tuple[set[str], str | None]:
    """URIs of ``sought`` found in one parquet file object, or a schema problem. Reads footer + uri chunks."""
    try:
        parquet = pq.ParquetFile(handle, metadata=read_footer(handle, size), pre_buffer=False)
    except (pa.ArrowInvalid, OSError, ValueError) as error:
        return set(), f"not a readable parquet file: {error}"
    problem = schema_problem(parquet.schema_arrow)
    if problem:
        return set(), problem
    column = parquet.schema_arrow.get_field_index("uri")
    found: set[str] = set()
    for index in range(parquet.metadata.num_row_groups):
        remaining = sought - found
        if not remaining:
            break
        if not _sought_in(parquet.metadata.row_group(index).column(column).statistics, remaining):
            continue
        uris = parquet.read_row_group(index, columns=["uri"], use_threads=False).column("uri")
        found.update(remaining.intersection(uris.to_pylist()))
    return found, None


def validate(context: BackendContext, miner_hotkey: str, uris: tuple[str, ...]) -> ValidationResult:
    """Report which ``uris`` the miner's repo holds, what it cost, and any file that cannot be trusted."""
    options = HfOptions.from_mapping(context.options)
    backoff = backoff_for(options)
    repo_id = repo_id_for(options.namespace, options.repo_prefix, miner_hotkey)
    api = hf_api(options)
    sought = set(uris)
    found: set[str] = set()
    problems: list[IntegrityProblem] = []
    scanned = 0
    with metered() as meter:
        try:
            revision: str = backoff.call(
                f"read {repo_id}", lambda: api.repo_info(repo_id, repo_type="dataset").sha or "main")
        except RepositoryNotFoundError:
            return ValidationResult(backend=BACKEND_ID, miner_hotkey=miner_hotkey, found=frozenset(),
                                    requests=meter.requests, bytes_read=meter.bytes_read)
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
            problems.append(IntegrityProblem(key=MANIFEST_PATH, problem=problem))
            logger.warning("huggingface: %s: %s; counting nothing in it", repo_id, problem)
            return ValidationResult(backend=BACKEND_ID, miner_hotkey=miner_hotkey, found=frozenset(),
                                    requests=meter.requests, bytes_read=meter.bytes_read, problems=problems)
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
                continue
            if lfs_sha is None:
                problems.append(IntegrityProblem(key=path, problem="not stored as LFS: no sha256 to check its name"))
                continue
            if not lfs_sha.startswith(match.group(1)):
                problems.append(IntegrityProblem(
                    key=path, problem=f"checksum mismatch: content sha256 {lfs_sha} does not match its name"))
                continue
            if not sought - found:
                continue  # every URI is found: the remaining files are checked by name and checksum only
            scanned += 1
            try:
                with fs.open(f"{root}/{path}", "rb", revision=revision, cache_type="none", size=entry.size) as handle:
                    hits, problem = scan_file(handle, entry.size, sought - found)
            except (HfHubHTTPError, OSError) as error:
                raise backend_error(f"reading {path} in", repo_id, error) from error
            if problem:
                problems.append(IntegrityProblem(key=path, problem=problem))
            found |= hits
    logger.info("huggingface: %s holds %d/%d URIs (%d files read, %d requests, %d bytes)", repo_id, len(found),
                len(sought), scanned, meter.requests, meter.bytes_read)
    return ValidationResult(backend=BACKEND_ID, miner_hotkey=miner_hotkey, found=frozenset(found),
                            requests=meter.requests, bytes_read=meter.bytes_read, objects_scanned=scanned,
                            problems=problems)


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
