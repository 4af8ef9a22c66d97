"""``obsflow online``: the online filler daemon, and ``obsflow online status``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.config import FillerConfig
from obsflow.errors import InputError, UsageError

EXAMPLES = """\b
Examples:
  obsflow online --config /etc/obsflow/filler.toml settings from its [filler] table
  obsflow online --raw-root /home/gbtdata --out-root /home/sdfits
  obsflow online --raw-root raw --out-root out --projects AGBT26A_001_01 --poll 0.2
  obsflow online status --out-root /home/sdfits
"""


@click.group("online", invoke_without_command=True, epilog=EXAMPLES)
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              default=lambda: os.environ.get("OBSFLOW_CONFIG"), show_default="$OBSFLOW_CONFIG, if set",
              help="Take the settings from this file's [filler] table; options given here win.")  # fmt: skip
@click.option("--raw-root", type=click.Path(path_type=Path, file_okay=False), help="Where the telescope writes raw projects.")
@click.option("--out-root", type=click.Path(path_type=Path, file_okay=False), help="Where SDFITS products go (/home/sdfits).")
@click.option("--flags", "flags_dir", type=click.Path(path_type=Path, file_okay=False), help="Flag-file folder [OUT/flags].")
@click.option("--locks", "locks_dir", type=click.Path(path_type=Path, file_okay=False), help="Lock-file folder [OUT/locks].")
@click.option("--projects", default=None, help="Comma-separated projects to follow (default: those observed lately).")
@click.option("--follow-hours", type=click.FloatRange(min=0), default=None,
              help="Without --projects: follow projects whose ScanLog.fits changed within this many hours; "
                   "0: every project under RAW-ROOT [24].")  # fmt: skip
@click.option("--forget-after-hours", type=click.FloatRange(min=0), default=None,
              help="Stop following a project with nothing left to fill whose ScanLog.fits has not changed "
                   "for this many hours (it is followed again when it changes; 0: at once) [6].")  # fmt: skip
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.01), default=None, help="Seconds between polls [1].")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=None, help="Seconds to wait for a project lock [60].")
@click.option("--retries", type=click.IntRange(min=1), default=None, help="Attempts before a failing scan is skipped [5].")
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (tests, demos).")
@click.option("--until-idle", is_flag=True, help="Stop when every finished scan is filled (catch-up run).")
@click.option("--flush", type=click.Choice(["deferred", "per-scan"]), default=None,
              help="When a fill's rows go to disk: 'deferred' reports the scan once written and flushes while "
                   "idle (a machine crash before that rolls the scan back, to be filled again); 'per-scan' "
                   "waits for the disk in each fill [deferred].")  # fmt: skip
@click.pass_context
def command(
    ctx: click.Context,
    config_path: Path | None,
    raw_root: Path | None,
    out_root: Path | None,
    flags_dir: Path | None,
    locks_dir: Path | None,
    projects: str | None,
    follow_hours: float | None,
    forget_after_hours: float | None,
    poll_s: float | None,
    lock_timeout: float | None,
    retries: int | None,
    max_seconds: float | None,
    until_idle: bool,
    flush: str | None,
) -> int:
    """Fill each scan into SDFITS seconds after the telescope finishes it.

    Follows ScanLog.fits of every project under RAW-ROOT observed in the last
    --follow-hours (or of --projects); at each SCAN FINISHED it
    appends that scan (and any it missed) to OUT-ROOT/<PROJ>/<PROJ>.raw.vegas/, keeping
    the GBTIDL index, flag files, sdfitsStatus.txt, a lock while writing and an undo
    journal so a crash never damages a file.  Runs until SIGTERM/SIGINT.
    """
    ctx.ensure_object(dict)
    filler, has_filler = _filler_settings(config_path)
    out_root = out_root or (Path(filler.out_root) if has_filler else None)
    ctx.obj["out_root"], ctx.obj["config_without_filler"] = out_root, config_path if config_path and not has_filler else None
    if ctx.invoked_subcommand is not None:
        return 0
    raw_root = raw_root or (Path(filler.raw_root) if has_filler else None)
    if raw_root is None or out_root is None:
        if config_path and not has_filler:  # never the built-in /home/gbtdata and /home/sdfits of a sync-only config
            raise UsageError(f"{config_path} has no [filler] table: add one (examples/gbt-filler.toml) or give "
                             "--raw-root and --out-root")  # fmt: skip
        raise UsageError("obsflow online needs --config (its [filler] table) or --raw-root and --out-root "
                         "(or use 'obsflow online status')")  # fmt: skip
    from obsflow.online.service import run_daemon

    run_daemon(
        raw_root=raw_root,
        out_root=out_root,
        flags_dir=flags_dir or _path_or_none(filler.flags_dir),
        locks_dir=locks_dir or _path_or_none(filler.locks_dir),
        projects=[p for p in projects.split(",") if p] if projects is not None else list(filler.projects),
        follow_hours=filler.follow_hours if follow_hours is None else follow_hours,
        forget_after_s=3600 * (filler.forget_after_hours if forget_after_hours is None else forget_after_hours),
        poll_s=filler.poll_seconds if poll_s is None else poll_s,
        lock_timeout_s=filler.lock_timeout_seconds if lock_timeout is None else lock_timeout,
        retry_limit=filler.retry_limit if retries is None else retries,
        max_seconds=max_seconds,
        until_idle=until_idle,
        flush_each_scan=(flush or filler.flush) == "per-scan",
    )
    return 0


def _filler_settings(config_path: Path | None) -> tuple[FillerConfig, bool]:
    """The config file's [filler] settings, and whether it has a [filler] table (the defaults without a file)."""
    if config_path is None:
        return FillerConfig(), False
    from obsflow.config import load_config

    config = load_config(config_path)
    return config.filler, config.has_filler


def _path_or_none(text: str | None) -> Path | None:
    return None if text is None else Path(text)


STATUS_EXAMPLES = """\b
Examples:
  obsflow online status --out-root /home/sdfits
  obsflow online --config /etc/obsflow/filler.toml status     the out_root of its [filler] table
  obsflow online status --out-root /home/sdfits --json
"""


@command.command("status", epilog=STATUS_EXAMPLES)
@click.option("--out-root", type=click.Path(path_type=Path, file_okay=False), help="The daemon's output root.")
@json_option
@click.pass_context
def status(ctx: click.Context, out_root: Path | None, as_json: bool) -> int:
    """Show what the daemon is doing, the last scan filled per project and any lag."""
    from obsflow.online.daemon import daemon_running, fill_not_ended_line, fills_not_ended, status_unsaved_s
    from obsflow.online.layout import OutputLayout
    from obsflow.online.missing import recheck_missing_banks
    from obsflow.online.status_file import StatusDamaged, read_status

    root = out_root or ctx.obj.get("out_root")
    if root is None:
        without = ctx.obj.get("config_without_filler")
        if without:
            raise UsageError(f"{without} has no [filler] table: give --out-root")
        raise UsageError("give --out-root, or a config with a [filler] table: obsflow online -c FILE status")
    if not Path(root).is_dir():  # a typo, or a disk not mounted: not "no daemon has run here"
        raise InputError("output root not found", root)
    layout = OutputLayout(Path(root))
    try:
        data = read_status(layout)
    except StatusDamaged as err:
        raise StatusDamaged(f"{err.problem}; a daemon starting here sets it aside", layout.status_path) from err
    if data is None:  # an offline fill may still have left a fill not ended
        fills = fills_not_ended(layout)
        if as_json:
            emit_json({"running": False, "message": "the daemon never ran here", "fills_not_ended": fills})
        else:
            click.echo(f"no online daemon has run on {root}")
            for entry in fills:
                click.echo(f"  {fill_not_ended_line(entry, running=False)}")
        return 0
    data["running"], data["checked"] = daemon_running(layout, data)
    # the daemon drops an entry once it sees the bank filled; while none runs, the files say it first
    banks = recheck_missing_banks(layout, data.get("missing_banks") or [])  # type: ignore[arg-type]
    data["missing_banks"], data["missing_banks_filled_since"] = banks.still_missing, banks.filled_since
    data["unsaved_s"] = status_unsaved_s(data, bool(data["running"]))
    data["fills_not_ended"] = fills_not_ended(layout)
    if as_json:
        emit_json(data)
        return 0
    _print_status(data)
    return 0


def _ago(t: object) -> str:
    from obsflow.online.daemon import seconds_ago

    return seconds_ago(t) or "never"


def _active(project: object) -> str:
    return f"active project: {project}" if project else "no active project"


def _print_status(data: dict[str, object]) -> None:
    from obsflow.online.daemon import NEVER_FINISHED, fill_lag_s, fill_not_ended_line, later_scan, not_present_line

    if not data.get("checked", True):
        state = f"running on host {data.get('host')} (cannot check from here)"
    else:
        state = "running" if data["running"] else "not running"
    # every field of the status is optional (older versions wrote fewer; a hand-made one may hold few)
    pid, host, activity = data.get("pid", "?"), data.get("host", "?"), data.get("activity", "?")
    click.echo(f"daemon: {state}, pid {pid} on {host}, {activity}, last poll {_ago(data.get('last_poll'))}")
    unsaved_s = data["unsaved_s"]  # as status judged it
    if isinstance(unsaved_s, (int, float)):
        click.echo(f"  WARNING: status not saved for {unsaved_s:.0f} s: the daemon cannot write under {data.get('out_root')}"
                   " (read-only or full disk?) or is hung; what follows may be old, see the daemon's log")  # fmt: skip
    click.echo(f"raw root {data.get('raw_root', '?')} -> out root {data.get('out_root', '?')}; "
               f"{_active(data.get('active_project'))}")
    for entry in data.get("not_present") or []:  # type: ignore[union-attr]
        click.echo(f"  NOT PRESENT: {not_present_line(entry)}, since {_ago(entry.get('since'))}")
    projects = data.get("projects") or {}
    for name, info in projects.items():  # type: ignore[union-attr]
        click.echo(
            f"  {name}: last scan {info['last_scan']} ({info['last_timestamp']}), filled {_ago(info['last_filled_at'])},"
            f" {info['pending']} pending"
        )
    recent = data.get("recent") or []
    lags = [lag for r in recent if (lag := fill_lag_s(r)) is not None]  # type: ignore[arg-type]
    if lags:
        click.echo(f"  lag after scan end: last {lags[0]:.2f} s, worst of last {len(lags)}: {max(lags):.2f} s")
    for failure in data.get("failures") or []:  # type: ignore[union-attr]
        what = "SKIPPED" if failure["given_up"] else "retrying"
        click.echo(f"  {what}: {failure['project']} scan {failure['scan']}: {failure['last_error']}")
    for problem in data.get("project_failures") or []:  # type: ignore[union-attr]
        click.echo(f"  STALLED: {problem['project']}, {problem['pending']} scan(s) waiting: {problem['last_error']}")
    for entry in data.get("missing_banks") or []:  # type: ignore[union-attr]
        click.echo(f"  BANK MISSING: {entry['project']} scan {entry['scan']} ({entry['timestamp']}): {entry['note']}; "
                   f"if the file comes: obsflow fill {data['raw_root']}/{entry['project']} {data['out_root']} "
                   f"--scans {entry['scan']}")  # fmt: skip
    for entry in data.get("fills_not_ended") or []:  # type: ignore[union-attr]
        click.echo(f"  {fill_not_ended_line(entry, bool(data['running']))}")
    for entry in data.get("never_finished") or []:  # type: ignore[union-attr]
        click.echo(f"  NEVER FINISHED: {entry['project']} scan {entry['scan']} ({entry['timestamp']}): {NEVER_FINISHED} "
                   f"({later_scan(entry)} started after it)")  # fmt: skip
