"""Fill one raw scan into a project's SDFITS products, crash-safely; shared by ``fill`` and the daemon.

For each VEGAS bank the scan used: the bank's SDFITS file grows by the scan's
rows (never rewritten), its GBTIDL index and the combined index grow by the same
rows, its flag file exists (linked beside the FITS file) with the scan's VEGAS
spur rows, and ``sdfitsStatus.txt`` names the new last INDEX.  A bank already
holding the scan is skipped, so a bank whose raw file came late (left out of an
earlier fill that was allowed to leave it out) is added later without repeating
the others.

Order of work, under the project's lock:
  1. roll back any fill a crash interrupted (the undo journal);
  2. read and convert the whole scan first: a bad raw file fails here, before
     any output file is touched;
  3. check the indexes agree with the FITS files (refuse, changing nothing, if not; a lost
     combined index is rebuilt from the bank files in step 4);
     journal every file's old length and the bytes to be overwritten; fsync;
  4. append FITS rows (data, fsync, then NAXIS2; the index rows are formatted meanwhile), then
     index rows, then flags;
  5. commit (delete the journal); on any error, roll back instead.
With ``flush=False`` step 4 does not wait for the disk and step 5 marks the journal written
instead: the flush and the commit come later (see :mod:`obsflow.online.journal`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from obsflow.errors import InputError, IntegrityError, ObsflowError, OutputError
from obsflow.online import raw
from obsflow.online.events import LoggedScan, ScanKey
from obsflow.online.journal import FileUndo, Journal, boot_id, undo_for
from obsflow.online.layout import OutputLayout
from obsflow.online.rows import scan_header, scan_rows
from obsflow.sdfits import flag, index, index_fits, status, writer

__all__ = [
    "BankFill", "MissingBank", "PlannedFill", "ScanFill", "fill_scan", "filled_scans", "logged_scans",
    "missing_banks_text", "plan_fill", "scans_in_files", "scans_per_bank", "scans_per_bank_held",
]  # fmt: skip

log = logging.getLogger(__name__)

INDEX_HEADER_BYTES = 4096  # the whole [header] section of an index (8 lines of 256 characters)
BACKEND = "vegas"


@dataclass(frozen=True)
class BankFill:
    """What one bank file got from one scan."""

    bank: str
    fits_path: Path
    rows: int
    first_row: int
    skipped: bool = False


@dataclass(frozen=True)
class MissingBank:
    """A VEGAS bank the scan log names whose raw file is not there (VEGAS never wrote it, or not yet)."""

    bank: str
    raw_path: Path


def missing_banks_text(missing: Sequence[MissingBank], filled: Sequence[str] = ()) -> str:
    """One line naming the banks left out and their raw files: what, then where."""
    letters = ",".join(m.bank for m in missing)
    what = f"VEGAS bank {letters} not filled" if len(missing) == 1 else f"VEGAS banks {letters} not filled"
    if filled:
        what += f" ({','.join(filled)} {'was' if len(filled) == 1 else 'were'})"
    files = ", ".join(str(m.raw_path) for m in missing)
    return f"{what}: raw file{'s' if len(missing) != 1 else ''} missing ({files})"


@dataclass(frozen=True)
class ScanFill:
    """What filling one scan did; ``missing_banks``: banks left out because their raw file is not there."""

    project: str
    scan: int
    timestamp: str
    banks: tuple[BankFill, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    missing_banks: tuple[MissingBank, ...] = ()

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.banks if not b.skipped)

    @property
    def skipped(self) -> bool:
        """True when every bank already held this scan (nothing written)."""
        return all(b.skipped for b in self.banks)


def logged_scans(project_dir: Path) -> list[LoggedScan]:
    """The scan log of one raw project as the event source needs it (no device files read), with each scan's end."""
    return [
        LoggedScan(
            ScanKey(s.number, s.timestamp),
            s.is_finished,
            tuple(b.lower() for b in s.backends),
            None if s.finished_at is None else s.finished_at.timestamp(),
        )
        for s in raw.read_project(project_dir, with_go=False)
    ]


def filled_scans(layout: OutputLayout, project: str, lock_timeout_s: float = 60.0) -> set[ScanKey]:
    """Scans already in any of the project's bank files (the state survives restarts: it is the files).

    Read under the project's lock: a fill running in another process (an offline ``obsflow
    fill``) finishes first, and only then is an interrupted fill's journal rolled back.
    """
    return set().union(*scans_per_bank_held(layout, project, lock_timeout_s).values())


def scans_per_bank_held(layout: OutputLayout, project: str, lock_timeout_s: float = 60.0) -> dict[str, set[ScanKey]]:
    """Bank letter -> the scans in that bank's SDFITS file, read under the project's lock as :func:`filled_scans`."""
    with layout.project_held(project, lock_timeout_s, "read which scans are filled"):
        return scans_per_bank(layout, project)


def scans_in_files(layout: OutputLayout, project: str) -> set[ScanKey]:
    """Scans in the project's bank files now, read without its lock (a fill under way may add one)."""
    return set().union(*scans_per_bank(layout, project).values())


@dataclass(frozen=True)
class PlannedFill:
    """What a fill would do with one scan: ``fill`` (its banks), ``skip`` (already in the files) or ``fail``."""

    scan: int
    timestamp: str
    action: str
    banks: tuple[str, ...] = ()
    error: str = ""
    missing_banks: tuple[MissingBank, ...] = ()


def plan_fill(
    scans: Sequence[raw.Scan], layout: OutputLayout, project: str, missing_banks_ok: bool = False
) -> list[PlannedFill]:
    """What :func:`fill_scan` would do with each scan, changing nothing and taking no lock: each
    raw scan is read and converted as a fill would (bad raw data shows here), nothing is written."""
    in_bank = scans_per_bank(layout, project)
    planned = []
    for scan in scans:
        key = ScanKey(scan.number, scan.timestamp)
        if not scan.is_over:
            planned.append(PlannedFill(scan.number, scan.timestamp, "fail", error="scan has not finished"))
        elif scan.banks and all(key in in_bank.get(bank, ()) for bank in scan.banks):
            planned.append(PlannedFill(scan.number, scan.timestamp, "skip"))
        else:  # some bank lacks it: a new scan, or one filled without a bank whose file may have come since
            try:
                converted, missing = _convert(scan, missing_banks_ok)
            except InputError as err:
                planned.append(PlannedFill(scan.number, scan.timestamp, "fail", error=err.one_line()))
                continue
            banks = tuple(bank for bank in converted if key not in in_bank.get(bank, ()))
            planned.append(PlannedFill(scan.number, scan.timestamp, "fill" if banks else "skip", banks, "", missing))
    return planned


def scans_per_bank(
    layout: OutputLayout, project: str, banks: Collection[str] | None = None
) -> dict[str, set[ScanKey]]:
    """Bank letter -> the scans in that bank's SDFITS file now (read without the project's lock);
    ``banks``: only the files of those banks (each file read costs a pass over its rows)."""
    files = {path.stem.rsplit(".", 1)[-1]: path for path in layout.bank_files(project, BACKEND)}
    return {bank: {ScanKey(int(s), str(t)) for s, t in writer.scans_in_file(path)}
            for bank, path in files.items() if banks is None or bank in banks}  # fmt: skip


Converted = dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]  # bank -> (SDFITS row columns, header keywords)


def _convert(scan: raw.Scan, missing_banks_ok: bool = False) -> tuple[Converted, tuple[MissingBank, ...]]:
    """Every bank's rows and header, and the banks left out: all reading and arithmetic, no writing.

    A bank file that is not there fails the scan, unless ``missing_banks_ok`` and another bank's is
    there: then that bank is left out.  A bank file that is there but cut or malformed always fails it.
    """
    raw.require_backend(scan)
    banks = scan.banks
    if not banks:
        raise InputError(f"scan {scan.number} has no VEGAS bank files", scan.project_dir / raw.SCANLOG)
    missing = _missing_banks(scan)
    if missing and (not missing_banks_ok or len(missing) == len(banks)):
        raise InputError("file named in the scan log is missing", missing[0].raw_path)  # the caller names the scan
    left_out = {m.bank for m in missing}
    try:
        converted = {bank: (scan_rows(scan, bank), scan_header(scan, bank)) for bank in banks if bank not in left_out}
    except InputError as err:
        if err.where is not None:
            raise
        raise InputError(err.what, scan.project_dir) from err  # the caller names the scan
    return converted, missing


def _missing_banks(scan: raw.Scan) -> tuple[MissingBank, ...]:
    """The banks whose raw file the scan log names but which is not there."""
    paths = ((bank, raw.bank_file(scan, bank)) for bank in scan.banks)
    return tuple(MissingBank(bank, path) for bank, path in paths if not path.is_file())


def fill_scan(
    scan: raw.Scan,
    layout: OutputLayout,
    lock_timeout_s: float = 60.0,
    write_spurs: bool = True,
    on_written: Callable[[ScanFill], None] | None = None,
    project: str | None = None,
    missing_banks_ok: bool = False,
    flush: bool = True,
) -> ScanFill:
    """Append ``scan`` to its project's bank files, index, combined index and flag files.

    ``project`` names the output folder (default: the scan's PROJID).  A stopped scan (the log never
    finished it, a later scan started) is filled with what its files hold: only by hand, the daemon
    fills finished scans only.  ``missing_banks_ok``: fill the banks whose raw file is there when
    another's is not (the result names those left out; a later fill adds them, the others skipped);
    else a missing bank file fails the scan, as any missing file.

    ``flush=False`` ends the fill once every byte is written, its flush (of the FITS rows and
    the indexes, the files its journal names) left to whoever next holds the project's
    lock: the daemon when idle, the next fill, :meth:`OutputLayout.settle`.  Until then a crash of
    the machine rolls the scan back whole (see :mod:`obsflow.online.journal`).
    """
    started = time.perf_counter()
    if not scan.is_over:
        raise InputError(f"scan {scan.number} has not finished yet", scan.project_dir / raw.SCANLOG)
    converted, missing = _convert(scan, missing_banks_ok)
    project = project or scan.project
    flush = flush or boot_id() is None  # a written fill could not be told from one a reboot lost
    with layout.project_held(project, lock_timeout_s, f"fill scan {scan.number}"):
        banks, last_index = _fill_locked(scan, project, converted, layout, write_spurs, flush)
        result = ScanFill(project, scan.number, scan.timestamp, banks, time.perf_counter() - started, missing)
        if last_index is not None:  # under the lock: the index it names is this fill's
            _update_status(layout, result, last_index, durable=flush)
    if on_written is not None:
        on_written(result)
    return result


def _fill_locked(
    scan: raw.Scan,
    project: str,
    converted: Converted,
    layout: OutputLayout,
    write_spurs: bool,
    flush: bool,
) -> tuple[tuple[BankFill, ...], int | None]:
    """The scan's share of each bank file, and the combined index's last INDEX after it (None: nothing written)."""
    product_dir = layout.product_dir(project, BACKEND)
    try:
        product_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output folder: {err.strerror}", product_dir) from err
    combined = layout.combined_index(project, BACKEND)
    journal = Journal(layout.journal_path(project))
    work: list[_BankWork] = []
    fills: list[BankFill] = []
    for bank, (rows, header) in converted.items():
        item = _prepare_bank(scan, project, bank, rows, header, journal, layout)
        if isinstance(item, BankFill):
            fills.append(item)  # already in the file
            continue
        work.append(item)
        fills.append(BankFill(bank, item.fits_path, len(rows["SCAN"]), item.first_row))
    if not work:
        return tuple(fills), None
    existing_banks = layout.bank_files(project, BACKEND)
    combined_rows = None  # the combined index's rows before this fill; None: it is not there
    if combined.exists():
        rows_now = {fill.fits_path: fill.first_row for fill in fills}  # existing files: their NAXIS2, just read
        combined_rows = _check_combined_agrees(combined, existing_banks, rows_now)
    rebuild_combined = not combined.exists() and bool(existing_banks)
    journal.record(undo_for(combined, [(0, INDEX_HEADER_BYTES)]) if combined.exists() else FileUndo(str(combined), None))
    journal.save()
    try:
        last_index = _write_all(project, work, layout, combined, write_spurs, combined_rows, rebuild_combined, flush)
    except BaseException as err:  # Ctrl-C and bugs too: never leave a half fill behind the lock
        # INFO: the caller reports the error itself (the CLI in one line); -v shows the rollback
        log.info("fill of %s scan %d failed, rolling back: %s", project, scan.number, err or type(err).__name__)
        journal.rollback()
        if isinstance(err, OSError):
            raise OutputError(f"fill failed and was rolled back: {err.strerror or err}", err.filename) from err
        raise
    if flush:
        journal.commit()
    else:
        journal.mark_written()
    for item in work:
        _SCANS.appended(item.fits_path, (scan.number, scan.timestamp))
    return tuple(fills), last_index


def _prepare_bank(
    scan: raw.Scan, project: str, bank: str, rows: dict[str, np.ndarray], header: dict[str, Any], journal: Journal,
    layout: OutputLayout,
) -> _BankWork | BankFill:
    """Plan one bank file's share and journal how to undo it; a BankFill(skipped) if the scan is already there."""
    fits_path = layout.bank_fits(project, bank, BACKEND)
    if fits_path.exists():
        state = writer.read_state(fits_path)
        if (scan.number, scan.timestamp) in _SCANS.keys_in(state):
            log.info("%s scan %d is already in %s: skipped", project, scan.number, fits_path.name)
            return BankFill(bank, fits_path, len(rows["SCAN"]), state.nrows, skipped=True)
        _check_index_agrees(fits_path, state.nrows)
        plan = writer.plan_append(fits_path, rows, header, state=state)
        journal.record(FileUndo(str(fits_path), plan.old_size, list(plan.undo)))
        journal.record(undo_for(index_fits.index_path_for(fits_path), [(0, INDEX_HEADER_BYTES)]))
        item = _BankWork(fits_path, rows, header, state.nrows, plan)
    else:
        index_path = index_fits.index_path_for(fits_path)
        if index_path.exists():  # journaled as new, a rollback would delete it; else it got rows from 0 appended
            raise IntegrityError("index exists without its FITS file; restore the FITS file or remove the index",
                                 index_path)  # fmt: skip
        journal.record(FileUndo(str(fits_path), None))
        journal.record(FileUndo(str(index_path), None))
        item = _BankWork(fits_path, rows, header, 0, None)
    # The flag file is not journaled: it is the observers' (a rollback must not undo their
    # edits), and what the fill adds to it (an empty header, spur rows) is idempotent.
    link = fits_path.with_suffix(".flag")
    if not _exists(link):
        journal.record(FileUndo(str(link), None))  # the link beside the FITS file is new: remove on rollback
    return item


@dataclass(frozen=True)
class _BankWork:
    """One bank file's share of a fill: its rows and, for an existing file, the planned append."""

    fits_path: Path
    rows: dict[str, np.ndarray]
    header: dict[str, Any]
    first_row: int
    plan: writer.AppendPlan | None  # None: the file is created


class _ScanKeys:
    """(SCAN, TIMESTAMP) pairs per bank file, re-read only when the file changed behind our back.

    Reading them from the file costs O(rows); the cache is valid while the file's size
    is the size our own last append left, which keeps each fill O(scan).
    """

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, set[tuple[int, str]]]] = {}

    def keys_in(self, state: writer.SdfitsState) -> set[tuple[int, str]]:
        cached = self._known.get(state.path)
        if cached is None or cached[0] != state.file_size:
            cached = (state.file_size, writer.scans_in_file(state.path))
            self._known[state.path] = cached
        return cached[1]

    def appended(self, path: Path, key: tuple[int, str]) -> None:
        cached = self._known.get(path)
        keys = cached[1] if cached else set()
        self._known[path] = (path.stat().st_size, keys | {key})


_SCANS = _ScanKeys()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _check_index_agrees(fits_path: Path, expected: int) -> None:
    """A bank index that disagrees with its FITS file would mislead GBTIDL and dysh: refuse to append."""
    index_path = index_fits.index_path_for(fits_path)
    if not index_path.exists():
        return  # rebuilt from the FITS file below
    have = index.next_index(index_path)
    if have != expected:
        raise IntegrityError(
            f"index has {have} rows but its FITS file has {expected}; rebuild it with 'obsflow index'", index_path
        )
    _check_last_row(index_path, fits_path, expected)


def _check_last_row(index_path: Path, fits_path: Path, nrows: int) -> None:
    """The last row must point at this file's last row: the right count alone passes another bank's index."""
    last = index.last_row(index_path, rows=nrows)  # the index has nrows rows: just checked
    if last is None:
        return
    expected = {"FILE": fits_path.name, "EXT": "1", "ROW": str(nrows - 1), "#INDEX#": str(nrows - 1)}
    wrong = [f"{name} {last[name]!r}" for name, value in expected.items() if last[name] != value]
    if wrong:
        raise IntegrityError(
            f"index's last row has {', '.join(wrong)}, expected {fits_path.name} HDU 1 ROW {nrows - 1}; "
            "rebuild it with 'obsflow index'", index_path
        )


def _check_combined_agrees(combined: Path, bank_files: Sequence[Path], rows_now: Mapping[Path, int]) -> int:
    """The combined index must list every row of every bank file: a cut one would be appended to.
    Return its row count.

    ``rows_now``: the row counts of the bank files this fill has just read (the others are read here).
    """
    have = index.next_index(combined)
    expected = sum(rows_now[path] if path in rows_now else writer.read_state(path).nrows for path in bank_files)
    if have != expected:
        raise IntegrityError(
            f"combined index has {have} rows but the bank files have {expected}; rebuild it with "
            f"'obsflow index {combined.parent}/'", combined
        )
    return have


def _formatted_rows(item: _BankWork, project: str, write_spurs: bool) -> tuple[list[str], list[str]]:
    """A bank's index rows and spur flag rows: all formatting, no file touched."""
    return _index_rows(item, project), flag.vegas_spur_rows(item.rows) if write_spurs else []


def _write_all(
    project: str, work: Sequence[_BankWork], layout: OutputLayout, combined: Path, write_spurs: bool,
    combined_rows: int | None, rebuild_combined: bool = False, flush: bool = True,
) -> int:
    """FITS rows first (their index and spur rows are formatted while the kernel copies them, or while
    the disk flushes them), then indexes, flags; return the combined index's last INDEX.
    ``combined_rows``: its rows before the fill (None: not there).

    The appends to existing bank files are done together: one wait for the disk for all of them.
    """
    now = datetime.now(UTC)
    formatted: dict[int, tuple[list[str], list[str]]] = {}  # bank's position in work: (index rows, spur rows)
    for position, item in enumerate(work):
        if item.plan is None:
            writer.create_file(item.fits_path, item.rows, item.header)
            formatted[position] = _formatted_rows(item, project, write_spurs)
    appends = [position for position, item in enumerate(work) if item.plan is not None]

    def format_appended() -> list[tuple[list[str], list[str]]]:  # while the rows are copied or flushed
        return [_formatted_rows(work[position], project, write_spurs) for position in appends]

    if appends:
        plans = [plan for position in appends if (plan := work[position].plan) is not None]
        formatted.update(zip(appends, writer.apply_appends(plans, flush, format_appended) or [], strict=True))
    first_combined = combined_rows or 0
    new_rows: list[str] = []
    for item, (rows, spurs) in zip(work, (formatted[position] for position in range(len(work))), strict=True):
        bank_index = index_fits.index_path_for(item.fits_path)
        if bank_index.exists():
            index.append_index_rows(bank_index, rows, now=now, flush=flush)
        else:
            index.write_index_text(bank_index, index_fits.build_index_for_fits(item.fits_path, now=now))
        new_rows += index.renumbered(rows, first_combined + len(new_rows))
        flag.ensure_flag_file(item.fits_path, layout.flag_target(item.fits_path), rows=spurs)
    if rebuild_combined:  # lost while bank files exist: the new rows alone would hide the older scans
        log.info("%s was missing: rebuilt from every bank file", combined.name)
        banks = layout.bank_files(project, BACKEND)
        index.write_index_text(combined, index_fits.build_combined_index(banks, now=now))
        return index.next_index(combined) - 1
    if combined_rows is not None:
        index.append_index_rows(combined, new_rows, now=now, flush=flush)
    else:
        observer = str(work[0].rows["OBSERVER"][0]) if "OBSERVER" in work[0].rows else "Unknown"
        header = index.IndexHeader.new(observer=observer, backend="VEGAS", now=now)
        index.write_index(combined, header, new_rows)
    return first_combined + len(new_rows) - 1


def _index_rows(item: _BankWork, project: str) -> list[str]:
    """The bank index rows of ``item``'s scan (INDEX = ROW: a bank index agrees with its file, checked above)."""
    return index.build_index_rows(item.rows, projid=str(item.header.get("PROJID", project)), file_name=item.fits_path.name,
                                  first_row=item.first_row, first_index=item.first_row)  # fmt: skip


def _update_status(layout: OutputLayout, result: ScanFill, last_index: int, durable: bool = True) -> None:
    entry = status.StatusEntry(
        backend=BACKEND,
        project=result.project,
        scan=result.scan,
        timestamp=result.timestamp,
        updated=datetime.now(),
        file=layout.product_dir(result.project, BACKEND).name,
        index=last_index,
    )
    try:
        status.update_status(layout.root, entry, durable)
    except (ObsflowError, OSError) as err:  # the scan is in the files already: say so, do not fail it
        log.error("scan %d of %s is filled, but %s was not updated: %s", result.scan, result.project,
                  status.STATUS_FILE_NAME, err)  # fmt: skip
