"""The scan-state engine: pure bookkeeping from scan events to fill actions.

It knows which scans the telescope has finished (from any :class:`~obsflow.online.events.ScanEventSource`),
which are already in the SDFITS files, and which failed and when to retry them.
It decides, without any I/O, what to fill next: every finished scan not yet
filled, oldest first, so a scan missed while the daemon was down is caught up in
order and never filled twice.  A scan that keeps failing is retried with
exponential back-off (capped); only failures that say the raw data are bad count
toward giving up on it (reported, not fatal): a busy lock or a full disk passes,
so those are retried for as long as they last.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from obsflow.online.events import ScanEvent, ScanKey

__all__ = ["Engine", "Failure", "FillAction"]

PROJECT_CHANGES_KEPT = 100  # the telescope's last project changes, for a look back (not every one for months)


@dataclass(frozen=True)
class FillAction:
    """Fill one finished scan of one project."""

    project: str
    key: ScanKey
    backends: tuple[str, ...]
    attempt: int  # 1 for the first try
    # Another failure on the raw data would give up on the scan: a fill may now leave out a bank file
    # that never came (and fill the banks that did) rather than skip the whole scan.
    is_last_try: bool = False


@dataclass
class Failure:
    """A scan that failed to fill: how often, the last error, when to try again."""

    attempts: int
    last_error: str
    retry_at: float
    given_up: bool = False
    counted: int = 0  # the attempts that failed on the raw data (only these lead to giving up)


@dataclass
class ProjectState:
    """What the engine knows of one project."""

    finished: dict[ScanKey, tuple[str, ...]] = field(default_factory=dict)  # key -> backends, in order seen
    started: ScanKey | None = None  # the scan in progress, if any
    filled: set[ScanKey] = field(default_factory=set)
    filled_known: bool = False  # the output files were read: until then nothing is filled (it might be there)
    failures: dict[ScanKey, Failure] = field(default_factory=dict)
    ended_at: dict[ScanKey, float] = field(default_factory=dict)  # when each scan ended, for the lag
    seen_finished_at: dict[ScanKey, float] = field(default_factory=dict)  # when its end was seen
    last_filled: ScanKey | None = None
    # Scans that will never be filled: the log has no SCAN FINISHED for them, and a later scan
    # started (the telescope stopped them, or M&C crashed); each maps to that later scan's
    # project and key (another project's, when the telescope went on with another project).
    never_finished: dict[ScanKey, tuple[str, ScanKey]] = field(default_factory=dict)
    latest_started: ScanKey | None = None  # the scan that started last, by its start timestamp
    last_event_at: float = 0.0  # when the source last saw something of it (its log changed)


class Engine:
    """Events in, fill actions out; outcomes of fills fed back with :meth:`filled` / :meth:`failed`."""

    def __init__(self, retry_limit: int = 5, backoff_s: float = 2.0, max_backoff_s: float = 300.0) -> None:
        self.retry_limit = retry_limit
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.projects: dict[str, ProjectState] = {}
        self.active_project: str | None = None
        self.project_changes: deque[tuple[float, str]] = deque(maxlen=PROJECT_CHANGES_KEPT)

    def project(self, name: str) -> ProjectState:
        return self.projects.setdefault(name, ProjectState())

    def observe(self, event: ScanEvent) -> None:
        """Take in one event from a scan-event source."""
        state = self.project(event.project)
        state.last_event_at = max(state.last_event_at, event.seen_at)
        if event.project != self.active_project and event.kind in ("started", "project"):
            self.active_project = event.project
            self.project_changes.append((event.seen_at, event.project))
        if event.kind == "started":
            if state.started not in (None, event.key) and state.started not in state.finished:
                state.never_finished[state.started] = (event.project, event.key)  # type: ignore[index]
            state.started = event.key
            self._stopped_by(event)
        elif event.kind == "finished":
            state.never_finished.pop(event.key, None)  # late, but finished after all
            if event.key not in state.finished:
                state.finished[event.key] = event.backends
                state.ended_at[event.key] = _ended_at(event)
                state.seen_finished_at[event.key] = event.seen_at
            if state.started == event.key:
                state.started = None

    def _stopped_by(self, event: ScanEvent) -> None:
        """Across projects, a scan that started before another project's never finishes: one telescope.

        By the start timestamps, not the order of events: at a restart each project's log is read
        whole, the oldest log first, so one project's scans may come after a later one's.
        """
        state, key = self.project(event.project), event.key
        for name, other in self.projects.items():
            if name == event.project:
                continue
            started, latest = other.started, other.latest_started
            if started is not None and started not in other.finished and "" < started.timestamp < key.timestamp:
                other.never_finished[started] = (event.project, key)
                other.started = None
            if latest is not None and "" < key.timestamp < latest.timestamp and key not in state.finished:
                state.never_finished[key] = (name, latest)  # a late FINISHED still takes it back
        if state.latest_started is None or key.timestamp > state.latest_started.timestamp:
            state.latest_started = key

    def unknown_filled(self) -> list[str]:
        """Projects with finished scans, or scans the log never finished, whose output files have not
        been read yet (a project whose only scan was stopped may hold it, filled by hand)."""
        return [name for name, state in self.projects.items()
                if (state.finished or state.never_finished) and not state.filled_known]  # fmt: skip

    def already_filled(self, project: str, keys: set[ScanKey]) -> None:
        """Scans found in the output files at start-up: never fill them again.

        A failure remembered for one of them is over, and a scan the log never finished is no
        longer "not filled" (an operator filled it by hand).
        """
        state = self.project(project)
        state.filled |= keys
        state.filled_known = True
        for key in keys:
            state.failures.pop(key, None)
            state.never_finished.pop(key, None)

    def read_filled_again(self, project: str) -> None:
        """Someone else wrote to the project's files (a scan filled by hand): ask which scans they hold."""
        self.project(project).filled_known = False

    def restore_failures(self, project: str, failures: dict[ScanKey, Failure]) -> None:
        """Failure bookkeeping saved before a restart."""
        self.project(project).failures.update(failures)

    def restore_never_finished(self, project: str, scans: dict[ScanKey, tuple[str, ScanKey]]) -> None:
        """Scans found never finished before the project was forgotten (what stopped each may be forgotten too)."""
        self.project(project).never_finished.update(scans)

    def next_actions(self, now: float) -> list[FillAction]:
        """Every finished, unfilled scan whose time has come, in scan-log order per project.

        The active project's come first: its live scans never wait behind another's backlog.
        """
        actions = []
        for name, state in sorted(self.projects.items(), key=lambda item: item[0] != self.active_project):
            if not state.filled_known:
                continue
            for key, backends in state.finished.items():
                if key in state.filled:
                    continue
                failure = state.failures.get(key)
                if failure is not None and (failure.given_up or failure.retry_at > now):
                    continue
                attempt = 1 + (failure.attempts if failure else 0)
                is_last_try = 1 + (failure.counted if failure else 0) >= self.retry_limit
                actions.append(FillAction(name, key, backends, attempt, is_last_try))
        return actions

    def filled(self, action: FillAction) -> None:
        state = self.project(action.project)
        state.filled.add(action.key)
        state.failures.pop(action.key, None)
        state.last_filled = action.key

    def failed(self, action: FillAction, error: str, now: float, counts: bool = True) -> Failure:
        """Record a failed fill and back off exponentially (capped).

        Give up after ``retry_limit`` failures that ``counts``, those of the raw data; a
        transient failure (busy lock, full disk) is retried for as long as it lasts.
        """
        state = self.project(action.project)
        previous = state.failures.get(action.key)
        attempts = (previous.attempts if previous else 0) + 1
        counted = (previous.counted if previous else 0) + int(counts)
        failure = Failure(attempts, error, now + self.backoff(attempts), given_up=counted >= self.retry_limit,
                          counted=counted)  # fmt: skip
        state.failures[action.key] = failure
        return failure

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure: doubling from ``backoff_s``, capped."""
        return min(self.backoff_s * 2 ** min(attempts - 1, 30), self.max_backoff_s)

    def is_finished_with(self, project: str, now: float, idle_s: float) -> bool:
        """Nothing left to do for the project: not the current one, no scan under way or to fill (each
        filled or given up), its output files read, and nothing new of it for ``idle_s`` seconds."""
        state = self.project(project)
        return (
            project != self.active_project
            and (state.started is None or state.started in state.never_finished)
            and now - state.last_event_at >= idle_s
            and (state.filled_known or not (state.finished or state.never_finished))
            and all(failure.given_up for failure in state.failures.values())
            and not self.pending(project)
        )

    def forget(self, project: str) -> ProjectState:
        """Drop all the engine knows of the project (it is finished with); if it is seen again, it is new."""
        return self.projects.pop(project)

    def has_work(self) -> bool:
        """Any finished scan still to fill, now or at a retry."""
        return any(self.pending(name) for name in self.projects)

    def pending(self, project: str) -> list[ScanKey]:
        """Finished scans not yet filled (including those waiting for a retry)."""
        state = self.project(project)
        return [k for k in state.finished if k not in state.filled and not _given_up(state, k)]


def _ended_at(event: ScanEvent) -> float:
    """When the scan ended: its logged end, unless the telescope clock says after it was seen."""
    if event.finished_at is None:
        return event.seen_at
    return min(event.finished_at, event.seen_at)


def _given_up(state: ProjectState, key: ScanKey) -> bool:
    failure = state.failures.get(key)
    return failure is not None and failure.given_up
