"""The ``obsflow`` command: parse, call one function, render, exit.

Each subcommand lives in its own module in this package and exposes ``command``
(a ``click.Command``).  Only :func:`main` turns :class:`~obsflow.errors.ObsflowError`
into the one-line ``obsflow: error: <what> (<where>)`` and its exit code.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from obsflow import __version__
from obsflow.cli._options import emit_json, json_emitted
from obsflow.errors import EXIT_CANNOT_RUN, EXIT_INTERRUPTED, ObsflowError

__all__ = ["main", "obsflow"]

# Subcommands: name -> (module, one-line help), in the order ``obsflow --help`` lists them.
# Modules are imported only when their command runs, so ``obsflow sync`` does not pay
# for astropy and matplotlib (start-up time matters for a nightly no-op sync).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "Run a whole simulated night: telescope, filler, two-hop sync, verification."),
    "simulate": ("simulate", "Write a simulated GBT raw project, scan by scan."),
    "simulate-instruments": ("simulate_instruments", "Write simulated instrument frames into dated folders."),
    "fill": ("fill", "Fill raw scans into SDFITS files with GBTIDL index and flag files."),
    "index": ("index", "(Re)build or check the GBTIDL index of SDFITS files."),
    "online": ("online", "The online filler daemon; 'online status' shows what it does."),
    "sync": ("sync", "Copy the last N nights along every hop (instruments -> site -> remote)."),
    "verify": ("verify", "Check every file of this and last month is on every hop; report, mail."),
    "serve": ("serve", "Serve the read-only status page and its JSON API."),
    "config": ("config", "Check a configuration file."),
}

EPILOG = """\b
Examples:
  obsflow demo                      run a whole simulated night
  obsflow simulate raw/ --scans 4   write a simulated GBT raw project
  obsflow fill raw/AGBT26A_001_01 out/ --scans 1-4
  obsflow sync --config obsflow.toml --dry-run
  obsflow verify --config obsflow.toml --mail
"""


class _LazyGroup(click.Group):
    """Lists subcommands from :data:`COMMANDS` and imports a command's module only to run it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"obsflow.cli.{COMMANDS[name][0]}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class _OneLine(logging.Formatter):
    """A log line names files (a conflict, a copy removed again): a name holding a newline or ESC is
    written with backslash escapes, as the sync's own lines show it (one message, one line; a
    traceback below it stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from obsflow.transfer.listing import escape_controls  # only when something is logged: start-up stays lean

        return escape_controls(super().formatMessage(record))


def main(argv: list[str] | None = None) -> int:
    """Run the ``obsflow`` command and return its exit code.

    With ``--json``, an error that stops the command before its JSON is printed still gives
    one JSON document on stdout, ``{"error": ..., "exit_code": ...}``, so ``| jq`` gets input.
    """
    args = sys.argv[1:] if argv is None else argv
    json_emitted(reset=True)
    try:
        result = obsflow.main(args=argv, prog_name="obsflow", standalone_mode=False)
    except ObsflowError as err:
        click.echo(f"obsflow: error: {err.one_line()}", err=True)
        return _failed(args, err.exit_code, err.one_line())
    except click.exceptions.Abort:
        click.echo("obsflow: interrupted", err=True)
        return _failed(args, EXIT_INTERRUPTED, "interrupted")
    except click.exceptions.NoArgsIsHelpError as err:  # a group without its command: its help, not an error line
        err.show()
        return _failed(args, EXIT_CANNOT_RUN, "no command given")
    except click.ClickException as err:
        message = _click_one_line(err)
        click.echo(f"obsflow: error: {message}", err=True)
        return _failed(args, EXIT_CANNOT_RUN if err.exit_code not in (0, 1) else err.exit_code, message)
    except KeyboardInterrupt:
        click.echo("obsflow: interrupted", err=True)
        return _failed(args, EXIT_INTERRUPTED, "interrupted")
    except Exception as err:  # noqa: BLE001 -- a bug: its traceback, and "could not run" (1 means "left undone")
        traceback.print_exc()
        message = f"internal error: {type(err).__name__}: {err} (a bug: please report it with the traceback above)"
        click.echo(f"obsflow: {message}", err=True)
        return _failed(args, EXIT_CANNOT_RUN, message)
    if isinstance(result, int):
        return result
    return 0


def _click_one_line(err: click.ClickException) -> str:
    """Click's own error (a bad option or value) as one line, as every other error, pointing at the
    command's --help (Click prints "Usage: ...", "Try ...", a blank line and "Error: ...")."""
    message = " ".join(err.format_message().split()).rstrip(".")
    ctx = getattr(err, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def _failed(args: list[str], exit_code: int, message: str) -> int:
    if "--json" in args and not json_emitted():
        emit_json({"error": message, "exit_code": exit_code})
    return exit_code
