"""The ``storage-core`` command line: built-in commands plus those plugins add through a hook."""

from __future__ import annotations

import logging
import os
import sys

import click

from storage_core import __version__
from storage_core.errors import StorageCoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storage-core")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """storage-core: publish and validate subnet data on pluggable storage backends."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _builtin_commands() -> list[click.Command]:
    """Commands that ship with the core; each lives in its own module."""
    from storage_core.cli.config_cmd import config_group
    from storage_core.cli.export_cmd import export_command
    from storage_core.cli.plugins_cmd import plugins_command
    from storage_core.cli.status_cmd import status_command
    from storage_core.cli.upload_cmd import upload_command
    from storage_core.cli.usage_cmd import usage_command
    from storage_core.cli.validate_cmd import validate_command

    commands: list[click.Command] = [
        plugins_command, config_group, export_command, upload_command, validate_command, status_command, usage_command,
    ]
    return commands


def build_cli() -> click.Group:
    """The command group with built-in commands and every loaded plugin's commands attached."""
    from storage_core.plugins import PluginRegistry

    for command in _builtin_commands():
        cli.add_command(command)
    registry = PluginRegistry()
    registry.load_all()
    registry.register_commands(cli)
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
