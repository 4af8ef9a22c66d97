"""``obsflow config check``: validate a config file, one line per problem."""

from __future__ import annotations

from pathlib import Path

import click

from obsflow.cli._options import config_option, emit_json, json_option
from obsflow.config import check_config
from obsflow.errors import EXIT_CANNOT_RUN, EXIT_OK

__all__ = ["command"]


@click.group("config", epilog="\b\nExamples:\n  obsflow config check                       $OBSFLOW_CONFIG, else ./obsflow.toml\n"
             "  obsflow config check /etc/obsflow/obsflow.toml --json")
def command() -> None:
    """Inspect the obsflow configuration."""


@command.command("check", epilog="\b\nExamples:\n  obsflow config check -c /etc/obsflow/obsflow.toml\n"
                 "  sudo -u obsflow obsflow config check -c /etc/obsflow/obsflow.toml --paths   as the sync's account")
@config_option
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--paths", is_flag=True,
              help="Also check, on this host, the local folders the file names: sources and lock folders exist "
                   "and can be read, archives exist and can be written, the state folder and the filler's output "
                   "folders exist or can be made. Remote [user@]host:path locations are skipped.")  # fmt: skip
@json_option
def check(config_path: Path, file: Path | None, paths: bool, as_json: bool) -> int:
    """Validate FILE (or --config) and print each problem: key, what is wrong, line.

    With --paths, a local folder this account cannot use here is a problem too.
    Exit 0 when the file is valid, 2 when it has problems.
    """
    path = file or config_path
    problems = check_config(path, paths=paths)
    if as_json:
        emit_json({"config": str(path), "ok": not problems,
                   "problems": [{"key": p.key, "what": p.what, "line": p.line} for p in problems]})  # fmt: skip
    else:
        for problem in problems:
            click.echo(f"{path}: {problem}")
        if not problems:
            click.echo(f"{path}: ok")
    return EXIT_CANNOT_RUN if problems else EXIT_OK
