"""``obsflow sync``: copy the last N days from the instruments to the archives, hop by hop."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from obsflow.cli._options import (
    collect_garbage_rarely,
    config_option,
    dry_run_option,
    emit_json,
    is_terminal,
    json_option,
)
from obsflow.config import MAX_WINDOW_DAYS, load_config
from obsflow.transfer.listing import escape_controls
from obsflow.transfer.remote import remote_targets, shared_connections

if TYPE_CHECKING:
    from obsflow.transfer.report import HopOutcome, SyncReport

__all__ = ["command"]

EPILOG = """\b
Examples:
  obsflow sync                         the last window_days (30) nights, every hop
  obsflow sync -d 20160907             one night
  obsflow sync -i sha --days 45        one instrument, a longer window
  obsflow sync --hop suth:cape -n      what the second hop would copy
\b
Exit status: 0 all copied, 1 something left for later (listed), 2 could not run.
"""

UNDONE = (("in_flight", "still being written"), ("locked", "locked"), ("conflicts", "conflict"))


@click.command("sync", epilog=EPILOG)
@config_option
@click.option("-d", "--date", "date_text", metavar="DATE", help="One night, YYYYMMDD or YYYY-MM-DD.")
@click.option("-i", "--instrument", metavar="NAME", help="Only this instrument.")
@click.option("--days", type=click.IntRange(1, MAX_WINDOW_DAYS), help="Window length in nights (default: window_days).")
@click.option("--hop", metavar="FROM:TO", help="Only this hop, e.g. instruments:suth.")
@dry_run_option
@json_option
def command(
    config_path: Path, date_text: str | None, instrument: str | None, days: int | None, hop: str | None,
    dry_run: bool, as_json: bool,
) -> int:  # fmt: skip
    """Copy what is missing from the instruments to the site archive, then on to the remote archive.

    For each hop in order and each instrument: list the dated folders of the window on
    both sides (one round trip each), copy what is missing with rsync, record every
    file's xxh128 in the catalog.  Files still being written, locked by the filler, or
    differing at the destination are left alone and listed.  A source whose layout is
    "*" (the filler's SDFITS products) is listed whole and its files modified within the
    window are taken.
    """
    collect_garbage_rarely()
    config = load_config(config_path)
    # The ssh handshakes start now and run while the rest of the sync machinery is imported.
    with shared_connections(config, remote_targets(config, hop, instrument)) as connections:
        from obsflow.transfer.plan import parse_date
        from obsflow.transfer.sync import SyncRequest, run_sync

        # `is not None`: -d "$NIGHT" with NIGHT unset is a mistake, not a request for the whole window
        request = SyncRequest(
            date=parse_date(date_text) if date_text is not None else None, days=days, instrument=instrument, hop=hop,
            dry_run=dry_run,
        )  # fmt: skip
        fancy = is_terminal() and not as_json
        progress = _RichProgress() if fancy else (None if as_json else _LineProgress())
        echo_outcome = None if as_json or fancy else _print_outcome
        report = run_sync(config, request, progress=progress, on_outcome=echo_outcome, shell=connections)
    if as_json:
        emit_json(report.to_json())
        return report.exit_code
    for warning in report.warnings:
        click.echo(f"obsflow: warning: {warning}", err=True)
    if fancy:
        for outcome in report.outcomes:
            _print_details(outcome)
        _rich_table(report)
    else:
        _plain_summary(report)
    return report.exit_code


def _print_outcome(outcome: HopOutcome) -> None:
    """One plain line per hop and instrument, as it finishes, its undone files below (cron mail: no table
    follows to say the counts again)."""
    c = outcome.counts()
    if outcome.failure:
        click.echo(escape_controls(f"{outcome.hop} {outcome.instrument}: FAILED: {outcome.failure}"))  # a name in it
    # a hop that could not start (host unreachable) counted nothing; one that failed after planning did
    if not outcome.failure or any(c.values()):
        verb = "would copy" if outcome.dry_run else "copied"
        grown = f" of which {len(outcome.updated)} grown, older copies kept" if outcome.updated else ""
        click.echo(
            f"{outcome.hop} {outcome.instrument}: {verb} {c['copied']} ({_size(c['bytes'])}){grown}, "
            f"already there {c['present']}, "
            f"still being written {c['in_flight']}, locked {c['locked']}, conflicts {c['conflicts']}, "
            f"refused {c['refused']}, errors {c['errors']}"
        )
    _print_details(outcome)


def _print_details(outcome: HopOutcome) -> None:
    def say(line: str) -> None:  # a name may hold a newline or ESC: one name, one line, a quiet terminal
        click.echo(escape_controls(line))

    if outcome.failure and is_terminal():
        say(f"{outcome.hop} {outcome.instrument}: FAILED: {outcome.failure}")
    for key, label in UNDONE:
        for path in getattr(outcome, key):
            say(f"  {label}: {outcome.source}/{path}")
    for path in outcome.updated:
        say(f"  grown, replaced (older copy in .obsflow-superseded/): {outcome.dest}/{path}")
    verb = "would remove" if outcome.dry_run else "removed"
    for version in outcome.pruned:
        say(f"  {verb} old superseded copies: {outcome.dest}/.obsflow-superseded/{version}/")
    for refusal in outcome.refused:
        say(f"  refused: {outcome.source}/{refusal.path}: {refusal.reason}")
    for error in outcome.errors:
        say(f"  error: {error}")


_COLUMNS = ("copied", "present", "in_flight", "locked", "conflicts", "refused", "errors")
_HEADERS = ("hop", "instrument", "copied", "already there", "still being written", "locked", "conflicts",
            "refused", "errors", "size", "status")  # fmt: skip


def _headers(report: SyncReport) -> tuple[str, ...]:
    """The table's headers; a dry run copied nothing: its first count is what it would copy."""
    return ("hop", "instrument", "would copy", *_HEADERS[3:]) if _is_dry_run(report) else _HEADERS


def _title(report: SyncReport) -> str:
    dry = " (dry run: nothing copied)" if _is_dry_run(report) else ""
    return f"sync {report.dates[0]} .. {report.dates[1]}{dry}"


def _is_dry_run(report: SyncReport) -> bool:
    return any(o.dry_run for o in report.outcomes)


def _rows(report: SyncReport) -> list[list[str]]:
    rows = []
    for o in report.outcomes:
        c = o.counts()
        rows.append([o.hop, o.instrument, *(str(c[k]) for k in _COLUMNS), _size(c["bytes"]), o.status])
    return rows


def _plain_summary(report: SyncReport) -> None:
    """The last line in cron: the window and how many hops and instruments ended how (their lines gave the counts)."""
    ended = Counter(o.status for o in report.outcomes)
    tally = ", ".join(f"{ended[status]} {status}" for status in ("ok", "incomplete", "failed") if ended[status])
    click.echo(f"{_title(report)}: {tally or 'nothing to sync'}")


def _rich_table(report: SyncReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_title(report))
    for i, header in enumerate(_headers(report)):
        table.add_column(header, justify="left" if i < 2 or header == "status" else "right")
    style = {"ok": "green", "incomplete": "yellow", "failed": "red"}
    for row in _rows(report):
        table.add_row(*row[:-1], f"[{style[row[-1]]}]{row[-1]}[/]")
    Console(file=sys.stdout).print(table)


def _size(size_bytes: int) -> str:
    """``3.0 MB``: rich's decimal units, as the progress bar and the status page show sizes."""
    from rich.filesize import decimal

    return decimal(size_bytes)


class _RichProgress:
    """One rich progress bar per hop and instrument: files, bytes, rate, ETA (on stderr)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,  # fmt: skip
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[files]}"), TimeRemainingColumn(), console=Console(stderr=True),
        )  # fmt: skip
        self._task: Any = None
        self._files = (0, 0)

    def start(self, label: str, files: int, size_bytes: int) -> None:
        self._files = (0, files)
        self._progress.start()
        self._task = self._progress.add_task(label, total=size_bytes, files=f"0/{files} files")

    def advance(self, size_bytes: int) -> None:
        done, total = self._files
        self._files = (done + 1, total)
        self._progress.update(self._task, advance=size_bytes, files=f"{done + 1}/{total} files")

    def stop(self) -> None:
        self._progress.stop()


class _LineProgress:
    """Plain progress for cron: a start line, then at most one line a minute."""

    def __init__(self, every_s: float = 60.0) -> None:
        self._every = every_s
        self._label, self._done, self._total, self._bytes, self._next = "", 0, 0, 0, 0.0

    def start(self, label: str, files: int, size_bytes: int) -> None:
        self._label, self._done, self._total, self._bytes = label, 0, files, 0
        self._next = time.monotonic() + self._every
        click.echo(f"{label}: copying {files} files ({_size(size_bytes)})")

    def advance(self, size_bytes: int) -> None:
        self._done += 1
        self._bytes += size_bytes
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every
            click.echo(f"{self._label}: {self._done}/{self._total} files, {_size(self._bytes)}")

    def stop(self) -> None:
        pass
