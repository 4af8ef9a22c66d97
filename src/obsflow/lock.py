"""Lock files: the filler takes ``<locks>/<NAME>.lock`` while it writes; consumers honour it.

A lock is a small JSON record (pid, host, user, start time) created with
``O_CREAT | O_EXCL``, so two writers can never both hold it.  It is *stale* when it
names this host and its pid is gone, or when it is older than ``stale_after_s``
(a lock from another host is only ever stale by age).  A stale lock is logged and
cleared; a live one is waited on up to a timeout, then :class:`LockError`.

Locks are not flushed to disk: a lock guards a process, and no process outlives a crash of the
machine.  After one, a lock either is gone, or names a process that is gone (stale), or lost its
record with the crash (empty): unreadable and older than this boot, it is stale at once.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from obsflow.errors import LockError, OutputError

__all__ = [
    "DAEMON_LOCK", "LockInfo", "flocked", "held", "is_locked", "live_locks", "lock_held", "locks_in", "read_lock", "take_lock",
]  # fmt: skip

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
#: the online daemon's own lock (held while it runs, for weeks, on its host): it guards no project
DAEMON_LOCK = "obsflow-online"
DEFAULT_STALE_AFTER_S = 6 * 3600.0
UNREADABLE_STALE_AFTER_S = 60.0  # a lock file that is not ours and not JSON


@dataclass(frozen=True)
class LockInfo:
    """What a lock file says about its holder."""

    pid: int
    host: str
    user: str
    started: float  # unix time
    purpose: str = ""

    def describe(self) -> str:
        age = time.time() - self.started
        return f"pid {self.pid} on {self.host} ({self.purpose or 'writing'}, {age:.0f} s ago)"

    @classmethod
    def from_json(cls, text: str | bytes) -> LockInfo:
        """The record a lock file holds; ValueError or TypeError for anything but obsflow's JSON object.

        Checked field by field: a lock file is input from whoever can write the lock folder, and a
        record such as ``{"started": "yesterday"}`` would otherwise pass here and break every
        comparison made with it later (the sync and verify decide on its age and pid).
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("a lock record is a JSON object")
        info = cls(**data)  # TypeError for missing or unknown fields
        pid_ok = type(info.pid) is int and 0 < info.pid < 2**31  # what kill() takes
        numbers = pid_ok and type(info.started) in (int, float) and math.isfinite(info.started)
        if not (numbers and all(isinstance(value, str) for value in (info.host, info.user, info.purpose))):
            raise ValueError("a lock record's fields have the wrong types")
        return info


def lock_path(locks_dir: Path, name: str) -> Path:
    """``<locks_dir>/<name>.lock``."""
    return Path(locks_dir) / f"{name}{LOCK_SUFFIX}"


def read_lock(path: Path) -> LockInfo | None:
    """The lock's record, or None if there is no lock; an unreadable lock counts as held now."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LockInfo.from_json(text)
    except (ValueError, TypeError):
        # Not written by obsflow (ours are linked into place whole): live until it is old.
        try:
            started = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return LockInfo(pid=-1, host="?", user="?", started=started, purpose="unreadable")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: LockInfo, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> bool:
    """Stale: on this host, when its process is gone (however old: the filler daemon holds its
    lock for weeks); from another host, whose processes cannot be seen, when older than
    ``stale_after_s``."""
    if info.purpose == "unreadable":  # another program's file, or ours emptied by a crash of the machine
        boot = _boot_time()
        return time.time() - info.started > UNREADABLE_STALE_AFTER_S or (boot is not None and info.started < boot)
    if info.host == socket.gethostname():
        return not _holder_alive(info)
    return time.time() - info.started > stale_after_s


def _holder_alive(info: LockInfo) -> bool:
    """The lock's process is running, and is the one that took it (not a later one given its pid)."""
    if not _pid_alive(info.pid):
        return False
    started = _process_start(info.pid)
    return started is None or started <= info.started + 2.0  # /proc/stat btime has whole seconds


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (unix seconds), from /proc; None where that cannot be read."""
    boot = _boot_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, in ticks
    except (OSError, ValueError, IndexError):
        return None


def _boot_time() -> float | None:
    """When this machine booted (unix seconds, whole), from /proc/stat; None where that cannot be read."""
    try:
        return next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def is_locked(locks_dir: Path, name: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> bool:
    """True if ``name`` holds a live (not stale) lock in ``locks_dir``."""
    info = read_lock(lock_path(locks_dir, name))
    return info is not None and not is_stale(info, stale_after_s)


def locks_in(locks_dir: Path) -> dict[str, LockInfo]:
    """``{name: holder}`` of every lock in ``locks_dir``, live or stale (for consumers such as the sync)."""
    try:
        entries = list(Path(locks_dir).glob(f"*{LOCK_SUFFIX}"))
    except OSError:
        return {}
    held_now = {path.name[: -len(LOCK_SUFFIX)]: read_lock(path) for path in entries}
    return {name: info for name, info in held_now.items() if info is not None}  # None: released meanwhile


def live_locks(locks_dir: Path, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> set[str]:
    """Names of every live lock in ``locks_dir``."""
    return {name for name, info in locks_in(locks_dir).items() if not is_stale(info, stale_after_s)}


def _try_create(path: Path, info: LockInfo) -> bool:
    """Create the lock whole or not at all: write a temp file, then hard-link it to the lock name.

    ``link`` fails if the name exists, like ``O_EXCL``, but the lock never exists half-written,
    so a writer killed at any instant leaves no unreadable lock behind (not flushed: see above).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(info)))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _create_or_fail(path: Path, info: LockInfo) -> bool:
    """:func:`_try_create`, a folder that cannot be written (read-only, full, no permission) an OutputError."""
    try:
        return _try_create(path, info)
    except OSError as err:
        raise OutputError(f"cannot create lock: {err.strerror or err}", path) from err


def lock_held(holder: str, waited_s: float) -> str:
    """The one line for a lock that did not come free: who holds it, how long it was waited for."""
    return f"lock held by {holder}; gave up after {waited_s:g} s"


def take_lock(
    locks_dir: Path,
    name: str,
    timeout_s: float = 60.0,
    purpose: str = "",
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    poll_s: float = 0.05,
) -> Path:
    """Create ``<locks_dir>/<name>.lock``, waiting up to ``timeout_s`` for a live holder.

    Raises LockError naming the holder if it does not come free in time, OutputError if the
    lock cannot be created at all (a read-only or full disk).
    """
    locks_dir = Path(locks_dir)
    path = lock_path(locks_dir, name)
    me = LockInfo(os.getpid(), socket.gethostname(), _user(), time.time(), purpose)
    deadline = time.monotonic() + timeout_s
    try:
        locks_dir.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(path)
    except OSError as err:
        raise OutputError(f"cannot create lock: {err.strerror or err}", path) from err
    while True:
        if _create_or_fail(path, me):
            return path
        holder = read_lock(path)
        if holder is not None and is_stale(holder, stale_after_s):
            log.warning("clearing stale lock %s held by %s", path, holder.describe())
            _remove_if_same(path, holder)
            continue
        if time.monotonic() >= deadline:
            who = holder.describe() if holder else "unknown holder"
            raise LockError(lock_held(who, timeout_s), path, holder=who)
        time.sleep(poll_s)


def _remove_dead_temps(path: Path) -> None:
    """Temp files of takers killed before they linked their lock (``.<name>.lock.<pid>.<ns>``)."""
    for tmp in path.parent.glob(f".{path.name}.*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _remove_if_same(path: Path, expected: LockInfo) -> None:
    """Remove a stale lock unless someone replaced it meanwhile.

    Compare and remove under an flock of a side file (``.<name>.lock.break``), taken by every
    process that clears this lock: two that found the same stale lock never both clear it
    (the second would remove the fresh lock the first took just after).
    """
    with flocked(path.parent / f".{path.name}.break"):
        if read_lock(path) == expected:
            path.unlink(missing_ok=True)


def release_lock(path: Path) -> None:
    """Remove a lock this process holds."""
    info = read_lock(path)
    if info is not None and info.pid == os.getpid() and info.host == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def flocked(side_file: Path) -> Iterator[None]:
    """Run the block under an exclusive flock of ``side_file`` (created if missing, kept afterwards).

    For short read-change-write sections that every process doing them enters this way; the
    kernel releases the flock if the process dies inside.
    """
    fd = os.open(side_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def held(locks_dir: Path, name: str, timeout_s: float = 60.0, purpose: str = "") -> Iterator[Path]:
    """``with held(dir, "AGBT26A_001_01"):`` hold the lock for the block."""
    path = take_lock(locks_dir, name, timeout_s=timeout_s, purpose=purpose)
    try:
        yield path
    finally:
        release_lock(path)


@functools.cache  # a process's user does not change: /etc/passwd is read once, not per lock
def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "?")
