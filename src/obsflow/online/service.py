"""Wiring of the online daemon: the ScanLog event source, the fill function and the output layout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from obsflow.errors import EXIT_FINDINGS, InputError, LockError, ObsflowError, UsageError
from obsflow.lock import is_locked, lock_held
from obsflow.online import raw
from obsflow.online.daemon import FORGET_AFTER_S, Daemon, FillOutcome
from obsflow.online.engine import FillAction
from obsflow.online.events import ScanEventSource, ScanKey, ScanLogSource, projects_not_present, raw_root_entries
from obsflow.online.fill import ScanFill, fill_scan, logged_scans, missing_banks_text, scans_per_bank_held
from obsflow.online.layout import OutputLayout
from obsflow.online.status_file import StatusDamaged, read_status

__all__ = ["build_daemon", "run_daemon"]

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_SLICE_S = 0.5  # a stop request is heard within this while a fill waits for a project lock
LOCK_POLL_S = 0.05


class ScansSkipped(ObsflowError):
    """A catch-up run finished, but skipped scans or banks whose raw data kept failing (exit 1: findings)."""

    exit_code = EXIT_FINDINGS


def _find_scan(raw_root: Path, action: FillAction) -> raw.Scan:
    # Not the GO headers: the fill reads this scan's, and another scan's cut GO file must not fail this one.
    for scan in raw.read_project(raw_root / action.project, with_go=False):
        if (scan.number, scan.timestamp) == tuple(action.key):
            return scan
    raise InputError(f"scan {action.key.scan} ({action.key.timestamp}) is not in the scan log", raw_root / action.project)


def _when_lock_free(
    layout: OutputLayout, project: str, timeout_s: float, stop_requested: Callable[[], bool], call: Callable[[float], T]
) -> T:
    """``call(lock_timeout_s)`` once the project's lock is free, waiting up to ``timeout_s`` in all.

    The wait is the daemon's, in short steps, so SIGTERM ends it at once rather than after
    the whole lock timeout (systemd kills a daemon that takes 60 s to stop); ``call``
    (which reads the whole scan before it takes the lock) runs again only if another
    process took the lock in between.
    """
    began = time.monotonic()
    deadline = began + timeout_s
    while True:
        while is_locked(layout.locks_dir, project) and not stop_requested() and time.monotonic() < deadline:
            time.sleep(LOCK_POLL_S)
        try:
            return call(min(LOCK_SLICE_S, max(0.0, deadline - time.monotonic())))
        except LockError as err:
            if stop_requested() or time.monotonic() >= deadline:
                # The last slice's own timeout is not the wait: say how long it was in all.
                waited = round(time.monotonic() - began, 1)
                raise LockError(lock_held(err.holder or "unknown holder", waited), err.where, err.holder) from err


def _quicklook(layout: OutputLayout, action: FillAction, outcome: FillOutcome) -> None:
    """The scan's spectra as a PNG for the status page (as GBTIDL's online display); never fails a fill."""
    from obsflow.web.quicklook import quicklook_path, quicklook_png

    try:
        quicklook_png([layout.bank_fits(action.project, bank) for bank in outcome.banks], action.key.scan,
                      action.key.timestamp, quicklook_path(layout.root, action.project, action.key.scan))  # fmt: skip
    except (ObsflowError, OSError, ValueError) as err:
        log.warning("no quick-look plot for %s scan %d: %s", action.project, action.key.scan, err)


def _previous_status(layout: OutputLayout) -> dict[str, object] | None:
    """The previous daemon's status, or None; a damaged one is as none here (the daemon sets it aside at start)."""
    try:
        return read_status(layout)
    except StatusDamaged:
        return None


def _unfinished_projects(previous: dict[str, object] | None, out_root: Path) -> Callable[[str], bool]:
    """Which old projects to follow: those the previous daemon's status lists as unfinished; with no
    such list (no status, or one saved by an older version), every project with an output folder."""
    unfinished = previous.get("unfinished") if previous else None
    if isinstance(unfinished, list):
        names = {str(name) for name in unfinished}
        return lambda name: name in names
    return lambda name: (out_root / name).is_dir()


def build_daemon(
    raw_root: Path,
    out_root: Path,
    flags_dir: Path | None = None,
    locks_dir: Path | None = None,
    projects: Sequence[str] = (),
    poll_s: float = 1.0,
    follow_hours: float = 24.0,
    lock_timeout_s: float = 60.0,
    retry_limit: int = 5,
    backoff_s: float = 2.0,
    source: ScanEventSource | None = None,
    on_filled: Callable[[ScanFill], None] | None = None,
    quicklook: bool = True,
    forget_after_s: float = FORGET_AFTER_S,
    flush_each_scan: bool = False,
) -> Daemon:
    """A daemon following ``raw_root`` (or ``source``) and filling into ``out_root``.

    Without ``projects``, it follows the projects whose ScanLog.fits changed within the last
    ``follow_hours`` (0: every project under ``raw_root``).  ``flush_each_scan``: each fill waits
    for the disk before it is reported; by default the flush is left for the daemon's next idle
    moment (see :mod:`obsflow.online.journal`).
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    layout = OutputLayout(out_root, flags_dir, locks_dir)
    layout.check_root()

    def stopping() -> bool:
        return daemon.stopping

    def fill(action: FillAction) -> FillOutcome:
        scan = _find_scan(raw_root, action)
        if not scan.banks:  # DCR-only or no backend at all: nothing for the VEGAS filler, and nothing wrong
            return FillOutcome(0, (), skipped=True, note="no VEGAS data")
        # Until the last try a bank file that is not there fails the scan (it may still come, as any late
        # file); the last try fills the banks that came rather than give up on the whole scan.
        result = _when_lock_free(layout, action.project, lock_timeout_s, stopping, lambda timeout_s: fill_scan(
            scan, layout, lock_timeout_s=timeout_s, project=action.project, on_written=on_filled,
            missing_banks_ok=action.is_last_try, flush=flush_each_scan))  # fmt: skip
        banks = tuple(b.bank for b in result.banks)
        if result.missing_banks:
            return FillOutcome(result.rows, banks, result.skipped, missing_banks_text(result.missing_banks, banks),
                               tuple(m.bank for m in result.missing_banks),
                               tuple(str(m.raw_path) for m in result.missing_banks))  # fmt: skip
        return FillOutcome(result.rows, banks, result.skipped, "already filled" if result.skipped else "")

    def filled(project: str) -> dict[str, set[ScanKey]]:
        return _when_lock_free(layout, project, lock_timeout_s, stopping,
                               lambda timeout_s: scans_per_bank_held(layout, project, lock_timeout_s=timeout_s))  # fmt: skip

    if source is None:
        # A project already being filled is followed however old its log: one the previous daemon left
        # with scans to fill, or whose log changed since its last poll (a long downtime).  Not every
        # project with an output folder: that is every project ever filled, years of them.
        previous = _previous_status(layout) if not projects and follow_hours else None
        last_poll = previous.get("last_poll") if previous else None
        source = ScanLogSource(raw_root, logged_scans, projects, follow_hours * 3600 or None,
                               since=float(last_poll) if isinstance(last_poll, (int, float)) else None,
                               also_follow=_unfinished_projects(previous, out_root))  # fmt: skip
    daemon = Daemon(
        source=source,
        fill=fill,
        layout=layout,
        raw_root=raw_root,
        filled_scans=filled,
        poll_s=poll_s,
        retry_limit=retry_limit,
        backoff_s=backoff_s,
        after_fill=(lambda action, outcome: _quicklook(layout, action, outcome)) if quicklook else None,
        forget_after_s=forget_after_s,
        named_projects=projects,
    )
    return daemon


def _refuse_projects_not_there(raw_root: Path, projects: Sequence[str]) -> None:
    """A catch-up run of a named project not under the raw root (a typo) would do nothing, and say nothing.

    Refused (exit 2), not filled around (exit 1): a catch-up run is one command, by hand, and a name it cannot
    follow is a mistake in it.  The long-running daemon waits for such a project instead, and says so: a
    project is named before its first scan.  Present as the daemon judges it (a folder of that name).
    """
    missing = projects_not_present(raw_root, projects)
    if missing:
        raise UsageError(f"project{'s' if len(missing) > 1 else ''} not found under the raw root: {', '.join(missing)}",
                         raw_root)  # fmt: skip


def run_daemon(raw_root: Path, max_seconds: float | None = None, until_idle: bool = False, **kwargs: object) -> Daemon:
    """Build and run the daemon until stopped; return it (for its status).

    A catch-up run (``until_idle``) whose raw root cannot be read, or that names projects not under
    it, is refused before anything is created under the output root.  One that skipped scans, filled scans without a bank whose file
    never came, or found scans the log never finished, raises :class:`ScansSkipped` (exit 1), naming them.
    """
    if until_idle:  # nothing to catch up from: the long-running daemon polls on instead (a disk mounted late)
        raw_root_entries(Path(raw_root))
        _refuse_projects_not_there(Path(raw_root), kwargs.get("projects") or ())  # type: ignore[arg-type]
    daemon = build_daemon(raw_root, **kwargs)  # type: ignore[arg-type]
    daemon.run(max_seconds=max_seconds, until_idle=until_idle)
    skipped = daemon.given_up() if until_idle else []
    partial = daemon.filled_without_banks() if until_idle else []
    unfinished = daemon.never_finished() if until_idle else []
    if skipped or partial or unfinished:
        what = [f"skipped {len(skipped)} scan{'s' if len(skipped) != 1 else ''} whose raw data kept failing (fill "
                "them by hand with obsflow fill): " + "; ".join(skipped)] if skipped else []  # fmt: skip
        what += [f"filled {len(partial)} scan{'s' if len(partial) != 1 else ''} without some banks (fill them by "
                 "hand with obsflow fill if the files come): " + "; ".join(partial)] if partial else []  # fmt: skip
        what += [f"{len(unfinished)} scan{'s' if len(unfinished) != 1 else ''} never finished: "
                 + "; ".join(unfinished)] if unfinished else []  # fmt: skip
        raise ScansSkipped("finished, but " + "; ".join(what))
    return daemon
