"""Scan-event sources: where the engine learns that scans start and finish.

Every source implements one small interface, :class:`ScanEventSource` (``poll()``
returns the new events since the last call), so another source, such as a
monitor-and-control feed of JSON lines on a socket, can be added without
touching the engine.  Two are here:

* :class:`ScanLogSource` polls ``<raw_root>/<PROJECT>/ScanLog.fits`` files (the
  telescope rewrites them as scans start and end; a half-rewritten log is simply
  read again on the next poll);
* :class:`JsonLinesSource` reads events as JSON lines from any text stream.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, NamedTuple, Protocol

from obsflow.errors import InputError

__all__ = [
    "JsonLinesSource", "ScanEvent", "ScanEventSource", "ScanKey", "ScanLogSource", "projects_not_present",
    "raw_root_entries",
]

log = logging.getLogger(__name__)

EventKind = Literal["project", "started", "finished"]


class ScanKey(NamedTuple):
    """A scan instance: its number and its start timestamp (scan numbers can repeat)."""

    scan: int
    timestamp: str


@dataclass(frozen=True)
class ScanEvent:
    """A project became active, or a scan started or finished."""

    kind: EventKind
    project: str
    key: ScanKey
    backends: tuple[str, ...] = ()
    seen_at: float = 0.0  # wall time the source saw it
    finished_at: float | None = None  # unix time the scan ended, as the telescope logged it (if known)

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "project": self.project, "scan": self.key.scan,
             "timestamp": self.key.timestamp, "backends": list(self.backends), "finished_at": self.finished_at}
        )  # fmt: skip

    @classmethod
    def from_json(cls, line: str, seen_at: float) -> ScanEvent:
        data = json.loads(line)
        return cls(
            kind=data["kind"],
            project=data["project"],
            key=ScanKey(int(data["scan"]), str(data["timestamp"])),
            backends=tuple(data.get("backends", ())),
            seen_at=seen_at,
            finished_at=None if data.get("finished_at") is None else float(data["finished_at"]),
        )


class ScanEventSource(Protocol):
    """Anything that can say what happened since it was last asked."""

    def poll(self) -> list[ScanEvent]:
        """New events since the previous call, oldest first (may be empty)."""
        ...

    def forget(self, project: str) -> None:
        """The daemon is finished with the project: keep nothing of it, and say its scans again, as
        a new project's, only if it changes (a later event of it)."""
        ...


@dataclass(frozen=True)
class LoggedScan:
    """What a scan log says of one scan: enough to emit events."""

    key: ScanKey
    finished: bool
    backends: tuple[str, ...]
    finished_at: float | None = None  # unix time of its SCAN FINISHED, if the log says


ScanLogReader = Callable[[Path], list[LoggedScan]]


def raw_root_entries(raw_root: Path) -> list[Path]:
    """What the raw data root holds (a folder per project); InputError if it cannot be read (missing, unmounted)."""
    try:
        return list(raw_root.iterdir())
    except OSError as err:
        raise InputError(f"cannot read raw data root: {err.strerror}", raw_root) from err


def projects_not_present(raw_root: Path, names: Iterable[str]) -> list[str]:
    """The ``names`` with no project folder in the raw root: a typo, or a project whose first scan has not started.

    A name is one folder of the raw root, as :class:`ScanLogSource` matches it (``../raw`` is none).
    """
    return [name for name in names if not _is_project_folder(raw_root, name)]


def _is_project_folder(raw_root: Path, name: str) -> bool:
    if name in ("", ".", "..") or "/" in name:
        return False
    try:
        return (raw_root / name).is_dir()
    except OSError:  # cannot be looked at: nothing the daemon can follow
        return False


#: an old or forgotten project's log is looked at this often (seconds), and whenever a project folder comes or goes
FULL_LISTING_S = 10.0
#: a folder's mtime may move in steps this long (coarse file system clocks): changed lately means look again
_MTIME_TICK_S = 2.0


class ScanLogSource:
    """Polls every project's ``ScanLog.fits`` under ``raw_root`` and emits what changed.

    Only logs whose size or mtime changed are re-read.  The most recently written
    log is the active project.  ``projects`` names the only projects followed;
    without it, every project whose log changed within ``recent_s`` seconds (all,
    if None): a raw root holds years of archive, which is not the daemon's to fill.
    Older ones are followed too when their log changed after ``since`` (the previous
    daemon's last poll: a long downtime) or ``also_follow(name)`` says so (an output
    folder: the project is being filled); the rest are named once in the log.
    A project the daemon is finished with (:meth:`forget`) is no longer read, until its log changes.
    Old and forgotten projects are looked at only every ``full_listing_s`` or when a project
    folder comes or goes, so a change of their log is seen within that time, not at once.
    """

    def __init__(
        self,
        raw_root: Path,
        read_log: ScanLogReader,
        projects: Iterable[str] = (),
        recent_s: float | None = None,
        since: float | None = None,
        also_follow: Callable[[str], bool] | None = None,
        full_listing_s: float = FULL_LISTING_S,
    ) -> None:
        self.raw_root = Path(raw_root)
        self.full_listing_s = full_listing_s
        self._warm: list[Path] = []  # the raw root's entries looked at every poll
        self._root_mtime: int | None = None
        self._listed_at = -math.inf
        self.read_log = read_log
        self.projects = set(projects)
        self.recent_s = recent_s
        self.since = since
        self.also_follow = also_follow
        self._said_left = False
        self._stamps: dict[str, tuple[int, int]] = {}
        self._emitted: dict[str, set[tuple[EventKind, ScanKey]]] = {}  # per project: forgotten with it
        # Projects forgotten, with the (size, mtime) of their log then: a change makes them new projects.
        self._forgotten: dict[str, tuple[int, int]] = {}
        self._active: str | None = None

    @property
    def followed(self) -> set[str]:
        """The projects whose log is read whenever it changes."""
        return set(self._stamps)

    def forget(self, project: str) -> None:
        stamp = self._stamps.pop(project, None)
        if stamp is not None:
            self._forgotten[project] = stamp
        self._emitted.pop(project, None)

    def _logs(self) -> list[tuple[float, str, Path, tuple[int, int]]]:
        """(mtime, project, its ScanLog, (size, mtime_ns)) of each log to follow, oldest first.

        A raw root holds years of projects.  Those whose log is old (not followed) or finished
        with (forgotten) are looked at again only when the raw root itself changes (a project
        folder came or went) or every ``full_listing_s``; the others at every poll.  So a poll
        costs the followed projects, not the archive (5000 old projects: 47 ms a poll when each was looked at).
        """
        due = self._full_listing_due()
        full = due is not None
        entries = raw_root_entries(self.raw_root) if full else self._warm
        if due is not None:  # only a listing that worked: one that failed is tried again at the next poll
            self._root_mtime, self._listed_at = due
        oldest = None if self.projects or self.recent_s is None else time.time() - self.recent_s
        if oldest is not None and self.since is not None:
            oldest = min(oldest, self.since)
        found, left, warm = [], [], []
        for entry in entries:
            if self.projects and entry.name not in self.projects:
                continue
            scanlog = entry / "ScanLog.fits"
            try:
                stat = scanlog.stat()
            except OSError:
                warm.append(entry)  # a new project's folder comes before its log
                continue
            if self._forgotten.get(entry.name) == (stat.st_size, stat.st_mtime_ns):
                continue  # finished with, and its log unchanged since
            self._forgotten.pop(entry.name, None)
            if (oldest is not None and stat.st_mtime < oldest and entry.name not in self._stamps
                    and not (self.also_follow and self.also_follow(entry.name))):  # fmt: skip
                left.append((stat.st_mtime, entry.name))  # not observed lately (once followed, always followed)
                continue
            warm.append(entry)
            found.append((stat.st_mtime, entry.name, scanlog, (stat.st_size, stat.st_mtime_ns)))
        self._warm = warm
        if full:
            self._say_left_once(sorted(left))
        return sorted(found)

    def _full_listing_due(self) -> tuple[int | None, float] | None:
        """(the raw root's mtime, now) when the raw root is to be listed again, else None."""
        try:
            root_mtime = self.raw_root.stat().st_mtime_ns
        except OSError:
            root_mtime = None  # raw_root_entries says what is wrong
        now = time.monotonic()
        due = (root_mtime is None or root_mtime != self._root_mtime or now - self._listed_at >= self.full_listing_s
               # a folder made in the same clock tick as the last one leaves the mtime as it was
               or time.time() - root_mtime / 1e9 < _MTIME_TICK_S)  # fmt: skip
        return (root_mtime, now) if due else None

    def _say_left_once(self, left: list[tuple[float, str]]) -> None:
        if self._said_left or not left or self.recent_s is None:
            return
        self._said_left = True
        names = ", ".join(name for _, name in left[-20:]) + (", ..." if len(left) > 20 else "")
        log.info("not following %d project%s whose logs are older than %g h (name them with --projects): %s",
                 len(left), "s" if len(left) != 1 else "", self.recent_s / 3600, names)  # fmt: skip

    def poll(self) -> list[ScanEvent]:
        now = time.time()
        events: list[ScanEvent] = []
        for _mtime, project, scanlog, stamp in self._logs():
            if self._stamps.get(project) == stamp:
                continue
            try:
                logged = self.read_log(scanlog.parent)
            except InputError as err:
                log.info("scan log not readable yet, will retry: %s", err)
                continue  # being rewritten: the stamp is not stored, so it is read again
            except Exception as err:  # a log no reader foresaw: said once, read again when it changes
                log.error("cannot read scan log %s", scanlog, exc_info=err)
                self._stamps[project] = stamp
                continue
            self._stamps[project] = stamp
            events.extend(self._new_events(project, logged, now))
        return events

    def _new_events(self, project: str, logged: list[LoggedScan], now: float) -> list[ScanEvent]:
        events = []
        emitted = self._emitted.setdefault(project, set())
        for item in logged:
            kinds: list[EventKind] = ["started", "finished"] if item.finished else ["started"]
            for kind in kinds:
                marker = (kind, item.key)
                if marker in emitted:
                    continue
                emitted.add(marker)
                if kind == "started" and self._active != project:
                    self._active = project
                    events.append(ScanEvent("project", project, item.key, item.backends, now))
                ended = item.finished_at if kind == "finished" else None
                events.append(ScanEvent(kind, project, item.key, item.backends, now, ended))
        return events


class JsonLinesSource:
    """Events as JSON lines (``{"kind": "finished", "project": ..., "scan": 3, "timestamp": ...}``).

    Each poll takes whatever the stream has without waiting (a file, a pipe, or a socket
    wrapped with ``socket.makefile()``); a line not yet ended by its newline is kept for the
    next poll, since a writer may deliver it in pieces.  A stream with a file descriptor is
    read through that descriptor, switched to non-blocking; others (``io.StringIO``) with
    ``read()``.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._fd = _nonblocking_fd(stream)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may be split too
        self._unfinished = ""

    def poll(self) -> list[ScanEvent]:
        events = []
        now = time.time()
        *lines, self._unfinished = (self._unfinished + self._read_available()).split("\n")
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(ScanEvent.from_json(line, now))
            except (ValueError, KeyError) as err:
                log.warning("ignoring bad event line %r: %s", line[:80], err)
        return events

    def forget(self, project: str) -> None:
        """Nothing to forget: each event comes once, as it happens."""

    def _read_available(self) -> str:
        if self._fd is None:
            return self.stream.read()
        chunks = []
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break  # nothing more for now
            if not chunk:
                break  # end of the file (so far) or of the connection
            chunks.append(chunk)
        return self._decoder.decode(b"".join(chunks))


def _nonblocking_fd(stream: IO[str]) -> int | None:
    try:
        fd = stream.fileno()
        os.set_blocking(fd, False)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd
