"""``S3ValidatorStorage``: the integration guide's S3-only validator entry point: the plugin's store, the core's checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage_core.config import DEFAULT_FRESHNESS_DAYS
from storage_core.values import BackendContext, ValidationResult
from storage_core.verify import CheckSettings, check_claims

from storage_core_s3.plugin import BACKEND_ID, storage_reader


class S3ValidatorStorage:
    """``S3ValidatorStorage(config, validator_wallet).validate_miner_data(hotkey, uris)``.

    ``config`` is what ``storage_core.facades.create_config_from_chain_or_env`` returns (or a mapping of the S3
    options); the validator's wallet signs the read-grant requests. To combine every enabled backend by the
    configured policy, use ``storage_core.facades.create_validator_storage`` instead.
    """

    def __init__(self, config: Any, validator_wallet: Any, netuid: int | None = None) -> None:
        self.freshness_days = DEFAULT_FRESHNESS_DAYS
        if isinstance(config, Mapping):
            options = dict(config)
        else:
            storage = getattr(config, "storage", config)
            entry = storage.backends.get(BACKEND_ID)
            if entry is None:
                raise ValueError("the storage config has no 's3' backend")
            options = dict(entry.options)
            self.freshness_days = getattr(storage, "freshness_days", DEFAULT_FRESHNESS_DAYS)
            netuid = netuid if netuid is not None else getattr(config, "netuid", None)
        self.options = options
        self.wallet = validator_wallet
        self.netuid = netuid

    def validate_miner_data(self, miner_hotkey: str, uris: Sequence[str], *, seed: str | None = None) -> ValidationResult:
        """Which of ``uris`` the miner holds on S3, checked by the core (``seed`` picks the full-row samples).

        Raises ``BackendError`` when S3 or the grant service could not answer ("could not validate").
        """
        from storage_core.chain.keys import hotkey_address

        context = BackendContext(backend_id=BACKEND_ID, options=self.options, netuid=self.netuid,
                                 hotkey=hotkey_address(self.wallet), signer=self.wallet)
        settings = CheckSettings(freshness_days=self.freshness_days, seed=seed)
        store = storage_reader(context, miner_hotkey)
        try:
            return check_claims(store, BACKEND_ID, miner_hotkey, tuple(dict.fromkeys(uris)), settings)
        finally:
            store.close()
