"""The undo journal: crash-safe fills in O(scan), never a full copy of the file.

Before a fill changes any file it records, per file, the old length and the few
bytes it will overwrite in place (the header block holding NAXIS2, the padded
tail block, the index's ``last_modified`` line).  The journal is written
atomically and fsynced *before* the first byte changes.  Deleting it is the
commit point.  :func:`recover` puts every journaled file back as it was: truncate
to the old length (or remove a file the fill created), write the saved bytes
back, fsync, then delete the journal.  It is idempotent, so a crash during
recovery is recovered again at the next start.

Invariant: after any crash and :func:`recover`, every journaled file is exactly
as it was before the fill; after a commit, every file is complete and new.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from obsflow.atomic import fsync_dir, write_atomic
from obsflow.errors import IntegrityError, OutputError

__all__ = ["FileUndo", "Journal", "recover"]

log = logging.getLogger(__name__)


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
    def from_json(cls, data: dict[str, object]) -> FileUndo:
        patches = [(int(off), base64.b64decode(blob)) for off, blob in data["patches"]]  # type: ignore[union-attr]
        old_size = data["old_size"]
        return cls(str(data["path"]), None if old_size is None else int(old_size), patches)  # type: ignore[arg-type]


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
        payload = json.dumps({"files": [u.to_json() for u in self.entries.values()]})
        write_atomic(self.path, payload)
        self._saved = len(self.entries)

    def commit(self) -> None:
        """The fill is complete and durable: forget how to undo it."""
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
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
    """Roll back the fill journaled at ``journal_path``, if any; return the files restored.

    Each restored file is logged at ``level``: WARNING for a crashed fill found later, INFO for
    a fill rolling itself back (its caller reports the error).
    """
    journal_path = Path(journal_path)
    try:
        return _roll_back(journal_path, level)
    except OSError as err:  # a read-only or failing disk: the journal stays, to be rolled back when it can be
        where = err.filename or journal_path
        raise OutputError(f"cannot roll back the journaled fill: {err.strerror or err}", where) from err


def _roll_back(journal_path: Path, level: int) -> list[str]:
    try:
        data = json.loads(journal_path.read_text())
    except FileNotFoundError:
        return []
    except ValueError as err:
        # write_atomic never leaves a half journal, so this is damage from outside.
        raise IntegrityError(f"journal is unreadable: {err}", journal_path) from err
    undos = [FileUndo.from_json(item) for item in data["files"]]
    # Restore in reverse order of recording: later files may depend on earlier ones.
    for undo in reversed(undos):
        _restore(undo)
        log.log(level, "rolled back %s to %s bytes", undo.path, undo.old_size)
    journal_path.unlink(missing_ok=True)
    fsync_dir(journal_path.parent)
    return [u.path for u in undos]
