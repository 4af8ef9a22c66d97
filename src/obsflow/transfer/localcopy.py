"""Pure-Python copy between two local folders, used only where rsync is missing.

Same guarantees as the rsync path: the data goes to ``<dir>/.rsync-partial/<name>`` (the
same hidden partial folder rsync uses, so listings ignore it and an interrupted copy resumes
from it), is hashed while written, fsynced, re-read and hashed, then *hard-linked* to the
final name (``link`` fails if the name exists: never an overwrite) and the partial removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import xxhash

from obsflow.atomic import fsync_dir
from obsflow.transfer.listing import xxh128_file
from obsflow.transfer.rsync import PARTIAL_DIR, Copied, RsyncResult, rsync_time_text

__all__ = ["python_copy"]

log = logging.getLogger(__name__)
_CHUNK = 4 << 20


def python_copy(
    source: Path, dest: Path, paths: Sequence[str], on_copied: Callable[[Copied], None] | None = None
) -> RsyncResult:
    """Copy ``paths`` from ``source`` to ``dest`` (both local); report like :func:`rsync_copy`."""
    result = RsyncResult()
    for path in paths:
        try:
            copied = _copy_one(source / path, dest / path, path)
        except FileExistsError:
            result.errors.append(f"{path}: appeared at the destination meanwhile; left alone")
            continue
        except OSError as err:
            result.errors.append(f"{path}: {err.strerror or err}")
            continue
        if copied is None:
            result.errors.append(f"{path}: checksum of the copy differs from the source; copy discarded")
            continue
        result.copied.append(copied)
        if on_copied is not None:
            on_copied(copied)
    result.returncode = 23 if result.errors else 0
    return result


def _copy_one(src: Path, dst: Path, relpath: str) -> Copied | None:
    if os.path.lexists(dst):
        raise FileExistsError(dst)
    partial_dir = dst.parent / PARTIAL_DIR
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / dst.name
    st = src.stat()
    digest = xxhash.xxh128()
    with open(src, "rb") as reader, open(partial, "ab+") as writer:
        done = writer.seek(0, os.SEEK_END)
        if done > st.st_size:  # not a prefix of this source: start over
            writer.truncate(0)
            done = 0
        writer.seek(0)
        while chunk := writer.read(_CHUNK) if done else b"":  # the resumed prefix counts in the hash
            digest.update(chunk)
        reader.seek(done)
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            digest.update(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(partial, st.st_mode & 0o7777)
    source_hash = xxh128_file(src)
    if digest.hexdigest() != source_hash or xxh128_file(partial) != source_hash:
        partial.unlink()
        return None
    try:
        os.link(partial, dst)
    finally:
        partial.unlink()
    fsync_dir(dst.parent)
    _remove_if_empty(partial_dir)
    log.debug("copied %s", relpath)
    return Copied(relpath, st.st_size, rsync_time_text(st.st_mtime_ns // 1_000_000_000), source_hash, st.st_size)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
