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

from huggingface_hub import HfApi, HfFileSystem, constants
from huggingface_hub.utils import get_session

from storage_core.verify.store import Meter
from storage_core_huggingface.http_compat import add_response_hook
from storage_core_huggingface.options import HfOptions

logger = logging.getLogger(__name__)


def prepare_transfer(options: HfOptions) -> None:
    """Disable Xet when talking to an endpoint that is not the Hub (it has no Xet storage)."""
    # huggingface_hub 0.2x has no Xet (and no such flag): nothing to disable
    if not options.is_hub and not getattr(constants, "HF_HUB_DISABLE_XET", True):
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


_active = threading.local()
_hooked_clients: set[int] = set()
_hook_lock = threading.Lock()


def _on_response(response: Any) -> None:
    meter: Meter | None = getattr(_active, "meter", None)
    if meter is None:
        return
    size = 0 if response.request.method == "HEAD" else int(response.headers.get("content-length") or 0)
    meter.add(requests=1, bytes_read=size)


def _install_hook() -> None:
    client = get_session()
    with _hook_lock:
        if id(client) in _hooked_clients:
            return
        add_response_hook(client, _on_response)
        _hooked_clients.add(id(client))


@contextmanager
def metered(meter: Meter) -> Iterator[Meter]:
    """Count into ``meter`` the requests (and bytes, from Content-Length) this thread makes through huggingface_hub.

    Every response counts, redirects and error answers included, so the meter agrees with the server's own
    counters. ``meter`` is thread-safe: the threads reading one repo share it.
    """
    _install_hook()
    previous = getattr(_active, "meter", None)
    _active.meter = meter
    try:
        yield meter
    finally:
        _active.meter = previous
