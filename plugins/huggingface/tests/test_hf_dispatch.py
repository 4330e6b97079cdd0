"""End to end through the core: the entry point, the plugin registry and the dispatcher."""

from __future__ import annotations

import attrs
import pytest

from storage_core.config import parse_config
from storage_core.dispatch import INVALID, UNKNOWN, VALID, Dispatcher
from storage_core.plugins import PluginRegistry
from storage_core.testing import cheats
from storage_core.testing.data import make_batch, make_table, recent_day, uris_of


@pytest.fixture
def sides(hf_world):
    """(miner's dispatcher, validator's dispatcher) over the huggingface backend alone, loaded by entry point."""
    config = parse_config({
        "version": 1,
        "backends": {"huggingface": {"enabled": True, "rollout_percent": 100,
                                     "options": {"namespace": hf_world.namespace, "repo_prefix": "sn13",
                                                 "endpoint": hf_world.running.url, "backoff_base_s": 0.0,
                                                 "max_attempts": 2}}},
        "validation_policy": "any",
        "fallback_order": ["huggingface"],
    })
    registry = PluginRegistry(environ={"STORAGE_CORE_LOAD_PLUGINS": "huggingface"})

    def dispatcher(signer, token):
        def factory(backend):
            base = hf_world.context(signer)
            options = {**config.backends[backend].options, "token": token}  # the token is local, never on chain
            return attrs.evolve(base, backend_id=backend, options=options)
        return Dispatcher(registry, config, factory)

    miner = hf_world.miners[0]
    return dispatcher(miner, hf_world.tokens[miner.ss58_address]), dispatcher(hf_world.validator, None)


def test_the_dispatcher_uploads_to_and_validates_against_the_hf_backend(hf_world, sides, tmp_path):
    miner_side, validator_side = sides
    miner = hf_world.miners[0]
    batch = make_batch(tmp_path, miner.ss58_address, rows=500, chunks=2, seed=31)
    [outcome] = miner_side.upload(batch)
    assert outcome.ok, outcome.error
    assert outcome.receipt.location == hf_world.repo_of(miner)

    uris = uris_of(batch)[:20] + ["https://x.com/nobody/status/0"]
    report = validator_side.validate(miner.ss58_address, uris, seed="s")
    assert report.count(VALID) == 20 and report.verdicts[uris[-1]] == INVALID
    assert report.requests > 0 and report.bytes_read > 0


def _honest_and(hf_world, sides, seed):
    """An honest file (300 rows) in miner 0's repo; its URIs."""
    hotkey = hf_world.miners[0].ss58_address
    honest = cheats.honest(hotkey, make_table(300, "x", seed=seed, day=recent_day(2)))
    hf_world.put_raw(honest.key, honest.data)
    return hotkey, list(honest.claims[:10])


@pytest.mark.parametrize("odd", ["damaged", "gone", "content-range"])
def test_one_odd_file_loses_only_its_own_claims_and_the_backend_still_answers(hf_world, sides, odd):
    _, validator_side = sides
    hotkey, honest = _honest_and(hf_world, sides, seed=41)
    bad = cheats.honest(hotkey, make_table(300, "x", seed=42))
    hf_world.put_raw(bad.key, cheats.damaged(bad).data if odd == "damaged" else bad.data)  # damaged: the name lies
    if odd == "gone":  # listed, then answered 404 (as if deleted behind the listing)
        hf_world.hub.fail_next(1_000, status=404, retry_after=None, match=bad.key)
    elif odd == "content-range":  # an answer that is not the range asked for
        hf_world.hub.serve_headers(bad.key, {"Content-Range": "bytes 5-9/100"})
    claims = list(bad.claims[:10]) + honest
    report = validator_side.validate(hotkey, claims, seed="s")
    [outcome] = report.outcomes
    assert outcome.ok, outcome.error
    assert [report.verdicts[uri] for uri in bad.claims[:10]] == [INVALID] * 10
    assert [report.verdicts[uri] for uri in honest] == [VALID] * 10
    assert [p.key for p in outcome.result.problems] == [bad.key]


def test_a_declared_content_encoding_never_decodes_the_stored_bytes(hf_world, sides):
    _, validator_side = sides
    hotkey, honest = _honest_and(hf_world, sides, seed=43)
    hf_world.hub.serve_headers("/resolve/", {"Content-Encoding": "gzip"})
    report = validator_side.validate(hotkey, honest, seed="s")
    assert report.count(VALID) == len(honest), report.outcomes


def test_the_hub_being_down_is_could_not_validate_never_invalid(hf_world, sides):
    _, validator_side = sides
    hotkey, honest = _honest_and(hf_world, sides, seed=44)
    hf_world.hub.fail_next(1_000, status=503, retry_after=None)
    report = validator_side.validate(hotkey, honest, seed="s")
    [outcome] = report.outcomes
    assert outcome.status == "failed" and "HTTP 503" in outcome.error
    assert set(report.verdicts.values()) == {UNKNOWN}

