"""The online filler daemon: recover -> poll events -> plan -> fill -> record, forever.

One daemon per output root: it holds ``<locks>/obsflow-online.lock`` for its
whole life, so a second daemon on the same root refuses at once.  At start-up it
rolls back any fill a crash interrupted (:func:`obsflow.online.journal.recover`),
learns which scans the SDFITS files already hold, and catches up alone.  Each
fill's outcome goes to the per-project fill log, the structured service log and
the state file that ``obsflow online status`` reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from obsflow.atomic import write_atomic
from obsflow.errors import InputError, IntegrityError, LockError, ObsflowError, OutputError
from obsflow.lock import DAEMON_LOCK, is_stale, lock_path, read_lock, release_lock, take_lock
from obsflow.online.engine import Engine, Failure, FillAction
from obsflow.online.events import ScanEvent, ScanEventSource, ScanKey, projects_not_present
from obsflow.online.layout import OutputLayout
from obsflow.online.missing import banks_hold_scan, missing_banks_logged, recheck_missing_banks
from obsflow.online.status_file import StatusDamaged, read_status, set_aside

__all__ = [
    "CatchUpStalled", "Daemon", "FillOutcome", "fill_lag_s", "later_scan", "not_present_line", "read_status",
    "status_unsaved_s",
]

log = logging.getLogger(__name__)

RECENT_FILLS = 200
#: a project not filled for this long leaves the status (its fill log keeps it) once it has no scan left to fill:
#: the status is saved at every poll, and ``online status`` and the status page list its projects, which are
#: otherwise every project ever filled
PROJECTS_KEPT_S = 30 * 86400.0
CLOSE_FLUSH_WAIT_S = 10.0  # a stopping daemon waits this long for a busy project's lock to flush its last fill
STALE_POLLS = 20  # an idle daemon's status this many polls old was not saved (and at least STALE_MIN_S)
STALE_MIN_S = 2.0
BUSY = ("filling", "reading which scans")  # the daemon's activities that keep one status while they last
FITS_BLOCK = 2880  # a whole FITS file is a multiple of this many bytes
REPEAT_LOG_S = 300.0  # a problem that lasts is logged again at most this often
#: a project with nothing left to do whose scan log has not changed for this long is forgotten (no longer read,
#: nor kept in memory) until its log changes: a daemon runs for months, through hundreds of projects
FORGET_AFTER_S = 6 * 3600.0
LATE_BANK_NOTE_END = " came late"  # the note of a fill of a bank whose raw file came late: "VEGAS bank B came late"


class CatchUpStalled(ObsflowError):
    """A catch-up run (``--until-idle``) cannot finish: what is left keeps failing for a reason that passes."""


@dataclass
class ProjectProblem:
    """A project whose output files cannot be read (which scans they hold): retried with back-off."""

    error: ObsflowError
    attempts: int
    retry_at: float
    logged_at: float


@dataclass
class LeftReports:
    """What the status still says of a project the daemon forgot: scans given up, scans the log never finished.

    Kept until a fill by hand puts those scans in the files, or the project is followed again (back to the engine).
    """

    failures: dict[ScanKey, Failure]
    never_finished: dict[ScanKey, tuple[str, ScanKey]]

    def drop_filled(self, held: set[ScanKey]) -> bool:
        """Forget the scans now in the files; True if nothing is left to report."""
        self.failures = {key: failure for key, failure in self.failures.items() if key not in held}
        self.never_finished = {key: later for key, later in self.never_finished.items() if key not in held}
        return not (self.failures or self.never_finished)


@dataclass
class LateBankWatch:
    """The raw files of a missing-bank entry, as a stat saw them at the last poll, and a failed fill's."""

    seen: tuple[tuple[int, int] | None, ...] = ()  # (size, mtime) per file, None while it is not there
    failed: tuple[tuple[int, int] | None, ...] | None = None  # the files as the last failed fill found them
    retry_at: float = 0.0  # ... and when to try again, if they stay so (a busy lock passes)


@dataclass(frozen=True)
class FillOutcome:
    """What one successful fill wrote."""

    rows: int
    banks: tuple[str, ...]
    skipped: bool = False  # already in the files
    note: str = ""
    missing_banks: tuple[str, ...] = ()  # banks left out: their raw file never came
    missing_files: tuple[str, ...] = ()  # their raw files, in the same order


FillFunction = Callable[[FillAction], FillOutcome]


NEVER_FINISHED = "not filled: the scan log has no SCAN FINISHED for it (stopped, or M&C crashed?)"
NOT_PRESENT_WHY = "a typo, or no scan started yet?"


def not_present_line(entry: Mapping[str, object]) -> str:
    """A project named to follow but not in the raw root, as a status entry says it."""
    return f"{entry.get('project')} is named to follow but {entry.get('state')} ({NOT_PRESENT_WHY})"


def fills_not_ended(layout: OutputLayout) -> list[dict[str, object]]:
    """The fills written but not yet flushed, and those interrupted (see FillJournal); an error if unreadable."""
    try:
        journals = layout.fill_journals()
    except ObsflowError as err:
        return [{"state": "unknown", "error": err.one_line()}]
    return [{"project": j.project, "state": j.state, "since": j.since} for j in journals]


def seconds_ago(t: object, now: float | None = None) -> str | None:
    """``12 s ago`` for an epoch time ``t`` (None if ``t`` is not a time), as ``online status`` says it."""
    if not isinstance(t, (int, float)):
        return None
    return f"{(time.time() if now is None else now) - t:.0f} s ago"


def fill_not_ended_line(entry: Mapping[str, object], running: bool, now: float | None = None) -> str:
    """A fill not ended for good (see :func:`fills_not_ended`) as ``online status`` and the status page say it."""
    ago = seconds_ago(entry.get("since"), now) or "?"
    project = entry.get("project")
    if entry.get("state") == "written":
        when = "the daemon flushes it when idle" if running else "the next fill of the project or a daemon start flushes it"
        return (f"NOT FLUSHED YET: {project}: its last fill was written {ago}, complete but not on disk yet; "
                f"{when} (a crash of the machine before that rolls it back, to be filled again)")  # fmt: skip
    if entry.get("state") == "interrupted":
        return (f"INTERRUPTED: a fill of {project} stopped midway ({ago}); the next fill of the project or a "
                "daemon start rolls it back")  # fmt: skip
    if entry.get("state") == "filling":
        return f"filling {project} (its journal written {ago})"
    return f"WARNING: cannot tell which fills are under way: {entry.get('error')}"


def later_scan(entry: dict[str, object]) -> str:
    """The scan that started after a never-finished one, as a status entry names it: ``scan 2``, or ``scan 1 of P``."""
    project = entry.get("later_project")
    return f"scan {entry.get('later_scan')}" + (f" of {project}" if project else "")


@dataclass
class DaemonStatus:
    """What ``obsflow online status`` shows; saved after every change."""

    pid: int
    host: str
    started: float
    raw_root: str
    out_root: str
    activity: str = "starting"
    active_project: str | None = None
    last_poll: float | None = None
    projects: dict[str, dict[str, object]] = field(default_factory=dict)
    recent: list[dict[str, object]] = field(default_factory=list)
    failures: list[dict[str, object]] = field(default_factory=list)
    project_failures: list[dict[str, object]] = field(default_factory=list)  # a whole project cannot be filled
    poll_s: float = 1.0  # an idle daemon saves this status every poll: `online status` tells an old one
    never_finished: list[dict[str, object]] = field(default_factory=list)  # scans the log never finished
    # Scans filled without some VEGAS banks, whose raw files never came (newest first; kept while
    # their project is in ``projects``): if the files come later the daemon fills those banks
    # (_fill_late_banks), or a fill by hand does; the entry goes once every bank it names holds the scan.
    missing_banks: list[dict[str, object]] = field(default_factory=list)
    # Projects with scans still to fill (or failing, or never finished): the next daemon follows these however
    # old their logs, and no other project merely for having an output folder (every project ever filled has one).
    # None: not known (the previous status had no such list and this daemon has not read the raw root yet).
    unfinished: list[str] | None = field(default_factory=list)
    # Projects named to follow (--projects) that are not in the raw root at the last poll, and since when:
    # a typo looks like a quiet telescope otherwise.  {"project", "state": "not present in <raw root>", "since"}
    not_present: list[dict[str, object]] = field(default_factory=list)


class Daemon:
    """Drives an :class:`Engine` from a :class:`ScanEventSource`, filling with ``fill``."""

    def __init__(
        self,
        source: ScanEventSource,
        fill: FillFunction,
        layout: OutputLayout,
        raw_root: Path,
        filled_scans: Callable[[str], Mapping[str, set[ScanKey]]],  # bank letter -> the scans its file holds
        poll_s: float = 1.0,
        retry_limit: int = 5,
        backoff_s: float = 2.0,
        after_fill: Callable[[FillAction, FillOutcome], None] | None = None,
        forget_after_s: float = FORGET_AFTER_S,
        named_projects: Collection[str] = (),  # the only projects followed (--projects), to say if one is not there
    ) -> None:
        self.source = source
        self.named_projects = tuple(dict.fromkeys(named_projects))
        self.forget_after_s = forget_after_s
        self.after_fill = after_fill
        self.fill = fill
        self.layout = layout
        self.raw_root = Path(raw_root)
        self.filled_scans = filled_scans
        self.poll_s = poll_s
        self.engine = Engine(retry_limit=retry_limit, backoff_s=backoff_s)
        self.status = DaemonStatus(os.getpid(), socket.gethostname(), time.time(), str(raw_root), str(layout.root),
                                   poll_s=poll_s)  # fmt: skip
        self._stop = False
        self._raw_root_problem: str | None = None  # why the last poll could not read the raw root
        # Until the raw root was read once the engine knows no project: the previous daemon's unfinished
        # projects are kept as it left them (None: an older status without the list, or none).
        self._polled = False
        self._inherited_unfinished: list[str] | None = None
        self._lock_path: Path | None = None
        self._project_problems: dict[str, ProjectProblem] = {}  # output files that cannot be read
        self._tries: dict[tuple[str, ScanKey], int] = {}  # failed fills per scan by this run (not restored ones)
        self._unwritable: set[str] = set()  # the status or logs whose failed write was logged (once, not per poll)
        self._told_never_finished: set[tuple[str, ScanKey]] = set()
        self._missing_this_run: list[str] = []  # scans filled without some banks, for a catch-up run's end
        self._files_seen: dict[str, tuple[tuple[str, int, int], ...]] = {}  # see _notice_fills_by_hand
        self._left: dict[str, LeftReports] = {}  # forgotten projects the status still reports on
        self._late_banks: dict[tuple[object, object, object], LateBankWatch] = {}  # see _fill_late_banks
        self._not_present: dict[str, float] = {}  # named projects not in the raw root, and since when (said once)
        self._unflushed: set[str] = set()  # projects filled since their files were last flushed (see _flush_fills)

    # -- life cycle -------------------------------------------------------
    def start(self) -> None:
        """Take the daemon lock (refuse if another daemon runs) and recover interrupted fills.

        A start that fails once the lock is held releases it: the next start, in this process too, is not refused.
        """
        try:
            # Never stale by age: a daemon on another host holds it for weeks (on this host a dead pid frees it).
            self._lock_path = take_lock(self.layout.locks_dir, DAEMON_LOCK, timeout_s=0, purpose="online daemon",
                                        stale_after_s=math.inf)  # fmt: skip
        except LockError as err:
            raise LockError(
                f"another obsflow online daemon already serves this output root: {err.what}", err.where
            ) from err
        try:
            self._recover_and_load()
        except BaseException:  # Ctrl-C and bugs too; no status is saved: it would replace the previous daemon's
            self._release_lock()
            raise

    def _recover_and_load(self) -> None:
        restored = self.layout.recover_all()
        for path in restored:
            self._service_log("rolled_back", file=path)
        damaged = self._load_previous_status()
        self._save_status()
        if damaged:
            self._recover_missing_banks()
        self._check_inherited_missing_banks()

    def stop(self, *_: object) -> None:
        self._stop = True

    def close(self) -> None:
        self._flush_fills(CLOSE_FLUSH_WAIT_S)
        self.status.activity = "stopped"
        self._save_status()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_path is not None:
            release_lock(self._lock_path)
            self._lock_path = None

    def run(self, max_seconds: float | None = None, until_idle: bool = False) -> None:
        """Poll and fill until stopped (SIGTERM/SIGINT), ``max_seconds`` pass, or (``until_idle``) nothing is left."""
        self._install_signal_handlers()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.start()
        try:
            while not self._stop:
                did_work = self.step()
                if until_idle and self._raw_root_problem is not None:
                    raise InputError(self._raw_root_problem)  # a catch-up run has nothing to catch up from
                if until_idle and not did_work and not self.engine.has_work():
                    break
                if until_idle and not did_work:
                    self._stop_if_stalled()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not did_work:
                    if self._raw_root_problem is None:
                        self.status.activity = self._idle_activity()
                    time.sleep(self.poll_s)
        finally:
            self.close()

    def _stop_if_stalled(self) -> None:
        """In a catch-up run, stop once nothing left can be filled: every scan left is retried (a lock, the
        output) and was tried ``retry_limit`` times, or belongs to a project whose own files could not be
        read in ``retry_limit`` tries.  Other projects are filled first.

        The long-running daemon waits such failures out; a catch-up run would wait forever.
        """
        limit, scans, projects = self.engine.retry_limit, [], []
        for name in self.engine.projects:
            pending = self.engine.pending(name)
            problem = self._project_problems.get(name)
            if problem is not None and pending:
                if problem.attempts < limit:
                    return
                projects.append(problem.error)
                continue
            for key in pending:
                failure = self.engine.project(name).failures.get(key)
                if failure is None or self._tries.get((name, key), 0) < limit:
                    return
                scans.append(f"{name} scan {key.scan}: {failure.last_error}")
        if projects and not scans and len(projects) == 1:
            raise projects[0]  # e.g. "cannot read which scans of <PROJ> are filled: ..."
        if not (projects or scans):
            return
        what = [error.one_line() for error in projects] + scans  # one line, as every error
        raise CatchUpStalled(f"stopping the catch-up run: still failing after {limit} tries (a lock or the output): "
                             + "; ".join(what))

    def given_up(self) -> list[str]:
        """One line per scan skipped after failing on its raw data, for the end of a catch-up run."""
        return [f"{name} scan {key.scan}: {failure.last_error}" for name, failures in self._all_failures()
                for key, failure in failures.items() if failure.given_up]  # fmt: skip

    def _all_failures(self) -> list[tuple[str, dict[ScanKey, Failure]]]:
        """Each project's failures: the engine's, and those of the projects it forgot."""
        return ([(name, state.failures) for name, state in self.engine.projects.items()]
                + [(name, left.failures) for name, left in self._left.items()])  # fmt: skip

    def never_finished(self) -> list[str]:
        """One line per scan the log never finished (a later scan started), so never filled."""
        return [f"{entry['project']} scan {entry['scan']}: {NEVER_FINISHED}" for entry in self.status.never_finished]

    def _tell_never_finished(self) -> None:
        """Log each scan found never finished once, and list them all in the status (the engine is the truth)."""
        entries = []
        never_finished = [(name, state.never_finished) for name, state in self.engine.projects.items()]
        for name, scans in never_finished + [(name, left.never_finished) for name, left in self._left.items()]:
            for key, (later_project, later) in scans.items():
                entry = {"project": name, "scan": key.scan, "timestamp": key.timestamp, "later_scan": later.scan}
                if later_project != name:
                    entry["later_project"] = later_project
                entries.append(entry)
                if (name, key) not in self._told_never_finished:
                    self._told_never_finished.add((name, key))
                    log.warning("%s scan %d (%s): %s (%s started after it)", name, key.scan, key.timestamp,
                                NEVER_FINISHED, later_scan(entry))  # fmt: skip
        self.status.never_finished = entries

    def _idle_activity(self) -> str:
        if not self._project_problems:
            return "idle"
        name, problem = next(iter(self._project_problems.items()))
        pending = len(self.engine.pending(name))
        return f"idle; {problem.error.what} ({pending} scan{'s' if pending != 1 else ''} pending)"

    def _install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current fill", signum)
            self._stop = True

        try:
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        except ValueError:
            pass  # not the main thread (tests drive step() directly)

    # -- one round ----------------------------------------------------------
    def step(self) -> bool:
        """Poll once and fill what is due; True if anything was filled or attempted."""
        self.status.last_poll = time.time()
        events = self._poll_source()
        if events is None:
            self._save_status()
            return False
        self._check_named_projects()  # not while the raw root cannot be read: every project would seem gone
        for event in events:
            self._take_back(event.project)
            self.engine.observe(event)
            if event.kind == "project":
                self._service_log("project", project=event.project)
        self._notice_fills_by_hand()
        self._learn_filled_scans()
        self._tell_never_finished()  # after: a scan filled by hand is not "not filled"
        self.status.active_project = self.engine.active_project
        actions = self.engine.next_actions(time.time())
        began = time.monotonic()
        for action in actions:
            if self._stop:
                break
            self._do(action)
            if time.monotonic() - began >= self.poll_s:
                break  # a backlog: poll again first, so a scan that just ended is not kept waiting
        if not actions and self._project_problems:
            self.status.activity = self._idle_activity()
        filled_late = not actions and self._fill_late_banks()  # live scans first
        if not actions and not filled_late:
            self._flush_fills()
        self._forget_finished_projects(time.time())
        self._save_status()
        return bool(actions) or filled_late

    def _check_named_projects(self) -> None:
        """Say once when a project named to follow is not in the raw root, and once when it comes; the status
        lists it meanwhile.  A stat per named project and poll: they are few."""
        now, absent = time.time(), projects_not_present(self.raw_root, self.named_projects)
        for name in absent:
            if name not in self._not_present:
                self._not_present[name] = now
                log.warning("%s is named to follow but not present in %s (%s): waiting for it", name, self.raw_root,
                            NOT_PRESENT_WHY)  # fmt: skip
                self._service_log("project_not_present", project=name, raw_root=str(self.raw_root))
        for name in [name for name in self._not_present if name not in absent]:
            del self._not_present[name]
            log.warning("%s now present in %s: following it", name, self.raw_root)
            self._service_log("project_present", project=name)
        self.status.not_present = [{"project": name, "state": f"not present in {self.raw_root}", "since": since}
                                   for name, since in self._not_present.items()]  # fmt: skip

    def _forget_finished_projects(self, now: float) -> None:
        """Forget each project the daemon is finished with (see :meth:`Engine.is_finished_with`), but for one
        whose files are watched for a missing bank or cannot be read: memory and the work of a poll stay
        bounded over months.  A change of its log makes it a new project again (its files say what is filled)."""
        banks_missing = {entry.get("project") for entry in self.status.missing_banks}
        for name in [name for name in self.engine.projects if name not in banks_missing
                     and name not in self._project_problems
                     and self.engine.is_finished_with(name, now, self.forget_after_s)]:  # fmt: skip
            self._forget(name)

    def _forget(self, project: str) -> None:
        state = self.engine.forget(project)
        self.source.forget(project)
        self._tries = {key: tries for key, tries in self._tries.items() if key[0] != project}
        self._told_never_finished = {key for key in self._told_never_finished if key[0] != project}
        if state.failures or state.never_finished:  # given up, or never finished: still reported
            self._left[project] = LeftReports(dict(state.failures), dict(state.never_finished))
        else:
            self._files_seen.pop(project, None)
        log.info("%s: nothing left to fill, scan log unchanged for %g h: no longer followed (until it changes)",
                 project, self.forget_after_s / 3600)  # fmt: skip
        self._service_log("project_forgotten", project=project)

    def _take_back(self, project: str) -> None:
        """A forgotten project seen again: what the status said of it goes back to the engine."""
        left = self._left.pop(project, None)
        if left is not None:
            self.engine.restore_failures(project, left.failures)
            self.engine.restore_never_finished(project, left.never_finished)

    def _notice_fills_by_hand(self) -> None:
        """A scan the log never finished, or a bank whose raw file came late, filled by hand while the
        daemon runs (as ``online status`` advises): its project's files changed without a fill of ours,
        so which scans they hold is read again.  Only for projects with such a scan, by a stat of their
        bank files: fills stay O(scan)."""
        for name in self._watched_projects():
            now = self._bank_files_now(name)
            if self._files_seen.setdefault(name, now) == now:
                continue
            self._files_seen[name] = now
            state = self.engine.projects.get(name)
            if state is not None and (state.finished or state.never_finished):
                self.engine.read_filled_again(name)  # _learn_filled_scans reads them, banks too, with its back-off
            else:
                self._check_missing_banks(name)  # no poll follows the project (an entry a previous daemon left)

    def _watched_projects(self) -> set[str]:
        """Projects whose status a fill by hand may change: a scan the log never finished, or a bank missing."""
        names = {name for name, state in self.engine.projects.items() if state.never_finished and state.filled_known}
        names |= set(self._left)  # forgotten, with scans given up or never finished
        return names | {str(entry["project"]) for entry in self.status.missing_banks if entry.get("project")}

    def _bank_files_now(self, project: str) -> tuple[tuple[str, int, int], ...]:
        """Name, size and mtime of each of the project's bank files."""
        seen = []
        for path in self.layout.bank_files(project):
            with contextlib.suppress(OSError):  # gone meanwhile: it counts as changed
                st = path.stat()
                seen.append((path.name, st.st_size, st.st_mtime_ns))
        return tuple(seen)

    def _learn_filled_scans(self) -> None:
        """Read which scans each new project's files hold.

        Its scans are not filled before (a fill could only repeat one).  A busy lock or a
        damaged file is tried again with back-off (capped), logged once per distinct error
        (then every few minutes), and shown in the status with the project's pending scans.
        """
        now = time.time()
        for project in self.engine.unknown_filled():
            if self._stop:
                return
            problem = self._project_problems.get(project)
            if problem is not None and problem.retry_at > now:
                continue
            # Saved first: this may wait for the project's lock (an offline fill) for the lock timeout.
            self.status.activity = f"reading which scans of {project} are filled"
            self._save_status()
            try:
                per_bank = self.filled_scans(project)
                self.engine.already_filled(project, set().union(*per_bank.values()))
            except ObsflowError as err:  # its lock is busy, a file is damaged: ask again later
                self._cannot_learn(project, type(err)(f"cannot read which scans of {project} are filled: {err.what}",
                                                      err.where), problem, now)  # fmt: skip
            except Exception as err:  # nor may anything unforeseen stop the daemon
                if problem is None:
                    log.error("cannot read which scans of %s are filled", project, exc_info=err)
                self._cannot_learn(project, ObsflowError(f"cannot read which scans of {project} are filled: "
                                                         f"{type(err).__name__}: {err}"), problem, now)  # fmt: skip
            else:
                if self._project_problems.pop(project, None) is not None:
                    log.warning("the output files of %s can be read again", project)
                self._forget_banks_filled_since(project, per_bank)
        self.status.project_failures = [
            {"project": name, "pending": len(self.engine.pending(name)), "last_error": p.error.one_line(),
             "attempts": p.attempts, "retry_at": p.retry_at} for name, p in self._project_problems.items()
        ]  # fmt: skip

    def _cannot_learn(self, project: str, error: ObsflowError, previous: ProjectProblem | None, now: float) -> None:
        attempts = 1 + (previous.attempts if previous else 0)
        delay = self.engine.backoff(attempts)
        logged_at = previous.logged_at if previous else -math.inf
        if previous is None or previous.error.one_line() != error.one_line() or now - logged_at >= REPEAT_LOG_S:
            pending = len(self.engine.pending(project))
            log.error("%s (%d scan%s pending; retrying)", error.one_line(), pending, "s" if pending != 1 else "")
            self._service_log("project_failed", project=project, error=error.one_line(), pending=pending)
            logged_at = now
        self._project_problems[project] = ProjectProblem(error, attempts, now + delay, logged_at)

    @property
    def stopping(self) -> bool:
        """A stop was asked for (SIGTERM/SIGINT): waits for locks end early."""
        return self._stop

    def _poll_source(self) -> list[ScanEvent] | None:
        """The new scan events, or None when the raw root cannot be read (unmounted, an NFS blip).

        That passes: it is logged when it starts and ends, shown in the status, and the next
        poll tries again.
        """
        try:
            events = self.source.poll()
        except InputError as err:
            problem = err.one_line()
        except Exception as err:  # the source must not stop the daemon either
            log.error("polling for scan events failed", exc_info=err)
            problem = f"{type(err).__name__}: {err}"
        else:
            self._polled = True
            if self._raw_root_problem is not None:
                log.warning("raw root available again")
                self._raw_root_problem = None
                self.status.activity = "polling"
            return events
        if problem != self._raw_root_problem:
            log.error("raw root unavailable, polling on: %s", problem)
            self._service_log("raw_root_unavailable", error=problem)
        self._raw_root_problem = problem
        self.status.activity = f"raw root unavailable: {problem}"
        return None

    def _do(self, action: FillAction) -> None:
        self.status.activity = f"filling {action.project} scan {action.key.scan}"
        self._save_status()
        # A fill by hand since the last poll must still be noticed after ours (see _notice_fills_by_hand).
        watched = action.project in self._watched_projects()
        changed_by_hand = watched and self._files_seen.get(action.project) != self._bank_files_now(action.project)
        started = time.time()
        try:
            outcome = self.fill(action)
        except Exception as err:  # noqa: BLE001 - one bad scan must never stop the daemon
            self._fill_failed(action, err)
            return
        seconds = time.time() - started
        self._unflushed.add(action.project)
        self.engine.filled(action)
        state = self.engine.project(action.project)
        record = {
            "project": action.project, "scan": action.key.scan, "timestamp": action.key.timestamp,
            "banks": list(outcome.banks), "rows": outcome.rows, "seconds": round(seconds, 4),
            "filled_at": time.time(), "finished_at": state.ended_at.get(action.key),
            "finished_seen_at": state.seen_finished_at.get(action.key), "skipped": outcome.skipped,
            "note": outcome.note, "missing_banks": list(outcome.missing_banks),
            "missing_files": list(outcome.missing_files),
        }  # fmt: skip
        if outcome.missing_banks:
            self._tell_missing_banks(action, outcome, record)
        if action.project in self._watched_projects() and not changed_by_hand:
            self._files_seen[action.project] = self._bank_files_now(action.project)  # ours is no fill by hand
        self.status.projects[action.project] = {
            "last_scan": action.key.scan,
            "last_timestamp": action.key.timestamp,
            "last_filled_at": record["filled_at"],
            "pending": len(self.engine.pending(action.project)),
        }
        self._record_fill(action.project, record, "filled")
        self._save_status()  # the fill is on record before any extra work such as plots
        if self.after_fill is not None and not outcome.skipped:
            try:
                self.after_fill(action, outcome)
            except Exception:  # extras such as plots never stop the daemon
                log.exception("after-fill work for %s scan %d failed", action.project, action.key.scan)

    def _flush_fills(self, timeout_s: float = 0) -> None:
        """Flush the fills that left their flush for later (``[filler] flush = "deferred"``): while the
        daemon waits for the next scan, not while a scan waits for the disk.  A project whose lock is
        busy is tried again at the next poll (the holder's own start flushes it meanwhile)."""
        for project in sorted(self._unflushed):
            if self.layout.unflushed(project):
                try:
                    self.layout.settle(project, timeout_s)
                except LockError:
                    continue
                except ObsflowError as err:  # the journal stays: the next fill of the project tries again, and says so
                    log.error("cannot flush the last fill of %s: %s", project, err.one_line())
            self._unflushed.discard(project)

    def _record_fill(self, project: str, record: dict[str, object], event: str) -> None:
        """A fill on record: first of the status's recent fills, in the project's fill log and the service log."""
        self.status.recent = ([record] + self.status.recent)[:RECENT_FILLS]
        self._fill_log(project, record)
        self._service_log(event, **record)

    def _tell_missing_banks(self, action: FillAction, outcome: FillOutcome, record: dict[str, object]) -> None:
        """A scan filled without the banks whose raw file never came: logged, and listed in the status."""
        log.warning("%s scan %d filled, but %s", action.project, action.key.scan, outcome.note)
        entry = {"project": action.project, "scan": action.key.scan, "timestamp": action.key.timestamp,
                 "banks": list(outcome.missing_banks), "files": list(outcome.missing_files),
                 "note": outcome.note, "filled_at": record["filled_at"]}  # fmt: skip
        same = (action.project, action.key.scan, action.key.timestamp)
        kept = [e for e in self.status.missing_banks if (e.get("project"), e.get("scan"), e.get("timestamp")) != same]
        self.status.missing_banks = ([entry] + kept)[:RECENT_FILLS]
        self._missing_this_run.append(f"{action.project} scan {action.key.scan}: {outcome.note}")

    def _check_inherited_missing_banks(self) -> None:
        """At start, drop the previous daemon's entries whose banks were filled by hand since
        (with ``obsflow fill`` while no daemon ran): its project may be one no poll follows."""
        for project in sorted({str(entry["project"]) for entry in self.status.missing_banks if entry.get("project")}):
            if self._stop:
                return
            self.status.activity = f"reading which scans of {project} are filled"  # may wait for its lock
            self._save_status()
            self._check_missing_banks(project)
        self.status.activity = "starting"

    def _check_missing_banks(self, project: str) -> None:
        """Read which scans the project's bank files hold, and drop the entries whose banks all hold theirs.

        A file that cannot be read keeps the entries (logged): they are checked again when the files change.
        """
        self._files_seen[project] = self._bank_files_now(project)  # before the read: a later fill by hand counts
        try:
            per_bank = self.filled_scans(project)
        except ObsflowError as err:
            log.warning("cannot check the missing banks of %s: %s", project, err.one_line())
            return
        except Exception as err:  # nor may anything unforeseen stop the daemon
            log.error("cannot check the missing banks of %s", project, exc_info=err)
            return
        self._forget_banks_filled_since(project, per_bank)
        left = self._left.get(project)
        if left is not None and left.drop_filled(set().union(*per_bank.values())):
            del self._left[project]
            self._files_seen.pop(project, None)

    def _forget_banks_filled_since(self, project: str, per_bank: Mapping[str, set[ScanKey]]) -> None:
        """Drop the project's missing-bank entries whose banks all hold the scan now (filled by hand)."""
        kept = []
        for entry in self.status.missing_banks:
            if entry.get("project") == project and banks_hold_scan(entry, per_bank):
                log.info("%s scan %s: VEGAS bank %s filled since: no longer missing", project, entry.get("scan"),
                         ",".join(map(str, entry.get("banks") or [])))  # fmt: skip
                self._service_log("missing_banks_filled", project=project, scan=entry.get("scan"),
                                  timestamp=entry.get("timestamp"), banks=entry.get("banks"))  # fmt: skip
            else:
                kept.append(entry)
        self.status.missing_banks = kept

    def _fill_late_banks(self) -> bool:
        """Fill the banks of missing-bank entries whose raw file came late (a slow copy from VEGAS); True
        if any was tried.  Each poll only stats the files; a file is filled once it is there, a whole
        number of FITS blocks, and unchanged since the previous poll (a copy under way changes it)."""
        now = time.time()
        entries = {_entry_key(entry): entry for entry in self.status.missing_banks}
        self._late_banks = {key: watch for key, watch in self._late_banks.items() if key in entries}
        tried = False
        for key, entry in entries.items():
            files, scan = entry.get("files"), entry.get("scan")
            if self._stop or not isinstance(files, list) or not isinstance(scan, int):
                continue  # an entry of an older version names no files
            watch = self._late_banks.setdefault(key, LateBankWatch())
            stamps, watch.seen = watch.seen, tuple(_whole_file_stamp(Path(str(path))) for path in files)
            if stamps != watch.seen or all(stamp is None for stamp in stamps):
                continue  # not there, or still changing
            if watch.failed == stamps and now < watch.retry_at:
                continue
            tried = True
            self._fill_late_bank(entry, ScanKey(scan, str(entry.get("timestamp"))), watch, now)
        return tried

    def _fill_late_bank(self, entry: dict[str, object], key: ScanKey, watch: LateBankWatch, now: float) -> None:
        """Fill a scan again with the bank files that came (the banks holding it are skipped, never twice)."""
        project, entry_banks = str(entry.get("project")), entry.get("banks")
        named = [str(bank) for bank in entry_banks] if isinstance(entry_banks, list) else []
        banks = ",".join(named) or "?"
        self.status.activity = f"filling {project} scan {key.scan} (VEGAS bank {banks}, came late)"
        self._save_status()
        started = time.time()
        try:
            outcome = self.fill(FillAction(project, key, ("vegas",), attempt=1, is_last_try=True))
        except Exception as err:  # noqa: BLE001 - a late file that cannot be filled yet must not stop the daemon
            message = err.one_line() if isinstance(err, ObsflowError) else f"{type(err).__name__}: {err}"
            if watch.failed != watch.seen:  # said once per state of the files
                log.warning("%s scan %d: cannot fill VEGAS bank %s, whose raw file came late: %s", project, key.scan,
                            banks, message)  # fmt: skip
            watch.failed, watch.retry_at = watch.seen, now + self.engine.max_backoff_s
            return
        self._files_seen[project] = self._bank_files_now(project)  # our fill is no fill by hand
        # The entry's banks that came, not outcome.banks: that names the banks skipped for holding the scan too.
        filled = [] if outcome.skipped else [bank for bank in named if bank not in outcome.missing_banks]
        log.info("%s scan %d: VEGAS bank %s came late: filled (%d rows)", project, key.scan, banks, outcome.rows)
        # No finished_at: its lag after the scan's end is the backend's late copy, not the daemon's.
        record = {"project": project, "scan": key.scan, "timestamp": key.timestamp, "banks": filled,
                  "rows": outcome.rows, "seconds": round(time.time() - started, 4), "filled_at": time.time(),
                  "skipped": outcome.skipped, "note": f"VEGAS bank {banks}{LATE_BANK_NOTE_END}",
                  "missing_banks": list(outcome.missing_banks), "missing_files": list(outcome.missing_files)}  # fmt: skip
        self._record_fill(project, record, "late_bank_filled")
        self.status.missing_banks = [e for e in self.status.missing_banks if _entry_key(e) != _entry_key(entry)]
        if outcome.missing_banks:  # another bank of the entry is still missing: it stays, naming that one
            self._tell_missing_banks(FillAction(project, key, ("vegas",), 1, True), outcome, record)

    def filled_without_banks(self) -> list[str]:
        """One line per scan this run filled without some banks (their raw files never came)."""
        return list(self._missing_this_run)

    def _fill_failed(self, action: FillAction, err: Exception) -> None:
        """Record a failed fill; an unexpected exception (a bug, or raw data no reader foresaw) gets its traceback."""
        if isinstance(err, ObsflowError):
            message = err.one_line()
        else:
            log.error("unexpected error filling %s scan %d", action.project, action.key.scan, exc_info=err)
            message = f"{type(err).__name__}: {err}"
        failure = self.engine.failed(action, message, time.time(), counts=self._counts_toward_giving_up(err))
        self._tries[(action.project, action.key)] = self._tries.get((action.project, action.key), 0) + 1
        self._record_failure(action, failure)
        self._save_status()

    def _counts_toward_giving_up(self, err: Exception) -> bool:
        """Only bad raw data can make a scan hopeless.

        A busy project lock, a full disk or a damaged output file pass or get fixed, and
        the scan must be filled then: those are retried for as long as they last.  An
        unexpected exception counts (it is most likely raw data no reader foresaw).
        """
        if isinstance(err, (LockError, OutputError, OSError)):
            return False
        if isinstance(err, IntegrityError):
            return err.where is not None and Path(err.where).is_relative_to(self.raw_root)
        return True

    def _record_failure(self, action: FillAction, failure: Failure) -> None:
        what = "gave up on" if failure.given_up else "will retry"
        log.warning("%s %s scan %d: %s", what, action.project, action.key.scan, failure.last_error)
        entry = _failure_entry(action.project, action.key, failure)
        self._fill_log(action.project, {**entry, "error": failure.last_error})
        self._service_log("fill_failed", **entry)

    # -- persistence ------------------------------------------------------------
    def _load_previous_status(self) -> bool:
        """Take up the previous daemon's failures, recent fills, projects and missing banks; True if its
        status was damaged (set aside, said once: this daemon starts afresh).

        It is derived state: the files say what is filled, and refusing to start would stop every fill.
        """
        try:
            previous = read_status(self.layout)
        except StatusDamaged as err:
            self._set_aside_damaged(err)
            return True
        if previous is None:
            return False
        for entry in previous.get("failures", []):
            key = ScanKey(int(entry["scan"]), str(entry["timestamp"]))
            failure = Failure(int(entry["attempts"]), str(entry["last_error"]), float(entry["retry_at"]),
                              bool(entry["given_up"]), int(entry.get("counted", entry["attempts"])))  # fmt: skip
            self.engine.restore_failures(str(entry["project"]), {key: failure})
        self.status.recent = list(previous.get("recent", []))
        self.status.projects = dict(previous.get("projects", {}))  # those not filled lately go at the first save
        self.status.missing_banks = [e for e in previous.get("missing_banks", []) if isinstance(e, dict)]
        unfinished = previous.get("unfinished")
        self._inherited_unfinished = [str(name) for name in unfinished] if isinstance(unfinished, list) else None
        return False

    def _set_aside_damaged(self, err: StatusDamaged) -> None:
        """Keep the damaged status as ``<name>.damaged`` to be looked at, and say so once."""
        try:
            kept = f"set aside as {set_aside(self.layout)}"
        except OSError as move_err:  # the first save replaces it
            kept = f"cannot set it aside ({move_err.strerror or move_err})"
        log.warning("%s: %s, starting a fresh one", err.one_line(), kept)
        self._service_log("status_damaged", file=str(self.layout.status_path), error=err.problem)

    def _recover_missing_banks(self) -> None:
        """Rebuild the missing-bank entries a damaged status lost, from the fill logs: without them a bank
        file that comes late is never filled, nor said missing.  Only on a damaged status (a daemon's first
        start has none to rebuild), and only the entries the status would still hold."""
        self.status.activity = "reading which scans the fill logs name with a bank missing (status damaged)"
        self._save_status()
        try:
            entries = self._missing_banks_in_fill_logs(time.time())
        except Exception as err:  # derived state: never a reason not to start
            log.error("cannot rebuild the missing banks from the fill logs", exc_info=err)
            return
        finally:
            self.status.activity = "starting"
        self.status.missing_banks = entries
        log.info("recovered %d scan%s filled without some banks from the fill logs (the status was damaged)",
                 len(entries), "" if len(entries) == 1 else "s")  # fmt: skip
        self._service_log("missing_banks_recovered", count=len(entries))

    def _missing_banks_in_fill_logs(self, now: float) -> list[dict[str, object]]:
        """The entries of the projects the status would keep (filled within PROJECTS_KEPT_S, with an output
        folder) whose bank files still lack them (a fill by hand is in the files only); each such project
        gets its status line back, as an entry is kept only while its project has one."""
        records = self.layout.read_fill_logs(since=now - PROJECTS_KEPT_S)  # a log unchanged since: none kept
        lines = {name: line for name, line in _lately_filled(_project_lines(records), now).items()
                 if self.layout.product_dir(name).is_dir()}  # fmt: skip
        logged = [entry for entry in missing_banks_logged(records) if entry["project"] in lines]
        entries = recheck_missing_banks(self.layout, logged).still_missing[:RECENT_FILLS]
        for entry in entries:
            self.status.projects.setdefault(str(entry["project"]), lines[str(entry["project"])])
        return entries

    def _save_status(self) -> None:
        # The engine's failures are the truth: an entry goes when its scan is filled, however.
        self.status.failures = [_failure_entry(name, key, failure) for name, failures in self._all_failures()
                                for key, failure in failures.items()]  # fmt: skip
        pending = {name: len(self.engine.pending(name)) for name in self.engine.projects}  # once per save: every poll
        # ... and of what is pending: a scan given up, or one finished since the last fill, changes it too.
        for name, info in self.status.projects.items():
            state = self.engine.projects.get(name)
            if state is not None and state.filled_known:
                info["pending"] = pending[name]
        unfinished = {name for name, state in self.engine.projects.items()
                      if state.failures or state.never_finished or pending[name]} | set(self._left)  # fmt: skip
        if not self._polled and self._inherited_unfinished is not None:
            unfinished |= set(self._inherited_unfinished)  # the engine has not seen the previous daemon's projects yet
        # None: an older status without the list, and no poll yet to make one (the next start keeps the old rule)
        self.status.unfinished = None if not self._polled and self._inherited_unfinished is None else sorted(unfinished)
        # a project with scans still to fill keeps its line (and pending count) however long ago its last fill
        self.status.projects = _lately_filled(self.status.projects, time.time(), keep=unfinished)
        self.status.missing_banks = [e for e in self.status.missing_banks if e.get("project") in self.status.projects]

        def write() -> None:
            self.layout.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.layout.status_path, json.dumps(asdict(self.status), indent=1))

        self._persist("status", write)

    def _service_log(self, event: str, **fields: object) -> None:
        self._persist("service log", lambda: self.layout.append_service_log({"time": time.time(), "event": event, **fields}))

    def _fill_log(self, project: str, record: dict[str, object]) -> None:
        self._persist(f"fill log of {project}", lambda: self.layout.append_fill_log(project, record))  # one line per project

    def _persist(self, what: str, write: Callable[[], None]) -> None:
        """Write the status or a log line; a full or unwritable disk is logged, not fatal (it passes).

        Logged once until it can be written again: an idle daemon saves its status at every poll,
        and a read-only disk made one error line per poll (hundreds a minute) of the daemon's log.
        """
        try:
            write()
        except (ObsflowError, OSError) as err:
            message = err.one_line() if isinstance(err, ObsflowError) else f"{err.strerror or err} ({err.filename})"
            if what not in self._unwritable:
                self._unwritable.add(what)
                log.error("cannot write the %s: %s (said once, until it can be written again)", what, message)
            return
        if what in self._unwritable:
            self._unwritable.discard(what)
            log.warning("the %s can be written again", what)


def _lately_filled(
    projects: dict[str, dict[str, object]], now: float, keep: Collection[str] = ()
) -> dict[str, dict[str, object]]:
    """The projects of the status filled within :data:`PROJECTS_KEPT_S` (or of unknown fill time), and those in ``keep``."""
    def lately(name: str, info: object) -> bool:
        filled = info.get("last_filled_at") if isinstance(info, dict) else None
        return name in keep or not isinstance(filled, (int, float)) or now - filled < PROJECTS_KEPT_S

    return {name: info for name, info in projects.items() if lately(name, info)}


def _project_lines(records: Collection[Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """Each project's status line as its last fill in the fill-log ``records`` left it; a late bank's fill
    leaves it as it was.  How many scans are pending is not in the logs: a poll counts them."""
    lines: dict[str, dict[str, object]] = {}
    for record in records:
        project = record.get("project")
        if (isinstance(project, str) and isinstance(record.get("filled_at"), float)
                and not str(record.get("note", "")).endswith(LATE_BANK_NOTE_END)):
            lines[project] = {"last_scan": record.get("scan"), "last_timestamp": record.get("timestamp"),
                              "last_filled_at": record.get("filled_at"), "pending": 0}  # fmt: skip
    return lines


def _entry_key(entry: Mapping[str, object]) -> tuple[object, object, object]:
    """The scan a status entry names: (project, scan, timestamp)."""
    return entry.get("project"), entry.get("scan"), entry.get("timestamp")


def _whole_file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime) of a raw file that may be whole: there, and a whole number of FITS blocks (else None)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if stat.st_size == 0 or stat.st_size % FITS_BLOCK:
        return None
    return stat.st_size, stat.st_mtime_ns


def _failure_entry(project: str, key: ScanKey, failure: Failure) -> dict[str, object]:
    return {"project": project, "scan": key.scan, "timestamp": key.timestamp, **asdict(failure)}


def daemon_running(layout: OutputLayout, status: dict[str, object]) -> tuple[bool, bool]:
    """(running, checked) of the daemon whose saved ``status`` this is, by its lock.

    Never stale by age (a daemon holds its lock for weeks); on this host a dead pid frees it,
    and a lock file that cannot be read frees it after a minute.  A daemon on another host
    holds its lock, but its process cannot be seen from here: running, not checked.
    """
    holder = read_lock(lock_path(layout.locks_dir, DAEMON_LOCK))
    if holder is None or status.get("activity") == "stopped" or is_stale(holder, stale_after_s=math.inf):
        return False, True
    if holder.host != socket.gethostname():
        return True, False
    return True, True


def fill_lag_s(record: Mapping[str, object]) -> float | None:
    """Seconds from a scan's end to its fill, from a fill record (status ``recent`` or fill log), or None.

    The end is ``finished_at`` (the scan log's SCAN FINISHED); ``finished_seen_at``, when the daemon
    saw it, only in records of older versions: after a daemon was down it hides the whole wait.
    """
    filled = record.get("filled_at")
    ended = record.get("finished_at") or record.get("finished_seen_at")
    if isinstance(filled, (int, float)) and isinstance(ended, (int, float)):
        return float(filled) - float(ended)
    return None


def status_unsaved_s(status: Mapping[str, object], running: bool, now: float | None = None) -> float | None:
    """Seconds a running, idle daemon has not saved its ``status`` (output read-only or full, or hung), else None.

    A fill may hold one status for long ("filling ...", "reading which scans ...": both may wait for
    a project's lock); an idle daemon saves it at every poll.
    """
    last_poll, activity = status.get("last_poll"), str(status.get("activity", ""))
    if not running or not isinstance(last_poll, (int, float)) or activity.startswith(BUSY):
        return None
    age = (time.time() if now is None else now) - last_poll
    poll_s = status.get("poll_s")
    limit = max(STALE_POLLS * (poll_s if isinstance(poll_s, (int, float)) else 1.0), STALE_MIN_S)
    return age if age > limit else None

