"""Whether a scan the daemon filled without some banks still lacks them: the bank files are the truth.

The daemon lists such scans in its status (``missing_banks``); an operator fills a late bank with
``obsflow fill``.  A running daemon notices and drops the entry; while none runs, the status keeps
it.  So the daemon and the status readers (``obsflow online status``, the status page) both ask here.

Invariant for the readers: nothing here writes (no lock taken, the daemon's status file untouched);
an entry whose bank files cannot be read now (a fill holds the project's lock, an interrupted fill
awaits its roll-back, a file is damaged) stays reported missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from obsflow.errors import ObsflowError
from obsflow.lock import is_locked
from obsflow.online.events import ScanKey
from obsflow.online.layout import OutputLayout

__all__ = ["MissingBanks", "banks_hold_scan", "recheck_missing_banks"]

log = logging.getLogger(__name__)


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


def _banks_of(entry: Mapping[str, object]) -> list[object]:
    banks = entry.get("banks")
    return banks if isinstance(banks, list) else []


def _scans_held(layout: OutputLayout, project: str, banks: set[str]) -> dict[str, set[ScanKey]] | None:
    """Bank letter -> the scans in the files of ``banks``, or None when the files cannot be judged now."""
    from obsflow.online.fill import scans_per_bank  # here: it imports astropy, which the status readers may not need

    if is_locked(layout.locks_dir, project) or layout.journal_path(project).exists():
        return None  # a fill is changing the files, or one was interrupted and its rows may yet be rolled back
    try:
        return scans_per_bank(layout, project, banks)
    except (ObsflowError, OSError) as err:
        message = err.one_line() if isinstance(err, ObsflowError) else str(err)
        log.info("cannot read which scans the bank files of %s hold: %s", project, message)
        return None
