"""Who is on the subnet: the view the grant service and validators use to check a hotkey."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs


class SubnetMembership(Protocol):
    """Answers whether a hotkey is registered on the subnet and whether it holds a validator permit."""

    def is_registered(self, hotkey: str) -> bool: ...

    def has_validator_permit(self, hotkey: str) -> bool: ...


def _hotkeys(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class StaticMembership:
    """A fixed membership list (tests, demos, or a deployment that pins its miners)."""

    registered: frozenset[str] = attrs.field(converter=_hotkeys)
    validators: frozenset[str] = attrs.field(default=frozenset(), converter=_hotkeys)

    def is_registered(self, hotkey: str) -> bool:
        return hotkey in self.registered or hotkey in self.validators

    def has_validator_permit(self, hotkey: str) -> bool:
        return hotkey in self.validators
