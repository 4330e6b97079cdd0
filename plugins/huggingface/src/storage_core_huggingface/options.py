"""The HF backend's options: read from the storage config once per call, checked, and never printed."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import attrs

from storage_core.errors import ConfigError
from storage_core.values import OptionSpec

logger = logging.getLogger(__name__)
HUB_ENDPOINT = "https://huggingface.co"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("namespace", required=True, description="HF user or organisation that holds every miner's repo"),
    OptionSpec("endpoint", default=HUB_ENDPOINT, description="Hub endpoint (a development Hub in tests)"),
    OptionSpec("repo_prefix", default="sn13", description="repo name = '{repo_prefix}-{hotkey}'"),
    OptionSpec("token", secret=True, description="HF access token; default: HF_TOKEN or the saved token file"),
    OptionSpec("private", type="bool", default=False, description="create miner repos as private datasets"),
    OptionSpec("read_concurrency", type="int", default=8, description="range requests in flight at once per repo"),
    OptionSpec("max_attempts", type="int", default=6, description="tries per Hub call on 429/5xx/network errors"),
    OptionSpec("backoff_base_s", type="float", default=1.0, description="first back-off wait when no Retry-After"),
    OptionSpec("backoff_max_s", type="float", default=120.0, description="longest single back-off wait"),
    OptionSpec("timeout_s", type="float", default=60.0, description="time limit of one read request to the Hub"),
)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    raise ConfigError(f"huggingface.{name}", f"expected a boolean, got {value!r}")


def _number(name: str, value: Any, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"huggingface.{name}", f"expected {kind.__name__}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"huggingface.{name}", f"must be at least {minimum}, got {value!r}")
    return number


@attrs.frozen
class HfOptions:
    """Checked options of one call. ``token`` is None when the caller relies on huggingface_hub's own sources."""

    namespace: str
    endpoint: str = HUB_ENDPOINT
    repo_prefix: str = "sn13"
    token: str | None = attrs.field(default=None, repr=False)
    private: bool = False
    read_concurrency: int = 8
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 120.0
    timeout_s: float = 60.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> HfOptions:
        known = {spec.name for spec in OPTION_SPECS}
        unknown = sorted(set(options) - known)
        if unknown:  # a newer config may add options: ignore them rather than stop an older node
            logger.warning("huggingface: ignoring unknown options %s", ", ".join(unknown))
        namespace = options.get("namespace")
        if not isinstance(namespace, str) or not _NAME.match(namespace):
            raise ConfigError("huggingface.namespace", f"must be an HF user or organisation name, got {namespace!r}")
        prefix = options.get("repo_prefix", "sn13")
        if not isinstance(prefix, str) or not _NAME.match(prefix) or len(prefix) > 40:
            raise ConfigError("huggingface.repo_prefix", f"must be a short repo-name prefix, got {prefix!r}")
        endpoint = options.get("endpoint") or HUB_ENDPOINT
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ConfigError("huggingface.endpoint", f"must be an http(s) URL, got {endpoint!r}")
        token = options.get("token")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigError("huggingface.token", "must be a non-empty string when set")
        return cls(
            namespace=namespace,
            endpoint=endpoint.rstrip("/"),
            repo_prefix=prefix,
            token=token.strip() if token else None,
            private=_bool("private", options.get("private", False)),
            read_concurrency=_number("read_concurrency", options.get("read_concurrency", 8), int, 1),
            max_attempts=_number("max_attempts", options.get("max_attempts", 6), int, 1),
            backoff_base_s=_number("backoff_base_s", options.get("backoff_base_s", 1.0), float, 0.0),
            backoff_max_s=_number("backoff_max_s", options.get("backoff_max_s", 120.0), float, 0.0),
            timeout_s=_number("timeout_s", options.get("timeout_s", 60.0), float, 0.1),
        )

    @property
    def is_hub(self) -> bool:
        return self.endpoint == HUB_ENDPOINT
