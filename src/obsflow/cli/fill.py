"""``obsflow fill``: the offline filler, like GBT's ``sdfits`` program."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from obsflow.cli._options import dry_run_option, emit_json, is_terminal, json_option
from obsflow.errors import EXIT_CANNOT_RUN, EXIT_FINDINGS, InputError, LockError, OutputError, UsageError

if TYPE_CHECKING:
    from obsflow.online import raw
    from obsflow.online.fill import MissingBank, ScanFill
    from obsflow.online.layout import OutputLayout

EXAMPLES = """\b
Examples:
  obsflow fill /home/gbtdata/AGBT26A_001_01                 # every finished scan -> ./
  obsflow fill raw/AGBT26A_001_01 /home/sdfits --scans 1,3,5-9
  obsflow fill raw/AGBT26A_001_01 out --json
  obsflow fill raw/AGBT26A_001_01 /home/sdfits -n            # which scans it would fill, and why not
"""


@dataclass(frozen=True)
class ScanList:
    """The scans ``--scans`` chose, kept as inclusive (first, last) ranges: ``1-300000000`` costs
    two numbers, not a set of 300 million."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, scan: object) -> bool:
        return isinstance(scan, int) and any(first <= scan <= last for first, last in self.ranges)

    def missing(self, present: Iterable[int]) -> str:
        """The chosen scans not in ``present``, as ranges ('4-6,8,10-1000'); '' if none."""
        numbers = sorted(set(present))
        gaps: list[str] = []
        for first, last in self.ranges:
            start = first
            for scan in (n for n in numbers if first <= n <= last):
                if scan > start:
                    gaps.append(_range_text(start, scan - 1))
                start = scan + 1
            if start <= last:
                gaps.append(_range_text(start, last))
        return ",".join(gaps)


def _range_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _scan_number(text: str, item: str) -> int:
    # ASCII digits only: int() would also take '1_0' and other scripts' digits
    if not text or not (text.isascii() and text.isdigit()):
        raise UsageError(f"--scans: {item!r} is not a scan number or range like 5-9")
    return int(text)


def parse_scan_list(text: str) -> ScanList:
    """``1,3,5-9`` -> those scans (GBT sdfits ``-scans`` syntax: no spaces, ranges inclusive)."""
    ranges = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        low, dash, high = item.partition("-")
        first = _scan_number(low, item)
        last = _scan_number(high, item) if dash else first
        if last < first:
            raise UsageError(f"--scans: range {item!r} runs backwards")
        ranges.append((first, last))
    if not ranges:
        raise UsageError(f"--scans: {text!r} names no scan (give e.g. 1,3,5-9, or leave --scans out for all)")
    return ScanList(tuple(ranges))


@click.command("fill", epilog=EXAMPLES)
@click.argument("raw_project", type=click.Path(path_type=Path, file_okay=False))
@click.argument("output_root", type=click.Path(path_type=Path, file_okay=False), default=".", required=False)
@click.option("--backends", default="vegas", show_default=True, help="Backends to fill (only vegas is supported).")
@click.option("--scans", "scan_list", default=None,
              help="Scans to fill, e.g. 1,3,5-9 (default: every finished scan; one the log never finished: only if named).")
@click.option("--flags", "flags_dir", type=click.Path(path_type=Path, file_okay=False), help="Flag-file folder [OUT/flags].")
@click.option("--locks", "locks_dir", type=click.Path(path_type=Path, file_okay=False), help="Lock-file folder [OUT/locks].")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for the project lock.")
@click.option("--no-spurs", is_flag=True, help="Do not write VEGAS spur rows into the flag files.")
@dry_run_option
@json_option
def command(
    raw_project: Path,
    output_root: Path,
    backends: str,
    scan_list: str | None,
    flags_dir: Path | None,
    locks_dir: Path | None,
    lock_timeout: float,
    no_spurs: bool,
    dry_run: bool,
    as_json: bool,
) -> int:
    """Fill scans of a raw GBT project into SDFITS files with GBTIDL index and flag files.

    Writes OUTPUT_ROOT/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.<BANK>.fits (one per
    VEGAS bank), appending to files that exist.  A scan already in a file is skipped
    with a note, never written twice.  A bank whose raw file is missing is left out (named)
    and the scan's other banks are filled; fill the scan again if the file comes.  Exit 1 if
    any chosen scan or bank could not be filled, 2 if the project's lock stayed held for
    --lock-timeout (the scans not tried are named).
    """
    from obsflow.online.layout import OutputLayout

    _check_backends(backends)
    scans = _chosen_scans(raw_project, scan_list)
    layout = OutputLayout(output_root, flags_dir, locks_dir)
    project = raw_project.name.split(":")[0]
    named = scan_list is not None
    if dry_run:
        return _dry_run(scans, layout, project, as_json, named=named)
    _make_output_root(layout)
    run = _fill_scans(scans, layout, project, named, lock_timeout, write_spurs=not no_spurs, quiet=as_json)
    summary = _summary(project, layout.product_dir(project), run.results, run.problems)
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)
    return run.exit_code


def _check_backends(backends: str) -> None:
    """UsageError if ``--backends`` names one other than VEGAS, the only one this filler can read."""
    wanted_backends = {b.strip().lower() for b in backends.split(",") if b.strip()}
    if wanted_backends - {"vegas"}:
        raise UsageError(f"--backends: only 'vegas' can be filled, not {', '.join(sorted(wanted_backends - {'vegas'}))}")


def _make_output_root(layout: OutputLayout) -> None:
    """Create the output root, OutputError (one line) if it cannot be."""
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder: {err.strerror}", layout.root) from err


@dataclass
class _FillRun:
    """What a fill did so far: the scans filled (or skipped as already there) and the problems, one per scan."""

    results: list[ScanFill] = field(default_factory=list)
    problems: list[dict[str, object]] = field(default_factory=list)
    locked_out: int | None = None  # the scan whose fill could not take the project's lock

    def fail(self, scan: raw.Scan, error: str) -> None:
        self.problems.append({"scan": scan.number, "timestamp": scan.timestamp, "error": error})

    @property
    def exit_code(self) -> int:
        if self.locked_out is not None:
            return EXIT_CANNOT_RUN  # could not run, as a lock timeout is everywhere (README, exit codes)
        left_out_banks = any(r.missing_banks for r in self.results)  # a bank left undone is a finding too
        return EXIT_FINDINGS if self.problems or left_out_banks else 0


def _fill_scans(
    scans: list[raw.Scan],
    layout: OutputLayout,
    project: str,
    named: bool,
    lock_timeout_s: float,
    write_spurs: bool,
    quiet: bool,
) -> _FillRun:
    """Fill ``scans`` in order, each on its own: one that fails is noted and the others go on."""
    run = _FillRun()
    left_out = _left_out(scans, layout, project, named=named)
    progress = _progress(len(scans), quiet=quiet)
    try:
        for scan in scans:
            progress.describe(f"scan {scan.number}")
            _fill_one(run, scan, left_out.get(scan.key), layout, project, lock_timeout_s, write_spurs)
            progress.advance()
    finally:
        progress.close()
    return run


def _fill_one(
    run: _FillRun,
    scan: raw.Scan,
    left_out_why: str | None,
    layout: OutputLayout,
    project: str,
    lock_timeout_s: float,
    write_spurs: bool,
) -> None:
    """Fill ``scan`` into ``run``, or note there why it was not (left out, lock held, bad input)."""
    from obsflow.online.fill import fill_scan

    if left_out_why is not None:
        run.fail(scan, left_out_why)
    elif run.locked_out is not None:  # waiting again for every scan would multiply --lock-timeout
        run.fail(scan, f"not tried: the project's lock is held (see scan {run.locked_out})")
    else:
        try:
            # The banks whose files are there are filled; one that never came is named, not the whole scan lost.
            run.results.append(fill_scan(scan, layout, lock_timeout_s=lock_timeout_s, write_spurs=write_spurs,
                                         project=project, missing_banks_ok=True))  # fmt: skip
        except (InputError, LockError) as err:  # this scan only: go on with the others
            run.fail(scan, err.one_line())
            if isinstance(err, LockError):
                run.locked_out = scan.number


def _left_out(scans: list[raw.Scan], layout: OutputLayout, project: str, named: bool) -> dict[tuple[int, str], str]:
    """``{scan key: why}`` of the scans this fill leaves out (see :func:`_not_filled`)."""
    from obsflow.online.fill import scans_in_files

    filled_before = scans_in_files(layout, project) if any(s.stopped for s in scans) else set()
    return {scan.key: why for scan in scans
            if (why := _not_filled(scan, named, in_files=scan.key in filled_before)) is not None}  # fmt: skip


def _not_filled(scan: raw.Scan, named: bool, in_files: bool = False) -> str | None:
    """Why ``scan`` is left out of this fill, or None.  A stopped scan (the log never finished it and a
    later scan started) is filled with what its files hold when ``--scans`` names it, as the status's
    NEVER FINISHED line advises; left out of a fill of every scan, as the daemon leaves it, unless it
    is ``in_files`` already (filled by hand before: the fill skips it)."""
    if scan.is_finished or (scan.stopped and (named or in_files)):
        return None
    if scan.stopped:
        return "the scan log never finished it (a later scan started): name it in --scans to fill what its files hold"
    if named:
        return "scan has not finished (no later scan in its log or another project's: it may be under way)"
    return "scan has not finished"


def _dry_run(scans: list[raw.Scan], layout: OutputLayout, project: str, as_json: bool, named: bool) -> int:
    """What the fill would do, scan by scan: every raw scan read and converted, nothing written, no lock."""
    from obsflow.online.fill import PlannedFill, plan_fill

    left_out = _left_out(scans, layout, project, named)
    kept = iter(plan_fill([scan for scan in scans if scan.key not in left_out], layout, project, missing_banks_ok=True))
    planned = [PlannedFill(scan.number, scan.timestamp, "fail", error=left_out[scan.key]) if scan.key in left_out
               else next(kept) for scan in scans]  # fmt: skip
    summary = {
        "dry_run": True,
        "project": project,
        "output": str(layout.product_dir(project)),
        "would_fill": [{"scan": p.scan, "timestamp": p.timestamp, "banks": list(p.banks),
                        "missing_banks": [m.bank for m in p.missing_banks]} for p in planned if p.action == "fill"],
        "missing_banks": [_missing_entry(p.scan, p.timestamp, p.missing_banks, p.banks)
                          for p in planned if p.missing_banks],
        "skipped": [{"scan": p.scan, "timestamp": p.timestamp, "note": "already in the SDFITS files"}
                    for p in planned if p.action == "skip"],
        "failed": [{"scan": p.scan, "timestamp": p.timestamp, "error": p.error} for p in planned if p.action == "fail"],
    }  # fmt: skip
    if as_json:
        emit_json(summary)
    else:
        for item in summary["would_fill"]:
            click.echo(f"would fill scan {item['scan']} ({item['timestamp']}), banks {','.join(item['banks'])}")
        _print_problems(summary)
        partial = len(summary["missing_banks"])
        click.echo(f"{project}: would fill {len(summary['would_fill'])} scans, skip {len(summary['skipped'])}, "
                   f"fail {len(summary['failed'])}" + (f", {partial} without some banks" if partial else "")
                   + f" -> {summary['output']} (dry run: nothing written)")  # fmt: skip
    return EXIT_FINDINGS if summary["failed"] or summary["missing_banks"] else 0


def _chosen_scans(raw_project: Path, scan_list: str | None) -> list[raw.Scan]:
    """The scans of the project's log that ``--scans`` chose (all without it); UsageError for one not in the log."""
    from obsflow.online import raw

    wanted = parse_scan_list(scan_list) if scan_list is not None else None
    # The fill reads each GO file itself: read up front, one cut GO file would fail every scan.
    scans = [s for s in raw.read_project(raw_project, with_go=False) if wanted is None or s.number in wanted]
    if wanted is not None:
        missing = wanted.missing(s.number for s in scans)
        if missing:
            raise UsageError(f"--scans: not in the scan log: {missing}", raw_project)
    # a scan the log never finished is over too when the telescope went on with another project
    return [replace(s, stopped=True) if raw.stopped_by_another_project(s) else s for s in scans]


def _summary(project: str, output: Path, results: list[ScanFill], problems: list[dict[str, object]]) -> dict[str, object]:
    """What the fill did, as printed with --json."""
    return {
        "project": project,
        "output": str(output),
        "filled": [{"scan": r.scan, "timestamp": r.timestamp, "rows": r.rows, "seconds": round(r.seconds, 3),
                    "banks": [b.bank for b in r.banks if not b.skipped],
                    "missing_banks": [m.bank for m in r.missing_banks]} for r in results if not r.skipped],
        "skipped": [{"scan": r.scan, "timestamp": r.timestamp, "note": "already in the SDFITS files"}
                    for r in results if r.skipped],
        "failed": problems,
        "missing_banks": [_missing_entry(r.scan, r.timestamp, r.missing_banks, [b.bank for b in r.banks])
                          for r in results if r.missing_banks],
    }  # fmt: skip


def _missing_entry(
    scan: int, timestamp: str, missing: Sequence[MissingBank], filled: Sequence[str]
) -> dict[str, object]:
    """A scan filled without the banks whose raw file is missing: which, where, and the line printed for it."""
    from obsflow.online.fill import missing_banks_text

    return {"scan": scan, "timestamp": timestamp, "banks": [m.bank for m in missing],
            "files": [str(m.raw_path) for m in missing], "error": missing_banks_text(missing, filled)}  # fmt: skip


def _print_problems(summary: dict) -> None:  # type: ignore[type-arg]
    for item in summary["skipped"]:
        click.echo(f"note: scan {item['scan']} ({item['timestamp']}) is already in the SDFITS files: skipped", err=True)
    for error, scans in _same_error_runs(summary["failed"]):
        label = f"scan {scans[0]}" if len(scans) == 1 else f"scans {_ranges_text(scans)}"
        click.echo(f"obsflow: error: {label}: {error}", err=True)
    for item in summary["missing_banks"]:
        click.echo(f"obsflow: error: scan {item['scan']}: {item['error']}", err=True)


def _print_summary(summary: dict) -> None:  # type: ignore[type-arg]
    _print_problems(summary)
    rows = sum(f["rows"] for f in summary["filled"])
    partial = len(summary["missing_banks"])
    click.echo(
        f"{summary['project']}: filled {_scans(len(summary['filled']))} ({rows} rows), skipped {len(summary['skipped'])},"
        f" failed {len(summary['failed'])}" + (f", {partial} without some banks" if partial else "")
        + f" -> {summary['output']}"
    )



def _scans(count: int) -> str:
    return f"{count} scan{'' if count == 1 else 's'}"

def _same_error_runs(failed: list[dict]) -> list[tuple[str, list[int]]]:  # type: ignore[type-arg]
    """Consecutive failures with the same error, as one (error, scans) each: a held lock is one line, not 100."""
    runs: list[tuple[str, list[int]]] = []
    for item in failed:
        if runs and runs[-1][0] == item["error"]:
            runs[-1][1].append(item["scan"])
        else:
            runs.append((item["error"], [item["scan"]]))
    return runs


def _ranges_text(numbers: list[int]) -> str:
    """``[2, 3, 4, 7]`` as '2-4,7'."""
    parts: list[str] = []
    start = previous = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == previous + 1:
            previous = n
            continue
        parts.append(_range_text(start, previous))
        if n is not None:
            start = previous = n
    return ",".join(parts)


class _progress:
    """A rich progress bar on a terminal; nothing in cron or with --json."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.bar = None
        if not quiet and is_terminal() and total > 1:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task("filling", total=total)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"filling {text}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
