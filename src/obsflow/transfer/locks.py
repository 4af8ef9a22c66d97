"""The filler's lock files as the sync and verify see them, read from each ``locks`` folder of the config.

The filler holds ``<locks>/<PROJ>.lock`` while it appends to a project's files; a file whose
relative path has a component equal to a lock's name belongs to that fill.  A lock whose holder
died (*gone*) marks a fill a crash cut off, not yet rolled back: its files may hold a half-written
scan until the filler restarts.  The daemon's own lock (``obsflow-online``) guards no project.
A local folder is read with ``os``, a remote one in one ssh command; a folder that is not there
holds no lock, one that cannot be read raises TransportError (it must never read as empty).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from obsflow.config import Config, Location, parse_location
from obsflow.errors import ObsflowError, TransportError
from obsflow.lock import DAEMON_LOCK, LOCK_SUFFIX, LockInfo, is_stale, read_lock
from obsflow.transfer.remote import Shell, shell_path

__all__ = ["FillerLock", "FillerLocks", "guarded_by", "read_filler_locks"]


@dataclass(frozen=True)
class FillerLock:
    """One project lock: its name, the config's lock folder it is in, and its holder (None: the
    lock file is being written or cannot be read: a lock all the same)."""

    name: str
    entry: str
    holder: LockInfo | None

    @property
    def gone(self) -> bool:
        """Its holder died: a fill cut off by a crash, kept locked until the filler rolls it back."""
        return self.holder is not None and is_stale(self.holder)

    @property
    def holder_text(self) -> str:
        return self.holder.describe() if self.holder is not None else "holder unreadable"


@dataclass
class FillerLocks:
    """Every project lock found (by name), and the lock folders that do not exist."""

    locks: dict[str, FillerLock] = field(default_factory=dict)
    missing_folders: list[str] = field(default_factory=list)


def read_filler_locks(config: Config, shell: Shell) -> FillerLocks:
    """The filler locks in every ``locks`` folder of the config (local or remote)."""
    found = FillerLocks()
    for entry in config.locks:
        where = parse_location(entry)
        held = _remote_locks(entry, where, shell) if where.is_remote else _local_locks(entry, Path(where.path))
        if held is None:
            found.missing_folders.append(entry)
            continue
        for name, holder in held.items():
            if name != DAEMON_LOCK:  # held for weeks by the running daemon: it guards no project
                found.locks.setdefault(name, FillerLock(name, entry, holder))
    return found


def guarded_by(path: str, locks: FillerLocks) -> FillerLock | None:
    """The lock that guards ``path`` (one of its components is the lock's name), if any."""
    for part in path.split("/"):
        if part in locks.locks:
            return locks.locks[part]
    return None


_REMOTE_LOCKS = """\
cd -- {dir} 2>/dev/null || {{
  d={dir}; while [ ! -e "$d" ] && [ "$d" != / ] && [ "$d" != . ]; do d=$(dirname -- "$d"); done
  [ -e {dir} ] || [ ! -x "$d" ] || {{ printf '{missing}'; exit 0; }}
  printf 'cannot enter the folder\\n' >&2; exit 3; }}
[ -r . ] || {{ printf 'cannot read the folder\\n' >&2; exit 3; }}
for f in *{suffix}; do [ -f "$f" ] || continue; printf '%s\\0' "$f"; cat -- "$f"; printf '\\0'; done
"""


def _local_locks(entry: str, folder: Path) -> dict[str, LockInfo | None] | None:
    """``{name: holder}`` of the locks in a local folder (holder None: unreadable, a lock all the same).

    None for a folder that is not there (no filler has written there yet, as over ssh); one that
    cannot be read raises TransportError, never reads as empty.
    """
    try:
        names = [name for name in os.listdir(folder) if name.endswith(LOCK_SUFFIX)]
    except FileNotFoundError:
        return None
    except OSError as err:
        raise TransportError(f"cannot read the filler's locks: cannot list the folder: {err.strerror}; "
                             "not copying what they may guard", entry) from err  # fmt: skip
    found: dict[str, LockInfo | None] = {}
    for name in names:
        try:
            info = read_lock(folder / name)
        except OSError:
            info = None
        else:
            if info is None:
                continue  # released meanwhile
        found[name[: -len(LOCK_SUFFIX)]] = info
    return found


_NO_FOLDER = b"no such folder"  # the script's answer for a missing folder (a lock record holds a NUL)


def _remote_locks(entry: str, where: Location, shell: Shell) -> dict[str, LockInfo | None] | None:
    """``{name: holder}`` of the locks in a remote folder, in one ssh command (holder None: unreadable);
    None for a folder that is not there."""
    script = _REMOTE_LOCKS.format(dir=shell_path(where.path), suffix=LOCK_SUFFIX, missing=_NO_FOLDER.decode())
    try:
        out = shell.run(where, script)
    except ObsflowError as err:
        raise TransportError(f"cannot read the filler's locks: {err.what}; not copying what they may guard",
                             entry) from err  # fmt: skip
    if out == _NO_FOLDER:
        return None
    fields = out.split(b"\0")
    return {name.decode()[: -len(LOCK_SUFFIX)]: _lock_info(body)
            for name, body in zip(fields[0::2], fields[1::2], strict=False) if name}  # fmt: skip


def _lock_info(body: bytes) -> LockInfo | None:
    try:
        return LockInfo.from_json(body)
    except (ValueError, TypeError):
        return None  # being written right now, or not ours: a lock all the same
