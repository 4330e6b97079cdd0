"""The storage config document: model, strict parsing, canonical and compact encodings, layering.

One versioned document says which backends are enabled, each one's rollout percentage and options,
the validation policy and the fallback order. The subnet owner publishes it on chain either inline in
a compact ASCII encoding that fits the commitment's 3 x 128 bytes, or as a pointer (sha256 + URL) to
the canonical JSON. Layers are merged with the precedence overrides > chain > environment > defaults.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import attrs

from storage_core.errors import ConfigError
from storage_core.options import convert
from storage_core.values import BACKEND_ID_PATTERN

CONFIG_VERSION = 1
POLICIES = ("any", "all", "primary")
OPTION_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
COMMITMENT_FIELDS = 3
COMMITMENT_FIELD_BYTES = 128
COMMITMENT_LIMIT = COMMITMENT_FIELDS * COMMITMENT_FIELD_BYTES
COMPACT_PREFIX = f"sc{CONFIG_VERSION}"
POINTER_PREFIX = f"sc{CONFIG_VERSION}p"

OptionValue = str | int | float | bool
_TOP_KEYS = ("version", "backends", "validation_policy", "fallback_order", "freshness_days")
#: Days a row stays valid (SN13's DATA_ENTITY_BUCKET_AGE_LIMIT_DAYS): older rows are stale.
DEFAULT_FRESHNESS_DAYS = 30
_BACKEND_KEYS = ("enabled", "rollout_percent", "options")


@attrs.frozen
class BackendConfig:
    """One backend's entry in the config."""

    enabled: bool = False
    rollout_percent: float = 0
    options: Mapping[str, OptionValue] = attrs.field(
        factory=dict, converter=lambda value: types.MappingProxyType(dict(value))
    )

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "rollout_percent": self.rollout_percent, "options": dict(self.options)}


@attrs.frozen
class StorageConfig:
    """The whole storage config of a subnet."""

    backends: Mapping[str, BackendConfig] = attrs.field(
        converter=lambda value: types.MappingProxyType(dict(value))
    )
    validation_policy: str = "any"
    fallback_order: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    version: int = CONFIG_VERSION
    freshness_days: int = DEFAULT_FRESHNESS_DAYS

    def to_dict(self) -> dict[str, Any]:
        data = {
            "version": self.version,
            "backends": {name: self.backends[name].to_dict() for name in sorted(self.backends)},
            "validation_policy": self.validation_policy,
            "fallback_order": list(self.fallback_order),
        }
        if self.freshness_days != DEFAULT_FRESHNESS_DAYS:  # the default stays implicit: documents stay as they were
            data["freshness_days"] = self.freshness_days
        return data

    def canonical_json(self) -> str:
        """Sorted keys, no spaces: the form whose sha256 a pointer commits to."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def enabled_backends(self) -> tuple[str, ...]:
        """Enabled backend ids in fallback order first, then the rest sorted by id."""
        ordered = [b for b in self.fallback_order if b in self.backends]
        ordered += sorted(b for b in self.backends if b not in ordered)
        return tuple(b for b in ordered if self.backends[b].enabled)

    def evolve_backend(self, backend: str, **changes: Any) -> StorageConfig:
        """A copy with ``backend``'s fields changed (created disabled at 0% if absent); validated again."""
        current = self.backends.get(backend, BackendConfig())
        if "options" in changes:
            changes["options"] = {**current.options, **changes["options"]}
        backends = {**self.backends, backend: attrs.evolve(current, **changes)}
        return parse_config(attrs.evolve(self, backends=backends).to_dict())


DEFAULT_CONFIG_DICT: dict[str, Any] = {
    "version": CONFIG_VERSION,
    "backends": {
        "huggingface": {"enabled": True, "rollout_percent": 100, "options": {}},
        "s3": {"enabled": True, "rollout_percent": 0, "options": {}},
    },
    "validation_policy": "any",
    "fallback_order": ["s3", "huggingface"],
}


# --------------------------------------------------------------------------- parsing


def _percent(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ConfigError(field, f"must be within 0..100, got {value!r}")
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def _option_value(field: str, value: Any) -> OptionValue:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise ConfigError(field, f"must be a string, number or boolean, got {type(value).__name__}")
    return value


def _check_keys(field: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}" if field else unknown[0], f"unknown key (allowed: {', '.join(allowed)})")


def _parse_backend(name: str, data: Any) -> BackendConfig:
    field = f"backends.{name}"
    if not isinstance(data, Mapping):
        raise ConfigError(field, f"must be an object, got {type(data).__name__}")
    _check_keys(field, data, _BACKEND_KEYS)
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{field}.enabled", f"must be true or false, got {enabled!r}")
    percent = _percent(f"{field}.rollout_percent", data.get("rollout_percent", 0))
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{field}.options", f"must be an object, got {type(options).__name__}")
    checked: dict[str, OptionValue] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not OPTION_KEY_PATTERN.match(key):
            raise ConfigError(f"{field}.options", f"invalid option name {key!r} (want {OPTION_KEY_PATTERN.pattern})")
        checked[key] = _option_value(f"{field}.options.{key}", value)
    return BackendConfig(enabled=enabled, rollout_percent=percent, options=checked)


def parse_config(data: Any) -> StorageConfig:
    """Validate a config document (a mapping) and return it; ConfigError names the first bad field."""
    if not isinstance(data, Mapping):
        raise ConfigError("(document)", f"must be an object, got {type(data).__name__}")
    _check_keys("", data, _TOP_KEYS)
    version = data.get("version", CONFIG_VERSION)
    if isinstance(version, bool) or version != CONFIG_VERSION:
        raise ConfigError("version", f"unsupported version {version!r} (this storage-core reads {CONFIG_VERSION})")
    backends_data = data.get("backends", {})
    if not isinstance(backends_data, Mapping):
        raise ConfigError("backends", f"must be an object, got {type(backends_data).__name__}")
    backends: dict[str, BackendConfig] = {}
    for name, entry in backends_data.items():
        if not isinstance(name, str) or not BACKEND_ID_PATTERN.match(name):
            raise ConfigError("backends", f"invalid backend id {name!r} (want {BACKEND_ID_PATTERN.pattern})")
        backends[name] = _parse_backend(name, entry)
    policy = data.get("validation_policy", "any")
    if policy not in POLICIES:
        raise ConfigError("validation_policy", f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    order = data.get("fallback_order", [])
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
        raise ConfigError("fallback_order", f"must be a list of backend ids, got {type(order).__name__}")
    for index, name in enumerate(order):
        if not isinstance(name, str) or name not in backends:  # a list/object entry was a TypeError (fuzzing)
            raise ConfigError(f"fallback_order[{index}]", f"names backend {name!r}, which the config does not define")
    if len(set(order)) != len(order):
        raise ConfigError("fallback_order", "names a backend twice")
    freshness = data.get("freshness_days", DEFAULT_FRESHNESS_DAYS)
    if isinstance(freshness, bool) or not isinstance(freshness, int) or not 1 <= freshness <= 3650:
        raise ConfigError("freshness_days", f"must be a whole number of days from 1 to 3650, got {freshness!r}")
    return StorageConfig(backends=backends, validation_policy=policy, fallback_order=tuple(order),
                         freshness_days=freshness)


def parse_config_json(text: str | bytes) -> StorageConfig:
    """Parse the JSON form of a config document."""
    try:
        data = json.loads(text)
    except UnicodeDecodeError as error:
        raise ConfigError("(document)", f"is not valid UTF-8: {error}") from error
    except json.JSONDecodeError as error:
        raise ConfigError("(document)", f"is not valid JSON: {error}") from error
    return parse_config(data)


DEFAULT_CONFIG = parse_config(DEFAULT_CONFIG_DICT)

# --------------------------------------------------------------------------- compact chain encoding


@attrs.frozen
class ConfigPointer:
    """A reference to a config too large for the commitment: its canonical JSON's sha256 and a URL."""

    sha256: str
    url: str

    def verify(self, document: bytes) -> StorageConfig:
        """Parse ``document`` and accept it only if its canonical form hashes to ``sha256``."""
        digest = hashlib.sha256(document).hexdigest()
        if digest != self.sha256:
            raise ConfigError("(pointer)", f"document at {self.url} has sha256 {digest}, the chain says {self.sha256}")
        config = parse_config_json(document)
        if config.sha256() != self.sha256:
            raise ConfigError("(pointer)", "document is not in canonical form")
        return config


def _encode_scalar(value: OptionValue) -> str:
    if isinstance(value, str):
        try:
            ambiguous = not isinstance(json.loads(value), str) or value.startswith('"')
        except ValueError:
            ambiguous = value.startswith('"')
        text = json.dumps(value) if ambiguous or value == "" else value
    else:
        text = json.dumps(value)
    return quote(text, safe="/:@+!*'()")


def _decode_scalar(field: str, text: str) -> OptionValue:
    try:
        raw = unquote(text, errors="strict")
    except UnicodeDecodeError as error:
        raise ConfigError(field, f"percent-encoded value is not UTF-8: {error}") from error
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return _option_value(field, value)


def _format_percent(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def encode_compact(config: StorageConfig) -> str:
    """The ASCII form published inline on chain, e.g. ``sc1;p=any;f=s3,huggingface;b=s3:1:25:bucket=b``."""
    parts = [COMPACT_PREFIX, f"p={config.validation_policy}", "f=" + ",".join(config.fallback_order)]
    if config.freshness_days != DEFAULT_FRESHNESS_DAYS:
        parts.append(f"d={config.freshness_days}")
    for name in sorted(config.backends):
        entry = config.backends[name]
        options = ",".join(f"{key}={_encode_scalar(entry.options[key])}" for key in sorted(entry.options))
        parts.append(f"b={name}:{int(entry.enabled)}:{_format_percent(entry.rollout_percent)}:{options}")
    return ";".join(parts)


def encode_pointer(pointer: ConfigPointer) -> str:
    return f"{POINTER_PREFIX};{pointer.sha256};{pointer.url}"


def _decode_backend(text: str) -> tuple[str, dict[str, Any]]:
    pieces = text.split(":", 3)
    if len(pieces) != 4:
        raise ConfigError("(compact)", f"backend entry {text[:40]!r} must be id:enabled:percent:options")
    name, enabled, percent, options = pieces
    field = f"backends.{name}"
    if enabled not in ("0", "1"):
        raise ConfigError(f"{field}.enabled", f"must be 0 or 1 in the compact form, got {enabled!r}")
    try:
        percent_value = float(percent) if "." in percent else int(percent)
    except ValueError:
        raise ConfigError(f"{field}.rollout_percent", f"is not a number: {percent!r}") from None
    parsed: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{field}.options", f"entry {item[:40]!r} has no '='")
        parsed[key] = _decode_scalar(f"{field}.options.{key}", value)
    return name, {"enabled": enabled == "1", "rollout_percent": percent_value, "options": parsed}


def decode_chain_payload(payload: bytes | str) -> StorageConfig | ConfigPointer:
    """Decode what a commitment holds: an inline compact config or a pointer. ConfigError on anything else."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError("(commitment)", f"is not valid UTF-8: {error}") from error
    if len(payload.encode()) > COMMITMENT_LIMIT:
        raise ConfigError("(commitment)", f"is {len(payload.encode())} bytes, more than the chain's {COMMITMENT_LIMIT}")
    parts = payload.split(";")
    if parts[0] == POINTER_PREFIX:
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]) or not parts[2]:
            raise ConfigError("(pointer)", "must be sc1p;<64 hex sha256>;<url>")
        return ConfigPointer(sha256=parts[1], url=parts[2])
    if parts[0] != COMPACT_PREFIX:
        raise ConfigError("(commitment)", f"does not start with {COMPACT_PREFIX!r} or {POINTER_PREFIX!r}: {payload[:24]!r}")
    data: dict[str, Any] = {"version": CONFIG_VERSION, "backends": {}}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError("(compact)", f"part {part[:40]!r} has no '='")
        if key == "p":
            data["validation_policy"] = value
        elif key == "f":
            data["fallback_order"] = [name for name in value.split(",") if name]
        elif key == "d":
            if not value.isdigit():
                raise ConfigError("freshness_days", f"is not a whole number: {value!r}")
            data["freshness_days"] = int(value)
        elif key == "b":
            name, entry = _decode_backend(value)
            if name in data["backends"]:
                raise ConfigError(f"backends.{name}", "appears twice")
            data["backends"][name] = entry
        else:
            raise ConfigError("(compact)", f"unknown part {key!r}")
    return parse_config(data)


def encode_for_chain(config: StorageConfig, pointer_url: str | None = None) -> str:
    """The inline compact form when it fits the commitment, else a pointer to ``pointer_url``."""
    compact = encode_compact(config)
    if len(compact.encode()) <= COMMITMENT_LIMIT:
        return compact
    if not pointer_url:
        raise ConfigError(
            "(document)",
            f"compact form is {len(compact)} bytes, over the chain's {COMMITMENT_LIMIT}; "
            "publish the canonical JSON somewhere and give its URL to commit a pointer",
        )
    pointer = encode_pointer(ConfigPointer(config.sha256(), pointer_url))
    if len(pointer.encode()) > COMMITMENT_LIMIT:
        raise ConfigError("(pointer)", f"URL is too long: the pointer must fit {COMMITMENT_LIMIT} bytes")
    return pointer


def split_commitment_fields(payload: str) -> list[bytes]:
    """Split an encoded payload into the commitment's raw fields (at most 3 x 128 bytes)."""
    data = payload.encode()
    if len(data) > COMMITMENT_LIMIT:
        raise ConfigError("(commitment)", f"is {len(data)} bytes, more than the chain's {COMMITMENT_LIMIT}")
    return [data[i : i + COMMITMENT_FIELD_BYTES] for i in range(0, len(data), COMMITMENT_FIELD_BYTES)] or [b""]


# --------------------------------------------------------------------------- layering


@attrs.frozen
class ConfigLayer:
    """A partial config document from one source ("override", "chain", "environment", "default")."""

    name: str
    data: Mapping[str, Any] = attrs.field(converter=lambda value: types.MappingProxyType(dict(value)))


@attrs.frozen
class ResolvedConfig:
    """The effective config and, for every leaf field, the name of the layer it came from."""

    config: StorageConfig
    sources: Mapping[str, str] = attrs.field(converter=lambda value: types.MappingProxyType(dict(value)))

    def source_of(self, path: str) -> str:
        return self.sources.get(path, "default")


def _merge(target: dict[str, Any], data: Mapping[str, Any], layer: str, sources: dict[str, str], prefix: str) -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        deep = key in ("backends", "options") or prefix == "backends."
        if isinstance(value, Mapping) and deep:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                child = target[key] = {}
            _merge(child, value, layer, sources, path + ".")
        else:
            target[key] = value
            sources[path] = layer


def resolve(layers: Sequence[ConfigLayer]) -> ResolvedConfig:
    """Merge layers from lowest to highest precedence and parse the result."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        _merge(merged, layer.data, layer.name, sources, "")
    return ResolvedConfig(config=parse_config(merged), sources=sources)


ENV_PREFIX = "STORAGE_CORE_"


def environment_layer(environ: Mapping[str, str] | None = None) -> ConfigLayer:
    """The config given by environment variables (see docs/configuration.md for the names).

    ``STORAGE_CORE_CONFIG`` holds a JSON document or the path of one; ``STORAGE_CORE_POLICY`` and
    ``STORAGE_CORE_FALLBACK_ORDER`` (comma-separated) set those fields; ``STORAGE_CORE_<ID>_ENABLED``,
    ``STORAGE_CORE_<ID>_ROLLOUT`` and ``STORAGE_CORE_<ID>_OPTION_<NAME>`` set one backend's fields
    (``<ID>`` upper-case, '-' as '_').
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    document = env.get(f"{ENV_PREFIX}CONFIG", "").strip()
    if document:
        try:
            text = document if document.startswith("{") else Path(document).read_text()
        except (OSError, UnicodeDecodeError) as error:  # a missing/unreadable path was an OSError, not a ConfigError
            raise ConfigError("(STORAGE_CORE_CONFIG)", f"is not a JSON object and not a readable file: {error}") from error
        try:
            loaded = json.loads(text)
        except ValueError as error:
            raise ConfigError("(STORAGE_CORE_CONFIG)", f"is not valid JSON: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError("(STORAGE_CORE_CONFIG)", "must hold a JSON object")
        data = loaded
    if policy := env.get(f"{ENV_PREFIX}POLICY"):
        data["validation_policy"] = policy
    if order := env.get(f"{ENV_PREFIX}FALLBACK_ORDER"):
        data["fallback_order"] = [name.strip() for name in order.split(",") if name.strip()]
    pattern = re.compile(rf"^{ENV_PREFIX}([A-Z][A-Z0-9_]*?)_(ENABLED|ROLLOUT|OPTION_([A-Z0-9_]+))$")
    for name, value in sorted(env.items()):
        match = pattern.match(name)
        if not match or match.group(1) in ("CONFIG", "LOAD", "DISABLE", "STRICT"):
            continue
        backend = match.group(1).lower().replace("_", "-") if "-" in match.group(1) else match.group(1).lower()
        entry = data.setdefault("backends", {}).setdefault(backend, {})
        if match.group(2) == "ENABLED":
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(name, f"must be true or false, got {value!r}")
            entry["enabled"] = value.lower() in ("1", "true", "yes")
        elif match.group(2) == "ROLLOUT":
            try:
                entry["rollout_percent"] = float(value)
            except ValueError:
                raise ConfigError(name, f"is not a number: {value!r}") from None
        else:
            entry.setdefault("options", {})[match.group(3).lower()] = _decode_scalar(name, quote(value))
    return ConfigLayer("environment", data)


def default_layer() -> ConfigLayer:
    return ConfigLayer("default", DEFAULT_CONFIG_DICT)


# --------------------------------------------------------------------------- options against the plugins' specs

def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _typed(name: str, spec: Any, value: OptionValue) -> OptionValue:
    """``value`` as ``spec.type`` wants it, checked as the backend itself will parse it (``storage_core.options``:
    one spelling of booleans, URLs, bucket names); ConfigError naming the field if it cannot be."""
    return convert(name, spec, value)


def check_options(config: StorageConfig, specs: Mapping[str, Sequence[Any]],
                  known_backends: Sequence[str] = ()) -> tuple[StorageConfig, list[ConfigError], list[str]]:
    """Check every backend's options against the ``OptionSpec``s its installed plugin declares.

    ``specs`` maps backend id -> option specs of the installed plugins. Returns the config with values in
    their declared types, the errors (unknown option names with a did-you-mean, wrong types, a missing
    required option of an enabled backend), and warnings (backends no installed plugin provides: their
    options cannot be checked here).
    """
    errors: list[ConfigError] = []
    warnings: list[str] = []
    backends: dict[str, BackendConfig] = {}
    for name, entry in config.backends.items():
        if name not in specs:
            hint = _did_you_mean(name, list(specs) + list(known_backends))
            warnings.append(f"backends.{name}: no installed plugin provides this backend, so its options are not "
                            f"checked{hint}")
            backends[name] = entry
            continue
        by_name = {spec.name: spec for spec in specs[name]}
        before = len(errors)
        options: dict[str, OptionValue] = {}
        for key, value in entry.options.items():
            field = f"backends.{name}.options.{key}"
            if key not in by_name:
                errors.append(ConfigError(field, f"is not an option of {name} (it has: {', '.join(sorted(by_name))})"
                                                 + _did_you_mean(key, list(by_name))))
                continue
            if by_name[key].secret:
                errors.append(ConfigError(field, "is a secret: a commitment is public; give it to nodes through "
                                                 f"the environment (STORAGE_CORE_{name.upper()}_OPTION_{key.upper()})"))
                continue
            try:
                options[key] = _typed(name, by_name[key], value)
            except ConfigError as error:
                errors.append(error)
        if entry.enabled:
            for spec in by_name.values():
                if spec.required and spec.default is None and spec.name not in entry.options:
                    errors.append(ConfigError(f"backends.{name}.options.{spec.name}",
                                              f"is required by the {name} plugin ({spec.description or 'no default'})"))
        backends[name] = attrs.evolve(entry, options=options if len(errors) == before else entry.options)
    return attrs.evolve(config, backends=backends), errors, warnings
