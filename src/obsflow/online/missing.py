"""Whether a scan the daemon filled without some banks still lacks them: the bank files are the truth.

The daemon lists such scans in its status (``missing_banks``); an operator fills a late bank with
``obsflow fill``.  A running daemon notices and drops the entry; while none runs, the status keeps
it.  So the daemon and the status readers (``obsflow online status``, the status page) both ask here.

A daemon that finds its status damaged rebuilds the entries from the fill logs
(:func:`missing_banks_logged`), then asks the bank files which are still missing.

Invariant for the readers: nothing here writes (no lock taken, the daemon's status file untouched);
an entry whose bank files cannot be read now (a fill holds the project's lock, an interrupted fill
awaits its roll-back, a file is damaged) stays reported missing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from obsflow.errors import ObsflowError
from obsflow.lock import is_locked
from obsflow.online.events import ScanKey
from obsflow.online.layout import OutputLayout

__all__ = ["MissingBanks", "banks_hold_scan", "missing_banks_logged", "recheck_missing_banks"]

log = logging.getLogger(__name__)

# the end of fill.missing_banks_text: how fill logs written before ``missing_files`` name the files
_FILES_IN_NOTE = re.compile(r"raw files? missing \((.*)\)$")


@dataclass(frozen=True)
class MissingBanks:
    """A status's missing-bank entries split by what the bank files hold now."""

    still_missing: list[dict[str, object]] = field(default_factory=list)
    filled_since: list[dict[str, object]] = field(default_factory=list)


def banks_hold_scan(entry: Mapping[str, object], per_bank: Mapping[str, set[ScanKey]]) -> bool:
    """Every bank a missing-bank entry names holds its scan in ``per_bank`` (bank letter -> scans)."""
    banks, scan = _banks_of(entry), entry.get("scan")
    if not banks or not isinstance(scan, int):
        return False  # not an entry the daemon wrote: kept, as it was before
    key = ScanKey(scan, str(entry.get("timestamp")))
    return all(key in per_bank.get(str(bank), ()) for bank in banks)


def recheck_missing_banks(layout: OutputLayout, entries: Sequence[object]) -> MissingBanks:
    """Split the status's ``missing_banks`` entries into those still missing and those the bank files hold now.

    Reads only the projects with entries, and of those only the banks the entries name.  Entries
    that are not JSON objects are left out, as the daemon leaves them out when it loads its status.
    """
    named = [entry for entry in entries if isinstance(entry, dict)]
    per_project: dict[str, set[str]] = {}  # project -> the banks its entries name
    for entry in named:
        if isinstance(entry.get("project"), str):
            per_project.setdefault(entry["project"], set()).update(map(str, _banks_of(entry)))
    held = {project: _scans_held(layout, project, banks) for project, banks in per_project.items()}
    out = MissingBanks()
    for entry in named:
        project = entry.get("project")
        per_bank = held.get(project) if isinstance(project, str) else None  # None also: the files not judged now
        if per_bank is not None and banks_hold_scan(entry, per_bank):
            out.filled_since.append(entry)
        else:
            out.still_missing.append(entry)
    return out


@dataclass
class _LoggedScan:
    """One scan's fills as its fill log tells them, oldest first."""

    filled: list[str] = field(default_factory=list)  # banks written, by any of its fills
    files: dict[str, str] = field(default_factory=dict)  # bank -> its raw file, as a note named it
    missing: list[str] = field(default_factory=list)  # banks its latest fill left out
    note: str = ""
    filled_at: float = 0.0

    def add(self, record: Mapping[str, object], filled_at: float) -> None:
        missing = _items(record.get("missing_banks"))
        self.filled += [bank for bank in _items(record.get("banks")) if bank not in self.filled]
        self.files.update(_files_of(missing, record))
        self.missing, self.note = missing, str(record.get("note", ""))
        self.filled_at = filled_at

    def entry(self, project: str, scan: int, timestamp: str) -> dict[str, object]:
        """The status entry the daemon wrote for this scan; its note made again from the banks still missing,
        as the daemon made it (a late bank's fill logs a note of its own, naming the bank that came)."""
        from obsflow.online.fill import MissingBank, missing_banks_text  # as in _scans_held: astropy

        note, files = self.note, [self.files[bank] for bank in self.missing if bank in self.files]
        if len(files) == len(self.missing):
            filled = sorted(bank for bank in self.filled if bank not in self.missing)
            note = missing_banks_text([MissingBank(bank, Path(path)) for bank, path in zip(self.missing, files)], filled)
        else:
            files = []  # not told apart: listed missing, but no file to watch for
        return {"project": project, "scan": scan, "timestamp": timestamp, "banks": self.missing, "files": files,
                "note": note, "filled_at": self.filled_at}  # fmt: skip


def missing_banks_logged(records: Iterable[Mapping[str, object]]) -> list[dict[str, object]]:
    """The missing-bank entries of the daemon's status that fill-log records leave, newest fill first.

    A scan's latest fill says which of its banks are missing: the fill that left them out, or the
    daemon's fill of a bank that came late (naming those still missing, if any).  ``records``: each
    project's in the order written (:meth:`OutputLayout.read_fill_logs`).  A fill by hand writes no
    fill-log line: only the bank files know it (:func:`recheck_missing_banks`).
    """
    scans: dict[tuple[str, int, str], _LoggedScan] = {}
    for record in records:
        project, scan, filled_at = record.get("project"), record.get("scan"), record.get("filled_at")
        if isinstance(project, str) and isinstance(scan, int) and isinstance(filled_at, float):
            scans.setdefault((project, scan, str(record.get("timestamp"))), _LoggedScan()).add(record, filled_at)
    newest_first = sorted(scans.items(), key=lambda item: item[1].filled_at, reverse=True)
    return [logged.entry(*key) for key, logged in newest_first if logged.missing]


def _items(value: object) -> list[str]:
    """A fill log's list field as read back: ``B`` or ``B,C``, or a list (written as a JSON array: an item
    held a comma); none when the field is left out."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item) for item in items if item]


def _files_of(banks: list[str], record: Mapping[str, object]) -> dict[str, str]:
    """Bank -> its raw file, for the ``banks`` a fill-log record says it left out: from its
    ``missing_files`` (one per bank, in their order), or in a log written before that field, from its note."""
    files = _items(record.get("missing_files"))
    if files and len(files) == len(banks):
        return dict(zip(banks, files, strict=True))
    return _files_named(banks, str(record.get("note", "")))


def _files_named(banks: list[str], note: str) -> dict[str, str]:
    """Bank -> its raw file, as a fill's note names the files of the ``banks`` it left out (in their order);
    none if they cannot be told apart (a comma in a path)."""
    found = _FILES_IN_NOTE.search(note)
    files = found.group(1).split(", ") if found and banks else []
    return dict(zip(banks, files)) if len(files) == len(banks) else {}


def _banks_of(entry: Mapping[str, object]) -> list[object]:
    banks = entry.get("banks")
    return banks if isinstance(banks, list) else []


def _scans_held(layout: OutputLayout, project: str, banks: set[str]) -> dict[str, set[ScanKey]] | None:
    """Bank letter -> the scans in the files of ``banks``, or None when the files cannot be judged now."""
    from obsflow.online.fill import scans_per_bank  # here: it imports astropy, which the status readers may not need

    if is_locked(layout.locks_dir, project) or layout.has_journal(project):
        return None  # a fill is changing the files, or one was interrupted and its rows may yet be rolled back
    try:
        return scans_per_bank(layout, project, banks)
    except (ObsflowError, OSError) as err:
        message = err.one_line() if isinstance(err, ObsflowError) else str(err)
        log.info("cannot read which scans the bank files of %s hold: %s", project, message)
        return None
