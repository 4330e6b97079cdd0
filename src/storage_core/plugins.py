"""Find, load and isolate backend plugins registered in the entry-point group ``storage_core.backends``.

Entry points are listed without importing them and loaded one by one on first use. A plugin that
fails to import, declares another plugin API version, or claims a backend id another package also
claims is recorded as failed with its reason and never breaks the others; set
``STORAGE_CORE_STRICT_PLUGINS=1`` to turn such failures into errors. ``STORAGE_CORE_LOAD_PLUGINS``
(allow list) and ``STORAGE_CORE_DISABLE_PLUGINS`` (deny list) take comma-separated backend ids.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from storage_core import hookspecs
from storage_core.errors import PluginError, UnknownBackendError
from storage_core.values import PLUGIN_API_VERSION, BackendDescriptor

ENTRY_POINT_GROUP = "storage_core.backends"
log = logging.getLogger(__name__)

# Statuses of a plugin record.
DISCOVERED = "discovered"  # listed, not imported yet
LOADED = "loaded"
FAILED = "failed"
DISABLED = "disabled"

#: Capability -> the hook that provides it: a backend can do what its plugin implements, whatever it declares.
CAPABILITY_HOOKS = {
    "upload": "storage_upload",
    "validate": "storage_reader",
    "health": "storage_health",
    "usage": "storage_usage",
    "manifest": "storage_publish_manifest",
}


@attrs.frozen
class PluginRecord:
    """What the core knows about one entry point, whether or not it could be loaded."""

    name: str  # entry-point name == backend id
    value: str  # "module" or "module:object"
    package: str | None
    version: str | None
    status: str
    reason: str | None = None
    descriptor: BackendDescriptor | None = None
    hooks: tuple[str, ...] = ()

    @property
    def capabilities(self) -> frozenset[str]:
        """What the backend can do, from the hooks it implements (the one source of truth)."""
        return frozenset(c for c, hook in CAPABILITY_HOOKS.items() if hook in self.hooks)


def _env_list(environ: Mapping[str, str], name: str) -> frozenset[str] | None:
    raw = environ.get(name)
    if raw is None:
        return None
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class PluginRegistry:
    """The loaded backend plugins, addressed by backend id."""

    def __init__(
        self,
        points: Iterable[EntryPoint] | None = None,
        environ: Mapping[str, str] | None = None,
        extra_plugins: Mapping[str, object] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.strict = _is_truthy(env.get("STORAGE_CORE_STRICT_PLUGINS"))
        self._allow = _env_list(env, "STORAGE_CORE_LOAD_PLUGINS")
        self._deny = _env_list(env, "STORAGE_CORE_DISABLE_PLUGINS") or frozenset()
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self._records: dict[str, PluginRecord] = {}
        self._points: dict[str, EntryPoint] = {}
        self._plugins: dict[str, object] = {}
        listed = list(entry_points(group=ENTRY_POINT_GROUP) if points is None else points)
        self._discover(listed)
        for name, plugin in (extra_plugins or {}).items():
            self.register(name, plugin)

    # ------------------------------------------------------------------ discovery and loading

    def _discover(self, points: list[EntryPoint]) -> None:
        by_name: dict[str, list[EntryPoint]] = defaultdict(list)
        for point in points:
            by_name[point.name].append(point)
        for name, claims in sorted(by_name.items()):
            packages = sorted({(p.dist.name if p.dist else p.value) for p in claims})
            first = claims[0]
            package = first.dist.name if first.dist else None
            version = first.dist.version if first.dist else None
            if len(claims) > 1 and len(packages) > 1:
                reason = f"backend id {name!r} is claimed by several packages: {' and '.join(packages)}"
                self._fail(PluginRecord(name, first.value, package, version, FAILED, reason))
                continue
            if name in self._deny or (self._allow is not None and name not in self._allow):
                why = "STORAGE_CORE_DISABLE_PLUGINS" if name in self._deny else "not in STORAGE_CORE_LOAD_PLUGINS"
                self._records[name] = PluginRecord(name, first.value, package, version, DISABLED, f"disabled by {why}")
                continue
            self._points[name] = first
            self._records[name] = PluginRecord(name, first.value, package, version, DISCOVERED)

    def _fail(self, record: PluginRecord) -> None:
        self._records[record.name] = record
        log.error("plugin %s failed: %s", record.name, record.reason)
        if self.strict:
            raise PluginError(f"plugin {record.name!r} failed: {record.reason}")

    def _accept(self, name: str, plugin: object, record: PluginRecord) -> None:
        """Register ``plugin`` for backend ``name`` if its descriptor is valid; otherwise record why not."""
        plugin_name = f"storage_core.backend.{name}"
        try:
            self.manager.register(plugin, name=plugin_name)
        except Exception as error:  # pluggy validates hookimpl signatures here
            self._fail(attrs.evolve(record, status=FAILED, reason=f"invalid hook implementation: {error}"))
            return
        try:  # a hookimpl whose name matches no spec (a misspelt hook) would otherwise never be called
            self.manager.check_pending()
        except pluggy.PluginValidationError as error:
            self.manager.unregister(plugin)
            self._fail(attrs.evolve(record, status=FAILED, reason=f"invalid hook implementation: {error}"))
            return
        try:
            descriptors = list(self._call_plugin(plugin, "storage_backends", {}) or ())
        except Exception as error:
            self.manager.unregister(plugin)
            self._fail(attrs.evolve(record, status=FAILED, reason=f"storage_backends raised {error!r}"))
            return
        matching = [d for d in descriptors if isinstance(d, BackendDescriptor) and d.id == name]
        problem = None
        if not matching:
            ids = ", ".join(repr(getattr(d, "id", d)) for d in descriptors) or "none"
            problem = f"entry point {name!r} describes no backend with that id (it describes: {ids})"
        elif matching[0].api_version != PLUGIN_API_VERSION:
            problem = (
                f"declares plugin API version {matching[0].api_version}; this storage-core speaks {PLUGIN_API_VERSION}"
            )
        if problem:
            self.manager.unregister(plugin)
            self._fail(attrs.evolve(record, status=FAILED, reason=problem))
            return
        hooks = tuple(sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or ()))
        self._plugins[name] = plugin
        self._records[name] = attrs.evolve(record, status=LOADED, descriptor=matching[0], hooks=hooks)
        declared, derived = matching[0].capabilities, self._records[name].capabilities
        if declared - derived:
            log.warning("plugin %s declares %s but implements no hook for it; using its hooks: %s", name,
                        ", ".join(sorted(declared - derived)), ", ".join(sorted(derived)) or "none")
        log.debug("plugin %s loaded from %s (hooks: %s)", name, record.value, ", ".join(hooks))

    def load(self, name: str) -> PluginRecord:
        """Import one discovered entry point (once) and return its record; failures are recorded."""
        record = self._records.get(name)
        if record is None:
            raise UnknownBackendError(name, list(self._records))
        if record.status != DISCOVERED:
            return record
        point = self._points[name]
        try:
            plugin = point.load()
        except Exception as error:
            self._fail(attrs.evolve(record, status=FAILED, reason=f"import failed: {type(error).__name__}: {error}"))
        else:
            self._accept(name, plugin, record)
        return self._records[name]

    def load_all(self) -> list[PluginRecord]:
        """Load every discovered plugin; return every record, loaded or not, sorted by backend id."""
        for name in list(self._records):
            self.load(name)
        return self.records()

    def register(self, name: str, plugin: object, package: str | None = None, version: str | None = None) -> PluginRecord:
        """Register an in-process plugin object (tests, embedding) as backend ``name``."""
        if name in self._records and self._records[name].status in (LOADED, DISCOVERED):
            existing = self._records[name]
            raise PluginError(f"backend id {name!r} is already provided by {existing.package or existing.value}")
        record = PluginRecord(name, repr(plugin), package, version, DISCOVERED)
        self._records[name] = record
        self._accept(name, plugin, record)
        return self._records[name]

    # ------------------------------------------------------------------ queries

    def records(self) -> list[PluginRecord]:
        return [self._records[name] for name in sorted(self._records)]

    def record(self, name: str) -> PluginRecord | None:
        return self._records.get(name)

    def available(self, name: str) -> bool:
        """Whether backend ``name`` is (or can be) loaded successfully."""
        return name in self._records and self.load(name).status == LOADED

    def descriptor(self, name: str) -> BackendDescriptor:
        if not self.available(name):
            raise UnknownBackendError(name, [n for n, r in self._records.items() if r.status == LOADED])
        descriptor = self._records[name].descriptor
        assert descriptor is not None
        return descriptor

    def implements(self, name: str, hook: str) -> bool:
        return self.available(name) and hook in self._records[name].hooks

    def capable(self, name: str, capability: str) -> bool:
        """Whether backend ``name`` is loaded and implements the hook behind ``capability``."""
        return self.available(name) and capability in self._records[name].capabilities

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on backend ``name``'s plugin only; returns its single result.

        Raises PluginError when the plugin does not implement the hook or returns nothing.
        """
        if not self.implements(name, hook):
            if not self.available(name):
                raise UnknownBackendError(name, [n for n, r in self._records.items() if r.status == LOADED])
            raise PluginError(f"backend {name!r} does not implement {hook}")
        result = self._call_plugin(self._plugins[name], hook, kwargs)
        if result is None:
            raise PluginError(f"backend {name!r} returned nothing from {hook}")
        return result

    def _call_plugin(self, plugin: object, hook: str, kwargs: Mapping[str, Any]) -> Any:
        """Call ``plugin``'s own implementation of ``hook`` with the arguments it names.

        Never goes through a pluggy hook caller: those call every registered plugin, including ones
        loaded after a caller was made, so one backend would get another's call and options.
        """
        caller = getattr(self.manager.hook, hook, None)
        impls = [impl for impl in (caller.get_hookimpls() if caller else ()) if impl.plugin is plugin]
        if len(impls) != 1:
            raise PluginError(f"plugin {self.manager.get_name(plugin)!r} has {len(impls)} implementations of {hook}")
        impl = impls[0]
        return impl.function(**{arg: kwargs[arg] for arg in impl.argnames})

    def call_all(self, hook: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``hook`` on every loaded plugin that implements it; an exception becomes that plugin's result."""
        results: dict[str, Any] = {}
        for name in sorted(self._plugins):
            if hook not in self._records[name].hooks:
                continue
            try:
                results[name] = self.call(name, hook, **kwargs)
            except Exception as error:  # isolation is the point
                log.error("plugin %s: %s raised %r", name, hook, error)
                results[name] = error
        return results

    def register_commands(self, cli: Any) -> dict[str, Exception]:
        """Let every loaded plugin add CLI commands; a plugin that raises is skipped and reported."""
        errors: dict[str, Exception] = {}
        for name in sorted(self._plugins):
            if "storage_register_commands" not in self._records[name].hooks:
                continue
            try:
                self._call_plugin(self._plugins[name], "storage_register_commands", {"cli": cli})
            except Exception as error:
                log.error("plugin %s could not register its commands: %r", name, error)
                errors[name] = error
        return errors
