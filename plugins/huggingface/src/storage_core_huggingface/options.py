"""The HF backend's options: declared here, typed by the core (``storage_core.options``), checked, never printed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from storage_core.options import OptionError, at_least, option_field, parse_options
from storage_core.values import OptionSpec

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


BACKEND_ID = "huggingface"


def _bad(name: str, problem: str) -> OptionError:
    return OptionError(option_field(BACKEND_ID, name), problem)


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
        """Typed by the core from ``OPTION_SPECS`` (defaults, booleans, the endpoint URL); names and ranges here.
        OptionError (a ConfigError naming ``backends.huggingface.options.<name>``) when one is wrong."""
        values = parse_options(BACKEND_ID, OPTION_SPECS, options)
        if not _NAME.match(values["namespace"]):
            raise _bad("namespace", f"must be an HF user or organisation name, got {values['namespace']!r}")
        if not _NAME.match(values["repo_prefix"]) or len(values["repo_prefix"]) > 40:
            raise _bad("repo_prefix", f"must be a short repo-name prefix, got {values['repo_prefix']!r}")
        token = values["token"]
        if token is not None and not token.strip():
            raise _bad("token", "must be a non-empty string when set")
        for name in ("read_concurrency", "max_attempts"):
            at_least(BACKEND_ID, name, values[name], 1)
        for name in ("backoff_base_s", "backoff_max_s"):
            at_least(BACKEND_ID, name, values[name], 0.0)
        at_least(BACKEND_ID, "timeout_s", values["timeout_s"], 0.1)
        values["endpoint"] = values["endpoint"].rstrip("/")
        values["token"] = token.strip() if token else None
        return cls(**values)

    @property
    def is_hub(self) -> bool:
        return self.endpoint == HUB_ENDPOINT
