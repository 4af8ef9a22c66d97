"""``obsflow online``: the online filler daemon, and ``obsflow online status``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.errors import UsageError

EXAMPLES = """\b
Examples:
  obsflow online --raw-root /home/gbtdata --out-root /home/sdfits
  obsflow online --raw-root raw --out-root out --projects AGBT26A_001_01 --poll 0.2
  obsflow online status --out-root /home/sdfits
"""


@click.group("online", invoke_without_command=True, epilog=EXAMPLES)
@click.option("--raw-root", type=click.Path(path_type=Path, file_okay=False), help="Where the telescope writes raw projects.")
@click.option("--out-root", type=click.Path(path_type=Path, file_okay=False), help="Where SDFITS products go (/home/sdfits).")
@click.option("--flags", "flags_dir", type=click.Path(path_type=Path, file_okay=False), help="Flag-file folder [OUT/flags].")
@click.option("--locks", "locks_dir", type=click.Path(path_type=Path, file_okay=False), help="Lock-file folder [OUT/locks].")
@click.option("--projects", default="", help="Comma-separated projects to follow (default: all).")
@click.option("--poll", "poll_s", type=float, default=1.0, show_default=True, help="Seconds between polls.")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for a project lock.")
@click.option("--retries", type=int, default=5, show_default=True, help="Attempts before a failing scan is skipped.")
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (tests, demos).")
@click.option("--until-idle", is_flag=True, help="Stop when every finished scan is filled (catch-up run).")
@click.pass_context
def command(
    ctx: click.Context,
    raw_root: Path | None,
    out_root: Path | None,
    flags_dir: Path | None,
    locks_dir: Path | None,
    projects: str,
    poll_s: float,
    lock_timeout: float,
    retries: int,
    max_seconds: float | None,
    until_idle: bool,
) -> int:
    """Fill each scan into SDFITS seconds after the telescope finishes it.

    Follows ScanLog.fits of every project under RAW-ROOT; at each SCAN FINISHED it
    appends that scan (and any it missed) to OUT-ROOT/<PROJ>/<PROJ>.raw.vegas/, keeping
    the GBTIDL index, flag files, sdfitsStatus.txt, a lock while writing and an undo
    journal so a crash never damages a file.  Runs until SIGTERM/SIGINT.
    """
    ctx.ensure_object(dict)
    ctx.obj["out_root"] = out_root
    if ctx.invoked_subcommand is not None:
        return 0
    if raw_root is None or out_root is None:
        raise UsageError("obsflow online needs --raw-root and --out-root (or use 'obsflow online status')")
    from obsflow.online.service import run_daemon

    run_daemon(
        raw_root=raw_root,
        out_root=out_root,
        flags_dir=flags_dir,
        locks_dir=locks_dir,
        projects=[p for p in projects.split(",") if p],
        poll_s=poll_s,
        lock_timeout_s=lock_timeout,
        retry_limit=retries,
        max_seconds=max_seconds,
        until_idle=until_idle,
    )
    return 0


@command.command("status")
@click.option("--out-root", type=click.Path(path_type=Path, file_okay=False), help="The daemon's output root.")
@json_option
@click.pass_context
def status(ctx: click.Context, out_root: Path | None, as_json: bool) -> int:
    """Show what the daemon is doing, the last scan filled per project and any lag."""
    from obsflow.online.daemon import read_status
    from obsflow.online.layout import OutputLayout

    root = out_root or ctx.obj.get("out_root")
    if root is None:
        raise UsageError("give --out-root")
    data = read_status(OutputLayout(Path(root)))
    if data is None:
        if as_json:
            emit_json({"running": False, "message": "the daemon never ran here"})
        else:
            click.echo(f"no online daemon has run on {root}")
        return 0
    from obsflow.lock import is_locked

    running = data.get("activity") != "stopped" and is_locked(OutputLayout(Path(root)).locks_dir, "obsflow-online")
    data["running"] = running
    if as_json:
        emit_json(data)
        return 0
    _print_status(data)
    return 0


def _ago(t: object) -> str:
    if not isinstance(t, (int, float)):
        return "never"
    return f"{time.time() - t:.0f} s ago"


def _print_status(data: dict[str, object]) -> None:
    state = "running" if data["running"] else "not running"
    click.echo(f"daemon: {state}, pid {data['pid']} on {data['host']}, {data['activity']}, last poll {_ago(data.get('last_poll'))}")
    click.echo(f"raw root {data['raw_root']} -> out root {data['out_root']}; active project: {data.get('active_project')}")
    projects = data.get("projects") or {}
    for name, info in projects.items():  # type: ignore[union-attr]
        click.echo(
            f"  {name}: last scan {info['last_scan']} ({info['last_timestamp']}), filled {_ago(info['last_filled_at'])},"
            f" {info['pending']} pending"
        )
    recent = data.get("recent") or []
    lags = [r["filled_at"] - r["finished_seen_at"] for r in recent if r.get("finished_seen_at")]  # type: ignore[union-attr]
    if lags:
        click.echo(f"  lag after scan end: last {lags[0]:.2f} s, worst of last {len(lags)}: {max(lags):.2f} s")
    for failure in data.get("failures") or []:  # type: ignore[union-attr]
        what = "SKIPPED" if failure["given_up"] else "retrying"
        click.echo(f"  {what}: {failure['project']} scan {failure['scan']}: {failure['last_error']}")
