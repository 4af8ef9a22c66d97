"""The undo journal: crash-safe fills in O(scan), never a full copy of the file.

Before a fill changes any file it records, per file, the old length and the few
bytes it will overwrite in place (the header block holding NAXIS2, the padded
tail block, the index's ``last_modified`` line).  The journal is written
atomically and fsynced *before* the first byte changes.  Deleting it is the
commit point.  :func:`recover` puts every journaled file back as it was: truncate
to the old length (or remove a file the fill created), write the saved bytes
back, fsync, then delete the journal.  It is idempotent, so a crash during
recovery is recovered again at the next start.

A fill may leave its flush for later (``flush = "deferred"``, as PostgreSQL's
``synchronous_commit = off``): once every byte is written it renames its journal to
``<PROJ>.written`` and returns, its files complete in the page cache but not yet on
disk.  Whoever next holds the project's lock (the daemon when idle, the next fill, a
restart) settles it: on the same boot the files are complete (the kernel holds what
the process wrote, even if the process died), so they are flushed and the journal
deleted (rolled forward); after a reboot (another ``boot_id``) the unflushed bytes may
be lost, so the fill is rolled back, whole, to be filled again from the raw data.

Invariant: after any crash and :func:`recover`, every journaled file is exactly
as it was before the fill, or (a written fill, same boot) complete and new; after a
commit, every file is complete, new and durable.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from obsflow.atomic import fsync_dir, write_atomic
from obsflow.errors import IntegrityError, OutputError

__all__ = ["FileUndo", "Journal", "boot_id", "recover", "written_path"]

log = logging.getLogger(__name__)

WRITTEN_SUFFIX = ".written"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """This boot's id (Linux), or None where there is none: a written fill then cannot be told from a lost one."""
    return _boot_id_in(_BOOT_ID)


@functools.lru_cache(maxsize=4)  # it cannot change while this process runs: read once, not per fill
def _boot_id_in(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def written_path(journal_path: Path) -> Path:
    """Where a fill that wrote everything but left its flush for later keeps its journal."""
    return Path(journal_path).with_suffix(WRITTEN_SUFFIX)


@dataclass
class FileUndo:
    """How to put one file back: its old length (None: it did not exist) and bytes to restore."""

    path: str
    old_size: int | None
    patches: list[tuple[int, bytes]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "old_size": self.old_size,
            "patches": [[offset, base64.b64encode(data).decode()] for offset, data in self.patches],
        }

    @classmethod
    def from_json(cls, data: object) -> FileUndo:
        """The record :meth:`to_json` wrote; ValueError or TypeError saying what is wrong for any other shape.

        Checked in full before anything is restored: a rollback must not stop half way on a bad entry.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a file entry is a {type(data).__name__}, not an object")
        missing = [key for key in ("path", "old_size", "patches") if key not in data]
        if missing:
            raise ValueError(f"a file entry has no {missing[0]!r}")
        path, old_size, patches = data["path"], data["old_size"], data["patches"]
        if not isinstance(path, str) or not path:
            raise ValueError("a file entry's path is not a file name")
        if old_size is not None and not _is_count(old_size):
            raise ValueError(f"old_size of {path!r} is not a size")
        if not isinstance(patches, list):
            raise TypeError(f"patches of {path!r} are not a list")
        return cls(path, old_size, [_patch_from_json(path, patch) for patch in patches])


def _is_count(value: object) -> bool:
    """A size or offset as JSON holds it: a non-negative int (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _patch_from_json(path: str, patch: object) -> tuple[int, bytes]:
    """One saved ``[offset, base64 bytes]`` of ``path``; ValueError if it is not that."""
    if not (isinstance(patch, list) and len(patch) == 2 and _is_count(patch[0]) and isinstance(patch[1], str)):
        raise ValueError(f"a patch of {path!r} is not [offset, base64 bytes]")
    try:
        # validate: by default foreign characters are dropped, which would restore the wrong bytes
        return patch[0], base64.b64decode(patch[1], validate=True)
    except binascii.Error as err:
        raise ValueError(f"a patch of {path!r} is not base64: {err}") from err


def _undos_from_json(data: object) -> list[FileUndo]:
    """Every file's undo record in a journal as :meth:`Journal.save` wrote it; ValueError or TypeError if not."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise TypeError("not an object with a list of files")
    return [FileUndo.from_json(item) for item in data["files"]]


def undo_for(path: Path, patch_ranges: list[tuple[int, int]] = ()) -> FileUndo:  # type: ignore[assignment]
    """The undo record of ``path`` as it is now: its length, and the bytes in ``patch_ranges`` (offset, length)."""
    path = Path(path)
    if not path.exists():
        return FileUndo(str(path), None)
    size = path.stat().st_size
    patches = []
    with open(path, "rb") as handle:
        for offset, length in patch_ranges:
            handle.seek(offset)
            patches.append((offset, handle.read(length)))
    return FileUndo(str(path), size, patches)


class Journal:
    """One fill's undo journal, stored at ``path`` (``<out>/.obsflow/journal/<PROJ>.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, FileUndo] = {}
        self._saved = 0  # how many entries the journal on disk holds

    def record(self, undo: FileUndo) -> None:
        """Remember how to undo one file (the first record of a file wins: it is the oldest state)."""
        self.entries.setdefault(undo.path, undo)

    def save(self) -> None:
        """Write the journal durably; call before changing any file it names."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"files": [u.to_json() for u in self.entries.values()], "boot": boot_id()})
        write_atomic(self.path, payload)
        self._saved = len(self.entries)

    def commit(self) -> None:
        """The fill is complete and durable: forget how to undo it."""
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
        self.entries.clear()
        self._saved = 0

    def mark_written(self) -> None:
        """The fill is complete but not flushed: the next holder of the project's lock settles it (see above).

        No flush: after a crash of the machine this rename may be lost too, and the fill is rolled back either way.
        """
        os.replace(self.path, written_path(self.path))
        self.entries.clear()
        self._saved = 0

    def rollback(self) -> None:
        """Undo this fill now (the files go back to their recorded state)."""
        if self._saved != len(self.entries):  # saved already: saving again could fail on a full disk
            self.save()
        recover(self.path, level=logging.INFO)  # the failed fill is reported by its caller
        self.entries.clear()
        self._saved = 0


def _restore(undo: FileUndo) -> None:
    path = Path(undo.path)
    if undo.old_size is None:
        if path.exists() or path.is_symlink():
            path.unlink()
            fsync_dir(path.parent)
        return
    if not path.exists():
        raise IntegrityError("journaled file vanished; cannot roll back", path)
    with open(path, "r+b") as handle:
        # Old header bytes first (NAXIS2 back to the old count), then drop the new
        # rows: a reader never sees a row count pointing past the end of the file.
        for offset, data in undo.patches:
            handle.seek(offset)
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        handle.truncate(undo.old_size)
        os.fsync(handle.fileno())


def recover(journal_path: Path, level: int = logging.WARNING) -> list[str]:
    """Settle the fills journaled at ``journal_path`` and beside it; return the files rolled back.

    A fill under way when it stopped is rolled back; a written one is flushed and kept if this is
    still the boot it was written in, else rolled back (see the module's notes).  Each restored
    file is logged at ``level``: WARNING for a crashed fill found later, INFO for a fill rolling
    itself back (its caller reports the error).
    """
    journal_path = Path(journal_path)
    try:
        restored = _roll_back(journal_path, level)  # the newer of the two: a written fill is settled before the next
        return restored + _settle_written(written_path(journal_path), level)
    except OSError as err:  # a read-only or failing disk: the journal stays, to be rolled back when it can be
        where = err.filename or journal_path
        raise OutputError(f"cannot roll back the journaled fill: {err.strerror or err}", where) from err


def _read_journal(journal_path: Path) -> tuple[list[FileUndo], object] | None:
    """The journal's undo records and the boot it was written in; None if there is no journal."""
    try:
        data = json.loads(journal_path.read_text())
        return _undos_from_json(data), data.get("boot")
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        # write_atomic never leaves a half journal, so this is damage from outside: keep it, touch no file.
        raise IntegrityError(f"journal is unreadable: {err}", journal_path) from err


def _roll_back(journal_path: Path, level: int) -> list[str]:
    journal = _read_journal(journal_path)
    if journal is None:
        return []
    undos, _ = journal
    # Restore in reverse order of recording: later files may depend on earlier ones.
    for undo in reversed(undos):
        _restore(undo)
        log.log(level, "rolled back %s to %s bytes", undo.path, undo.old_size)
    journal_path.unlink(missing_ok=True)
    fsync_dir(journal_path.parent)
    return [u.path for u in undos]


def _settle_written(journal_path: Path, level: int) -> list[str]:
    """Flush and keep a written fill of this boot; roll back one of another boot (its bytes may be lost)."""
    journal = _read_journal(journal_path)
    if journal is None:
        return []
    undos, written_in = journal
    if written_in is None or written_in != boot_id():
        log.warning("a fill written before the machine restarted was never flushed: rolling it back (%s)",
                    journal_path.name)  # fmt: skip
        return _roll_back(journal_path, level)
    try:
        for undo in undos:
            _flush(Path(undo.path))
    except OSError as err:  # the journal stays: tried again by the next holder of the lock
        raise OutputError(f"cannot flush the written fill: {err.strerror or err}", err.filename or journal_path) from err
    journal_path.unlink(missing_ok=True)
    fsync_dir(journal_path.parent)
    return []


def _flush(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return  # removed since (a link the fill made, then a user): nothing of it to flush
    except OSError as err:
        if err.errno == errno.ELOOP:
            return  # the flag link beside the FITS file: made durable when it was made
        raise
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
