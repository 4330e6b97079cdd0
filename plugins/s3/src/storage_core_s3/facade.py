"""``S3ValidatorStorage``: the integration guide's S3-only validator entry point, over the plugin's checker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage_core.values import BackendContext, ValidationResult

from storage_core_s3.plugin import BACKEND_ID, storage_validate


class S3ValidatorStorage:
    """``S3ValidatorStorage(config, validator_wallet).validate_miner_data(hotkey, uris)``.

    ``config`` is what ``storage_core.facades.create_config_from_chain_or_env`` returns (or a mapping of the S3
    options); the validator's wallet signs the read-grant requests. To combine every enabled backend by the
    configured policy, use ``storage_core.facades.create_validator_storage`` instead.
    """

    def __init__(self, config: Any, validator_wallet: Any, netuid: int | None = None) -> None:
        if isinstance(config, Mapping):
            options = dict(config)
        else:
            storage = getattr(config, "storage", config)
            entry = storage.backends.get(BACKEND_ID)
            if entry is None:
                raise ValueError("the storage config has no 's3' backend")
            options = dict(entry.options)
            netuid = netuid if netuid is not None else getattr(config, "netuid", None)
        self.options = options
        self.wallet = validator_wallet
        self.netuid = netuid

    def validate_miner_data(self, miner_hotkey: str, uris: Sequence[str]) -> ValidationResult:
        """Which of ``uris`` the miner holds on S3, with the requests and bytes read and any integrity problems."""
        from storage_core.chain.keys import hotkey_address

        context = BackendContext(backend_id=BACKEND_ID, options=self.options, netuid=self.netuid,
                                 hotkey=hotkey_address(self.wallet), signer=self.wallet)
        return storage_validate(context, miner_hotkey, tuple(dict.fromkeys(uris)))
