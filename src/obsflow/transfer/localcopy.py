"""Pure-Python copy between two local folders, used only where rsync is missing.

Same guarantees as the rsync path: the data goes to ``<dir>/.rsync-partial/<name>`` (the
same hidden partial folder rsync uses, so listings ignore it and an interrupted copy resumes
from it), is hashed while written, fsynced, re-read and hashed, then *hard-linked* to the
final name (``link`` fails if the name exists: never an overwrite) and the partial removed.
Every folder and file below the two roots is opened without following a symlink (``O_NOFOLLOW``
relative to its open parent), as rsync does: one put in place of a folder or file since the
listing could otherwise have the copy read or write anywhere.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import xxhash

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
            copied = _copy_one(source, dest, path)
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


def _copy_one(source: Path, dest: Path, relpath: str) -> Copied | None:
    """Copy one file, every step relative to an open folder that was reached without following a
    symlink: a folder or file on either side swapped for a symlink (to anywhere outside the roots)
    since the listing is refused, never read or written through (as rsync refuses it)."""
    *folders, name = relpath.split("/")
    with _folder(source, folders) as src_dir, _folder(dest, folders, create=True) as dst_dir:
        if _lexists(name, dst_dir):
            raise FileExistsError(relpath)
        with _folder(dest, [*folders, PARTIAL_DIR], create=True) as partial_dir:
            copied = _copy_into_partial(src_dir, partial_dir, name, relpath)
            if copied is None:
                os.unlink(name, dir_fd=partial_dir)
                return None
            try:
                os.link(name, name, src_dir_fd=partial_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
            finally:
                os.unlink(name, dir_fd=partial_dir)
        os.fsync(dst_dir)
        _remove_if_empty(PARTIAL_DIR, dst_dir)
    log.debug("copied %s", relpath)
    return copied


def _copy_into_partial(src_dir: int, partial_dir: int, name: str, relpath: str) -> Copied | None:
    """Append the rest of the source to its partial (resuming), fsync, hash both; None if they differ."""
    with _open_regular(name, src_dir, os.O_RDONLY) as reader, \
            _open_regular(name, partial_dir, os.O_RDWR | os.O_CREAT | os.O_APPEND) as writer:  # fmt: skip
        st = os.fstat(reader.fileno())
        done = writer.seek(0, os.SEEK_END)
        if done > st.st_size:  # not a prefix of this source: start over
            writer.truncate(0)
            done = 0
        digest = xxhash.xxh128()
        writer.seek(0)
        while chunk := writer.read(_CHUNK) if done else b"":  # the resumed prefix counts in the hash
            digest.update(chunk)
        reader.seek(done)
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            digest.update(chunk)
        writer.flush()
        os.fsync(writer.fileno())
        os.utime(writer.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fchmod(writer.fileno(), st.st_mode & 0o7777)
        source_hash = _xxh128_of(reader)
        if digest.hexdigest() != source_hash or _xxh128_of(writer) != source_hash:
            return None
    return Copied(relpath, st.st_size, rsync_time_text(st.st_mtime_ns // 1_000_000_000), source_hash, st.st_size)


@contextmanager
def _folder(root: Path, parts: Sequence[str], create: bool = False) -> Iterator[int]:
    """An open descriptor of ``root/parts...``, each part opened (or, with ``create``, made) below the
    last without following a symlink; OSError (ELOOP, ENOTDIR) for a symlink or a file on the way."""
    if create:
        root.mkdir(parents=True, exist_ok=True)  # an instrument's folder in an archive (as rsync's --mkpath)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # the configured root itself, as configured
    try:
        for part in parts:
            if create and not _lexists(part, fd):
                with suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _open_regular(name: str, folder: int, flags: int) -> Iterator[IO[bytes]]:
    """``name`` in ``folder`` opened without following a symlink; OSError unless a regular file."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600, dir_fd=folder)  # NONBLOCK: a fifo's open
    handle = os.fdopen(fd, "r+b" if flags & os.O_RDWR else "rb", buffering=0)
    with handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        os.set_blocking(fd, True)
        yield handle


def _xxh128_of(handle: IO[bytes]) -> str:
    """The xxh128 of a whole open file, read again from its start."""
    handle.seek(0)
    digest = xxhash.xxh128()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _lexists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove_if_empty(name: str, folder: int) -> None:
    try:
        os.rmdir(name, dir_fd=folder)
    except OSError:
        pass
