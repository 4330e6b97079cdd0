"""The ``storage-core`` command line: built-in commands plus those plugins add through a hook."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from storage_core import __version__
from storage_core.errors import StorageCoreError


#: Built-in commands: name -> (module, attribute). Imported only when run (or listed by --help).
_BUILTINS = {
    "plugins": ("storage_core.cli.plugins_cmd", "plugins_command"),
    "config": ("storage_core.cli.config_cmd", "config_group"),
    "export": ("storage_core.cli.export_cmd", "export_command"),
    "upload": ("storage_core.cli.upload_cmd", "upload_command"),
    "validate": ("storage_core.cli.validate_cmd", "validate_command"),
    "status": ("storage_core.cli.status_cmd", "status_command"),
    "usage": ("storage_core.cli.usage_cmd", "usage_command"),
    "audit": ("storage_core.cli.audit_cmd", "audit_command"),
}


class CoreGroup(click.Group):
    """The built-in commands, then the commands plugins add, each imported only when it is needed.

    ``storage-core export`` imports no plugin: loading every backend (boto3, huggingface_hub, the
    chain SDK) cost it ~70 MiB of resident memory and a second of start-up for nothing.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self._plugins_loaded:
            from storage_core.plugins import PluginRegistry

            self._plugins_loaded = True
            registry = PluginRegistry()
            registry.load_all()
            registry.register_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _BUILTINS and cmd_name not in self.commands:
            module, attribute = _BUILTINS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        if cmd_name not in self.commands:
            self._load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return sorted(set(_BUILTINS) | set(self.commands))


@click.group(cls=CoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storage-core")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """storage-core: publish and validate subnet data on pluggable storage backends."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_cli() -> click.Group:
    """The command group: built-in commands, and every loaded plugin's commands when one is asked for."""
    return cli


def main() -> None:
    """Console-script entry point; storage-core errors print a one-line message and exit 2, Ctrl-C exits 130.

    Exit codes are listed in ``storage_core.cli.common`` and the README.
    """
    # bittensor 10.x parses sys.argv when imported (its logging flags) and would answer our --help with its own;
    # BT_NO_PARSE_CLI_ARGS is its documented switch for programs that own their command line.
    os.environ.setdefault("BT_NO_PARSE_CLI_ARGS", "1")
    from storage_core.cli.common import EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED

    try:
        group = build_cli()
        code = group(prog_name="storage-core", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Abort as abort:  # click turns Ctrl-C into Abort; a "no" at a prompt is one too
        interrupted = isinstance(abort.__cause__, KeyboardInterrupt)
        click.echo("Interrupted." if interrupted else "Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_FAILED)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except StorageCoreError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INPUT)
    except SystemExit:
        raise
