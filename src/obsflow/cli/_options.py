"""Options and renderers shared by several subcommands."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["config_option", "dry_run_option", "emit_json", "is_terminal", "json_option"]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """``--config FILE``, defaulting to ``$OBSFLOW_CONFIG`` then ``./obsflow.toml``."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=lambda: os.environ.get("OBSFLOW_CONFIG", "obsflow.toml"),
        show_default="$OBSFLOW_CONFIG or ./obsflow.toml",
        help="The obsflow TOML configuration file.",
    )(func)


def json_option(func: F) -> F:
    """``--json``: print machine-readable output on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def dry_run_option(func: F) -> F:
    """``--dry-run``: say what would be done, change nothing."""
    return click.option("-n", "--dry-run", is_flag=True, help="Show what would be done; change nothing.")(func)


_emitted = False  # whether this run printed its JSON document (see json_emitted)


def emit_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (paths and dates become strings)."""
    global _emitted
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))
    _emitted = True


def json_emitted(reset: bool = False) -> bool:
    """True once a command printed its JSON: an error after it must not print a second document.

    ``reset``: forget it (a new command starts; tests run several in one process).
    """
    global _emitted
    emitted, _emitted = _emitted, _emitted and not reset
    return emitted


def is_terminal() -> bool:
    """True when stderr is a terminal: show progress bars; in cron print plain lines."""
    return sys.stderr.isatty()


def collect_garbage_rarely() -> None:
    """For a command that lists many files (sync, verify): the cyclic garbage collector every
    100,000 new objects instead of every 700.

    Such a run builds a few tuples per file (listings, catalog rows) that live until its end;
    the collector's passes over them free nothing and took ~5 % of a no-op sync of 10,000
    files.  Reference counting frees everything else as always.
    """
    gc.set_threshold(100_000)
