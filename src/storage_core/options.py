"""A backend's options, typed from the ``OptionSpec``s it declares: one parser for every backend and for ``config set``.

A backend lists its options once (name, type, default, required) and reads them with :func:`parse_options`;
``storage-core config set`` checks a new config with the same :func:`convert`, so what an owner can commit is
exactly what nodes accept. One spelling of booleans everywhere (true/false, 1/0, yes/no, any case), numbers
given as text are parsed (the environment only has text), and every error names its field
``backends.<id>.options.<name>``.

Some checks follow the option's name, so every backend gets them without writing them: an ``endpoint`` or
``*_url`` option must be an http(s) URL, a ``bucket`` or ``*_bucket`` option a bucket name as S3 (and the
S3-compatible stores: R2, Spaces, MinIO, SeaweedFS) accepts it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from storage_core.errors import BackendError, ConfigError
from storage_core.values import OptionSpec

logger = logging.getLogger(__name__)

OptionValue = str | int | float | bool
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

_URL_OPTION = re.compile(r"^(endpoint|.*_url)$")
_BUCKET_OPTION = re.compile(r"^(bucket|.*_bucket)$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_BUCKET_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
#: Prefixes and suffixes AWS reserves for its own bucket kinds (access points, directory buckets, ...).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


class OptionError(ConfigError, BackendError):
    """A backend option is missing or wrong. A ConfigError naming ``backends.<id>.options.<name>``, and a
    BackendError that a later round cannot fix (``retryable`` is False) until the config changes."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.retryable = False


def option_field(backend_id: str, name: str) -> str:
    """The name errors use for one option: ``backends.<id>.options.<name>``."""
    return f"backends.{backend_id}.options.{name}"


def parse_bool(field: str, value: Any) -> bool:
    """``True``/``False``, or true/false, 1/0, yes/no in any case; OptionError otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise OptionError(field, f"must be true or false (or 1/0, yes/no), got {value!r}")


def parse_int(field: str, value: Any) -> int:
    """A whole number, also given as text ("8") or as a float without a fraction (8.0)."""
    if isinstance(value, bool):
        raise OptionError(field, f"must be a whole number, got {json.dumps(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise OptionError(field, f"must be a whole number, got {value!r}")


def parse_float(field: str, value: Any) -> float:
    """A number, also given as text ("2.5"); never a boolean, NaN or infinity."""
    if isinstance(value, bool):
        raise OptionError(field, f"must be a number, got {json.dumps(value)}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise OptionError(field, f"must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise OptionError(field, f"must be a finite number, got {value!r}")
    return number


def parse_text(field: str, value: Any) -> str:
    """Text; a number given for a text option becomes its text ("123" is a bucket name, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise OptionError(field, f"must be text, got {json.dumps(value) if isinstance(value, bool) else repr(value)}")
    return value if isinstance(value, str) else json.dumps(value)


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL with a host, or None."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an http(s):// URL, got {value!r}"
    return None


def bucket_problem(name: str) -> str | None:
    """Why ``name`` breaks S3's bucket naming rules, or None: 3-63 characters; lower-case letters, digits, dots and
    hyphens; each dot-separated part starts and ends with a letter or digit (so no "..", ".-" or "-."); not an
    IP address; none of the prefixes and suffixes AWS reserves."""
    shown = repr(name)
    if not 3 <= len(name) <= 63:
        return f"{shown} is not a valid bucket name: it must be 3 to 63 characters long (it has {len(name)})"
    if not _BUCKET_CHARS.match(name):
        return f"{shown} is not a valid bucket name: use only lower-case letters, digits, dots and hyphens"
    if not all(_BUCKET_LABEL.match(label) for label in name.split(".")):
        return (f"{shown} is not a valid bucket name: it must start and end with a letter or digit, and have no "
                "'..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return f"{shown} is not a valid bucket name: it must not look like an IP address"
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"{shown} is not a valid bucket name: the prefix {prefix!r} is reserved"
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"{shown} is not a valid bucket name: the suffix {suffix!r} is reserved"
    return None


def _check_format(field: str, name: str, text: str) -> None:
    if not text:
        return
    problem = None
    if _URL_OPTION.match(name):
        problem = url_problem(text)
    elif _BUCKET_OPTION.match(name):
        problem = bucket_problem(text)
    if problem is not None:
        raise OptionError(field, problem)


def convert(backend_id: str, spec: OptionSpec, value: Any) -> OptionValue:
    """``value`` in ``spec.type``, with the checks its name implies (URLs, bucket names); OptionError if it cannot be."""
    field = option_field(backend_id, spec.name)
    if spec.type == "bool":
        return parse_bool(field, value)
    if spec.type == "int":
        return parse_int(field, value)
    if spec.type == "float":
        return parse_float(field, value)
    text = parse_text(field, value)
    _check_format(field, spec.name, text)
    return text


def parse_options(backend_id: str, specs: Iterable[OptionSpec], options: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared option, typed: given values converted, missing ones at their default (None when there is
    none). A required option with no value is an OptionError. Unknown names are logged and ignored: a newer
    config may carry options for a newer version of the plugin, and must not stop an older node."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(options) - set(by_name))
    if unknown:
        logger.warning("backend %r ignores unknown options: %s", backend_id, ", ".join(unknown))
    values: dict[str, Any] = {}
    for name, spec in by_name.items():
        raw = options.get(name)
        if raw is None or raw == "":
            raw = spec.default
        if raw is None or raw == "":
            if spec.required:
                raise OptionError(option_field(backend_id, name), "is required" +
                                  (f" ({spec.description})" if spec.description else ""))
            values[name] = None
            continue
        values[name] = convert(backend_id, spec, raw)
    return values


def at_least(backend_id: str, name: str, value: float, minimum: float) -> None:
    """OptionError unless ``value >= minimum``: the range checks backends write for counts, sizes and times."""
    if value < minimum:
        raise OptionError(option_field(backend_id, name), f"must be at least {minimum:g}, got {value!r}")


def one_of(backend_id: str, name: str, value: str, choices: Iterable[str]) -> None:
    """OptionError unless ``value`` is one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise OptionError(option_field(backend_id, name), f"must be one of {', '.join(allowed)}, got {value!r}")
