"""Two hints to the operating system that keep the export's memory and its final fsyncs small.

Both are best-effort: where the C library lacks the call (not glibc, not Linux) they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages back; do not wait


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _load_malloc_trim() -> Callable[[], None]:
    """glibc keeps freed memory in per-thread arenas; ``malloc_trim`` hands it back."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return lambda: None
    return lambda: trim(0) and None


def _load_sync_file_range() -> Callable[[int], None]:
    call = getattr(_libc(), "sync_file_range", None)
    if call is None:
        return lambda _fd: None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd: call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) and None


release_free_memory = _load_malloc_trim()
_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the dirty pages of the file open as ``fd`` to disk, without waiting.

    The fsync that seals a chunk then finds little left to write: the export's last chunks are all
    sealed at once, and their fsyncs were ~0.2 s of its tail per million rows (as RocksDB's
    ``bytes_per_sync`` does, for the same reason). Never needed for correctness: sealing still fsyncs.
    """
    _sync_file_range(fd)  # a failure (e.g. a file system without it) leaves the work to the fsync
