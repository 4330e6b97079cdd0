"""Building huggingface_hub clients for one call, and metering the requests they make.

Xet: the Hub's Xet storage protocol exists only on the real Hub. Against any other endpoint (a mirror, a
development Hub) uploads must use the classic LFS protocol, so for such endpoints the backend sets
``huggingface_hub.constants.HF_HUB_DISABLE_XET`` at runtime (``is_xet_available()`` reads it on every
call). That flag is process-wide; set ``HF_HUB_DISABLE_XET=1`` yourself to make the choice explicit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
from huggingface_hub import HfApi, HfFileSystem, constants
from huggingface_hub.utils import get_session

from storage_core_huggingface.options import HfOptions

logger = logging.getLogger(__name__)


def prepare_transfer(options: HfOptions) -> None:
    """Disable Xet when talking to an endpoint that is not the Hub (it has no Xet storage)."""
    if not options.is_hub and not constants.HF_HUB_DISABLE_XET:
        logger.info("endpoint %s is not the Hub: disabling Xet uploads (HF_HUB_DISABLE_XET)", options.endpoint)
        constants.HF_HUB_DISABLE_XET = True


def hf_api(options: HfOptions) -> HfApi:
    """An HfApi for the configured endpoint; token None means HF_TOKEN or the saved token file."""
    prepare_transfer(options)
    return HfApi(endpoint=options.endpoint, token=options.token, library_name="storage-core-huggingface")


def hf_filesystem(options: HfOptions) -> HfFileSystem:
    """A fresh (uncached) HfFileSystem, so one validation never sees another's cached listing."""
    prepare_transfer(options)
    return HfFileSystem(endpoint=options.endpoint, token=options.token, skip_instance_cache=True)


@attrs.define
class Meter:
    """HTTP requests and response body bytes made by one thread while the meter is active."""

    requests: int = 0
    bytes_read: int = 0

    def add(self, other: Meter) -> None:
        self.requests += other.requests
        self.bytes_read += other.bytes_read


_active = threading.local()
_hooked_clients: set[int] = set()
_hook_lock = threading.Lock()


def _on_response(response: Any) -> None:
    meter: Meter | None = getattr(_active, "meter", None)
    if meter is None:
        return
    meter.requests += 1
    if response.request.method != "HEAD":
        meter.bytes_read += int(response.headers.get("content-length") or 0)


def _install_hook() -> None:
    client = get_session()
    with _hook_lock:
        if id(client) in _hooked_clients:
            return
        hooks = client.event_hooks
        hooks.setdefault("response", []).append(_on_response)
        client.event_hooks = hooks
        _hooked_clients.add(id(client))


@contextmanager
def metered() -> Iterator[Meter]:
    """Count the requests (and bytes, from Content-Length) the current thread makes through huggingface_hub."""
    _install_hook()
    meter = Meter()
    previous = getattr(_active, "meter", None)
    _active.meter = meter
    try:
        yield meter
    finally:
        _active.meter = previous
