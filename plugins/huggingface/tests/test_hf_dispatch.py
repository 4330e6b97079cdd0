"""End to end through the core: the entry point, the plugin registry and the dispatcher."""

from __future__ import annotations

import attrs

from storage_core.config import parse_config
from storage_core.dispatch import VALID, Dispatcher
from storage_core.plugins import PluginRegistry
from storage_core.testing.data import make_batch, uris_of



def test_the_dispatcher_uploads_to_and_validates_against_the_hf_backend(hf_world, tmp_path):
    miner = hf_world.miners[0]
    config = parse_config({
        "version": 1,
        "backends": {"huggingface": {"enabled": True, "rollout_percent": 100,
                                     "options": {"namespace": hf_world.namespace, "repo_prefix": "sn13",
                                                 "endpoint": hf_world.running.url}}},
        "validation_policy": "any",
        "fallback_order": ["huggingface"],
    })
    registry = PluginRegistry(environ={"STORAGE_CORE_LOAD_PLUGINS": "huggingface"})

    def context_for(signer, token):
        def factory(backend):
            base = hf_world.context(signer)
            options = {**config.backends[backend].options, "token": token}  # the token is local, never on chain
            return attrs.evolve(base, backend_id=backend, options=options)
        return factory

    batch = make_batch(tmp_path, miner.ss58_address, rows=500, chunks=2, seed=31)
    miner_side = Dispatcher(registry, config, context_for(miner, hf_world.tokens[miner.ss58_address]))
    [outcome] = miner_side.upload(batch)
    assert outcome.ok, outcome.error
    assert outcome.receipt.location == hf_world.repo_of(miner)

    validator_side = Dispatcher(registry, config, context_for(hf_world.validator, None))
    uris = uris_of(batch)[:20] + ["https://x.com/nobody/status/0"]
    report = validator_side.validate(miner.ss58_address, uris)
    assert report.count(VALID) == 20
    assert report.requests > 0 and report.bytes_read > 0
