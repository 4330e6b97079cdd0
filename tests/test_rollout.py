"""Rollout: deterministic, sticky, monotone, per backend."""

from __future__ import annotations

import hashlib

import pytest

from storage_core.chain.keys import new_keypair
from storage_core.rollout import is_selected, rollout_position


@pytest.fixture(scope="module")
def hotkeys() -> list[str]:
    # Real ss58 addresses would take seconds to generate in bulk; hashing gives the same spread.
    return [new_keypair().ss58_address for _ in range(20)] + [
        hashlib.sha256(str(i).encode()).hexdigest() for i in range(10_000)
    ]


def test_position_matches_the_design_formula() -> None:
    hotkey = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    expected = int(hashlib.sha256(f"s3:{hotkey}".encode()).hexdigest(), 16) % 10_000
    assert rollout_position("s3", hotkey) == expected
    assert rollout_position("s3", hotkey) == rollout_position("s3", hotkey)


def test_raising_the_percentage_never_deselects(hotkeys) -> None:
    previous: set[str] = set()
    for percent in (0, 5, 25, 50, 100):
        selected = {h for h in hotkeys if is_selected("s3", h, percent)}
        assert previous <= selected
        previous = selected
    assert previous == set(hotkeys)
    assert not any(is_selected("s3", h, 0) for h in hotkeys)


def test_25_percent_selects_a_quarter(hotkeys) -> None:
    sample = hotkeys[-10_000:]
    share = sum(is_selected("s3", h, 25) for h in sample) / len(sample)
    assert abs(share - 0.25) <= 0.015


def test_backends_roll_out_independently(hotkeys) -> None:
    sample = hotkeys[-10_000:]
    s3 = {h for h in sample if is_selected("s3", h, 50)}
    hf = {h for h in sample if is_selected("huggingface", h, 50)}
    both = len(s3 & hf) / len(sample)
    assert abs(both - 0.25) <= 0.02  # independent halves overlap on a quarter


def test_out_of_range_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="0..100"):
        is_selected("s3", "x", 150)
