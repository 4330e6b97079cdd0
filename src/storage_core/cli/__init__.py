"""The ``storage-core`` command line: built-in commands plus those plugins add through a hook."""

from __future__ import annotations

import logging

import click

from storage_core import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storage-core")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """storage-core: publish and validate subnet data on pluggable storage backends."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _builtin_commands() -> list[click.Command]:
    """Commands that ship with the core; each lives in its own module."""
    commands: list[click.Command] = []
    return commands


def build_cli() -> click.Group:
    """The command group with built-in and plugin commands attached."""
    for command in _builtin_commands():
        cli.add_command(command)
    return cli


def main() -> None:
    """Console-script entry point."""
    build_cli()(prog_name="storage-core")
