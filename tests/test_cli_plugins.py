"""`storage-core plugins` and plugin-contributed commands (storage_register_commands)."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

from storage_core import PLUGIN_API_VERSION, BackendDescriptor, hookimpl
from storage_core.cli.plugins_cmd import plugins_command
from storage_core.plugins import PluginRegistry


class CommandPlugin:
    @hookimpl
    def storage_backends(self):
        return [BackendDescriptor(id="cmdy", api_version=PLUGIN_API_VERSION, package="cmdy", version="1",
                                  capabilities={"upload"})]

    @hookimpl
    def storage_register_commands(self, cli):
        @cli.command("cmdy-hello")
        @click.argument("name")
        def hello(name: str) -> None:
            click.echo(f"hello {name}")


class RaisingCommandPlugin:
    @hookimpl
    def storage_backends(self):
        return [BackendDescriptor(id="oops", api_version=PLUGIN_API_VERSION, package="oops", version="1",
                                  capabilities={"upload"})]

    @hookimpl
    def storage_register_commands(self, cli):
        raise RuntimeError("cannot add commands")


def test_plugins_add_commands_and_a_raising_one_is_skipped() -> None:
    group = click.Group("storage-core")
    registry = PluginRegistry(points=[], environ={},
                              extra_plugins={"cmdy": CommandPlugin(), "oops": RaisingCommandPlugin()})
    errors = registry.register_commands(group)
    assert list(errors) == ["oops"] and "cannot add commands" in str(errors["oops"])
    result = CliRunner().invoke(group, ["cmdy-hello", "world"])
    assert result.exit_code == 0 and result.output == "hello world\n"


def test_plugins_command_json_shape() -> None:
    registry = PluginRegistry(points=[], environ={}, extra_plugins={"cmdy": CommandPlugin()})
    result = CliRunner().invoke(plugins_command, ["--json"], obj=registry, env={"STORAGE_CORE_NETUID": None})
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    assert entry["id"] == "cmdy" and entry["loaded"] and entry["api_version"] == PLUGIN_API_VERSION
    assert entry["hooks"] == ["storage_backends", "storage_register_commands"]
    assert entry["capabilities"] == []  # declares "upload" but implements no storage_upload
    assert entry["status"].startswith("loaded (no config known")  # never the built-in defaults' opinion
    configured = CliRunner().invoke(plugins_command, ["--json"], obj=registry, env={
        "STORAGE_CORE_NETUID": None, "STORAGE_CORE_CONFIG": '{"backends": {"s3": {"enabled": true}}}'})
    assert json.loads(configured.output)[0]["status"] == "inactive by config (not configured)"


def test_plugins_table_and_module_entry_point() -> None:
    run = subprocess.run([sys.executable, "-m", "storage_core", "plugins"], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert "storage-core backends" in run.stdout
    for backend in ("local", "s3", "huggingface"):
        assert backend in run.stdout


def test_strict_mode_error_is_one_clear_line(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "STORAGE_CORE_STRICT_PLUGINS": "1", "STORAGE_CORE_LOAD_PLUGINS": "local"}
    run = subprocess.run([sys.executable, "-m", "storage_core", "plugins", "--json"], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr  # disabled plugins are not failures, even in strict mode
    assert [e["id"] for e in json.loads(run.stdout) if e["loaded"]] == ["local"]
