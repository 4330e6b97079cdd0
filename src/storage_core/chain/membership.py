"""``SubnetMembership`` from the chain: who is registered on the subnet and who holds a validator permit.

The S3 grant service asks this on every request, so answers come from a cached view of the subnet
(hotkeys by uid from ``SubtensorModule.Keys``, permits from ``SubtensorModule.ValidatorPermit``) that is
re-read at most every ``refresh_seconds``. If a refresh fails, the previous view stays in use (and the
error is logged); with no view at all, ChainError is raised rather than guessing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from storage_core.errors import ChainError

logger = logging.getLogger(__name__)


@attrs.frozen
class MembershipView:
    """The subnet's hotkeys and which of them hold a validator permit, at one block."""

    netuid: int
    registered: frozenset[str]
    validators: frozenset[str]
    block: int | None = None


def read_membership(subtensor: Any, netuid: int) -> MembershipView:
    """Read the subnet's registrations and validator permits from the chain."""
    from storage_core.chain import sdk

    try:
        by_uid, permits, block = sdk.neurons(subtensor, netuid)
    except ChainError:
        raise
    except Exception as error:  # the SDK raises connection, RPC and decoding errors of several types
        raise ChainError(f"cannot read the neurons of subnet {netuid}: {sdk.one_line(error)}") from error
    validators = {hotkey for uid, hotkey in by_uid.items() if uid < len(permits) and permits[uid]}
    return MembershipView(netuid, frozenset(by_uid.values()), frozenset(validators), block)


class ChainMembership:
    """Implements ``storage_core.membership.SubnetMembership`` over a cached, periodically refreshed view."""

    def __init__(
        self,
        subtensor: Any,
        netuid: int,
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subtensor = subtensor
        self.netuid = netuid
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._view: MembershipView | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> MembershipView:
        """Re-read the subnet now."""
        view = read_membership(self.subtensor, self.netuid)
        with self._lock:
            self._view, self._loaded_at = view, self._clock()
        return view

    def view(self) -> MembershipView:
        """The cached view, refreshed when older than ``refresh_seconds``."""
        with self._lock:
            view, fresh = self._view, self._clock() - self._loaded_at < self.refresh_seconds
        if view is not None and fresh:
            return view
        try:
            return self.refresh()
        except ChainError as error:
            if view is None:
                raise
            logger.error("keeping the subnet %d membership from block %s: %s", self.netuid, view.block, error)
            with self._lock:
                self._loaded_at = self._clock()  # retry after another interval, not on every request
            return view

    def is_registered(self, hotkey: str) -> bool:
        return hotkey in self.view().registered

    def has_validator_permit(self, hotkey: str) -> bool:
        return hotkey in self.view().validators
