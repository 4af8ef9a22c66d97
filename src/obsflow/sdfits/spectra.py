"""Spectra that stay in the raw file until the SDFITS writer copies them, inside the kernel.

A VEGAS spectrum is big-endian float32 in the raw bank file and in the SDFITS DATA column
alike, 128 KiB contiguous at 32768 channels: the filler has no reason to read it into
Python.  :class:`SpectraInFile` names where each SDFITS row's spectrum lies in the raw file
(plus the few channels the filler changes, see :meth:`SpectraInFile.with_channel_set`), and
:meth:`SpectraInFile.copy_into` puts them into the output file with ``copy_file_range``:
the bytes go page cache to page cache, never through user memory.  Where the kernel cannot
(another file system type, an old kernel) it falls back to read + write.

Anything that needs the values (tests, quick-look) calls :meth:`SpectraInFile.read`, or
``np.asarray``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from obsflow.errors import InputError

__all__ = ["SpectraInFile"]

DTYPE = np.dtype(">f4")
#: copy_file_range cannot copy between these two files: read and write instead
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})


@dataclass(frozen=True, eq=False)
class SpectraInFile:
    """Row ``i``'s spectrum: ``nchan`` big-endian float32 at byte ``offsets[i]`` of ``path``, then ``changed`` channels.

    ``changed`` maps (row, channel) to the float32 value the filler puts there instead.
    """

    path: Path
    offsets: np.ndarray  # int64, one per row
    nchan: int
    changed: dict[tuple[int, int], np.float32] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.offsets), self.nchan

    @property
    def dtype(self) -> np.dtype:
        return DTYPE

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return len(self.offsets) * self.nchan * DTYPE.itemsize

    def __len__(self) -> int:
        return len(self.offsets)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        values = self.read()
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, key: object) -> np.ndarray:
        return self.read()[key]

    def read(self) -> np.ndarray:
        """The spectra, read from the file now, with the changed channels: (rows, nchan) big-endian float32."""
        out = np.empty(self.shape, dtype=DTYPE)
        row_bytes = self.nchan * DTYPE.itemsize
        view = memoryview(out.reshape(-1).view(np.uint8))
        with self._opened() as fd:
            for row, offset in enumerate(self.offsets.tolist()):
                self._read_exactly(fd, view[row * row_bytes : (row + 1) * row_bytes], offset)
        for (row, channel), value in self.changed.items():
            out[row, channel] = value
        return out

    def channels(self, rows: np.ndarray, channel: int) -> np.ndarray:
        """The raw value of ``channel`` in each of ``rows`` (as in the file, before any change)."""
        out = np.empty(len(rows), dtype=DTYPE)
        view = memoryview(out.view(np.uint8))
        with self._opened() as fd:
            for k, row in enumerate(np.asarray(rows).tolist()):
                self._read_exactly(fd, view[4 * k : 4 * k + 4], int(self.offsets[row]) + 4 * channel)
        return out

    def with_channel_set(self, rows: np.ndarray, channel: int, values: np.ndarray) -> SpectraInFile:
        """These spectra with ``channel`` of each of ``rows`` set to ``values`` (float32)."""
        changed = dict(self.changed)
        for row, value in zip(np.asarray(rows).tolist(), np.asarray(values, dtype=np.float32), strict=True):
            changed[(row, channel)] = value
        return SpectraInFile(self.path, self.offsets, self.nchan, changed)

    def copy_into(
        self,
        out_fd: int,
        out_offsets: np.ndarray,
        write: Callable[[int, bytes | memoryview, int], None],
        copied_to: Callable[[int], None] | None = None,
    ) -> None:
        """Copy row ``i``'s spectrum to ``out_offsets[i]`` of ``out_fd``, inside the kernel; changed channels too.

        ``write(fd, data, offset)`` writes the changed channels, and the rows too where the
        kernel cannot copy between the two files (so a caller's write seam sees those bytes).
        ``copied_to(end)`` is told after each row that every byte of ``out_fd`` before ``end``
        is written, if the rows are in ascending order (a writer starts their write-out).
        """
        row_bytes = self.nchan * DTYPE.itemsize
        with self._opened() as fd:
            kernel = True
            for start, out in zip(self.offsets.tolist(), np.asarray(out_offsets).tolist(), strict=True):
                todo = row_bytes
                while todo and kernel:
                    try:
                        done = os.copy_file_range(fd, out_fd, todo, start, out)
                    except OSError as err:
                        if err.errno not in _NO_KERNEL_COPY:
                            raise
                        kernel = False
                        break
                    if done == 0:
                        raise self._shrank()
                    start, out, todo = start + done, out + done, todo - done
                if todo:
                    buffer = bytearray(todo)
                    self._read_exactly(fd, memoryview(buffer), start)
                    write(out_fd, buffer, out)
                if copied_to is not None:
                    copied_to(out)
        for (row, channel), value in sorted(self.changed.items()):
            write(out_fd, np.asarray(value, dtype=DTYPE).tobytes(), int(out_offsets[row]) + channel * DTYPE.itemsize)

    @contextmanager
    def _opened(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise InputError(f"cannot read VEGAS spectra: {err.strerror}", self.path) from err
        try:
            yield fd
        finally:
            os.close(fd)

    def _read_exactly(self, fd: int, into: memoryview, offset: int) -> None:
        while len(into):
            got = os.preadv(fd, [into], offset)
            if got == 0:
                raise self._shrank()
            into, offset = into[got:], offset + got

    def _shrank(self) -> InputError:
        return InputError("raw file is shorter than its spectra (rewritten while being filled?)", self.path)
