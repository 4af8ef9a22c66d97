"""Wiring of the online daemon: the ScanLog event source, the fill function and the output layout."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from obsflow.errors import InputError, ObsflowError
from obsflow.online import raw
from obsflow.online.daemon import Daemon, FillOutcome
from obsflow.online.engine import FillAction
from obsflow.online.events import ScanEventSource, ScanLogSource
from obsflow.online.fill import ScanFill, fill_scan, filled_scans, logged_scans
from obsflow.online.layout import OutputLayout

__all__ = ["build_daemon", "run_daemon"]

log = logging.getLogger(__name__)


def _find_scan(raw_root: Path, action: FillAction) -> raw.Scan:
    for scan in raw.read_project(raw_root / action.project):
        if (scan.number, scan.timestamp) == tuple(action.key):
            return scan
    raise InputError(f"scan {action.key.scan} ({action.key.timestamp}) is not in the scan log", raw_root / action.project)


def _quicklook(layout: OutputLayout, action: FillAction, outcome: FillOutcome) -> None:
    """The scan's spectra as a PNG for the status page (as GBTIDL's online display); never fails a fill."""
    from obsflow.web.quicklook import quicklook_path, quicklook_png

    try:
        quicklook_png([layout.bank_fits(action.project, bank) for bank in outcome.banks], action.key.scan,
                      action.key.timestamp, quicklook_path(layout.root, action.project, action.key.scan))  # fmt: skip
    except (ObsflowError, OSError, ValueError) as err:
        log.warning("no quick-look plot for %s scan %d: %s", action.project, action.key.scan, err)


def build_daemon(
    raw_root: Path,
    out_root: Path,
    flags_dir: Path | None = None,
    locks_dir: Path | None = None,
    projects: Sequence[str] = (),
    poll_s: float = 1.0,
    lock_timeout_s: float = 60.0,
    retry_limit: int = 5,
    backoff_s: float = 2.0,
    source: ScanEventSource | None = None,
    on_filled: Callable[[ScanFill], None] | None = None,
    quicklook: bool = True,
) -> Daemon:
    """A daemon following ``raw_root`` (or ``source``) and filling into ``out_root``."""
    raw_root, out_root = Path(raw_root), Path(out_root)
    layout = OutputLayout(out_root, flags_dir, locks_dir)

    def fill(action: FillAction) -> FillOutcome:
        scan = _find_scan(raw_root, action)
        result = fill_scan(scan, layout, lock_timeout_s=lock_timeout_s, project=action.project, on_written=on_filled)
        note = "already filled" if result.skipped else ""
        return FillOutcome(result.rows, tuple(b.bank for b in result.banks), result.skipped, note)

    return Daemon(
        source=source or ScanLogSource(raw_root, logged_scans, projects),
        fill=fill,
        layout=layout,
        raw_root=raw_root,
        filled_scans=lambda project: filled_scans(layout, project),
        poll_s=poll_s,
        retry_limit=retry_limit,
        backoff_s=backoff_s,
        after_fill=(lambda action, outcome: _quicklook(layout, action, outcome)) if quicklook else None,
    )


def run_daemon(max_seconds: float | None = None, until_idle: bool = False, **kwargs: object) -> Daemon:
    """Build and run the daemon until stopped; return it (for its status)."""
    daemon = build_daemon(**kwargs)  # type: ignore[arg-type]
    daemon.run(max_seconds=max_seconds, until_idle=until_idle)
    return daemon
