"""The ``obsflow`` command: parse, call one function, render, exit.

Each subcommand lives in its own module in this package and exposes ``command``
(a ``click.Command``).  Only :func:`main` turns :class:`~obsflow.errors.ObsflowError`
into the one-line ``obsflow: error: <what> (<where>)`` and its exit code.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from obsflow import __version__
from obsflow.errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, ObsflowError

__all__ = ["main", "obsflow"]

# Subcommand modules, in the order ``obsflow --help`` lists them.
COMMAND_MODULES = (
    "demo",
    "simulate",
    "simulate_instruments",
    "fill",
    "index",
    "online",
    "sync",
    "verify",
    "serve",
    "config",
)

EPILOG = """\b
Examples:
  obsflow demo                      run a whole simulated night
  obsflow simulate raw/ --scans 4   write a simulated GBT raw project
  obsflow fill raw/AGBT26A_001_01 out/ --scans 1-4
  obsflow sync --config obsflow.toml --dry-run
  obsflow verify --config obsflow.toml --mail
"""


class _Group(click.Group):
    """Keeps subcommands in registration order in ``--help``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="obsflow")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def obsflow(verbose: int, quiet: bool) -> None:
    """Move telescope data from where it is taken to where it is used, without losing a byte.

    Two jobs: the online SDFITS filler (raw GBT scans -> SDFITS + GBTIDL index and
    flag files) and the nightly two-hop sync (instruments -> site archive -> remote
    archive) with its daily verification.
    """
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module_name = f"obsflow.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue  # not built yet
        module = importlib.import_module(module_name)
        obsflow.add_command(module.command)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the ``obsflow`` command and return its exit code."""
    try:
        result = obsflow.main(args=argv, prog_name="obsflow", standalone_mode=False)
    except ObsflowError as err:
        click.echo(f"obsflow: error: {err.one_line()}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("obsflow: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as err:
        err.show()
        return EXIT_CANNOT_RUN if err.exit_code not in (0, 1) else err.exit_code
    except KeyboardInterrupt:
        click.echo("obsflow: interrupted", err=True)
        return EXIT_INTERRUPTED
    if isinstance(result, int):
        return result
    return 0
