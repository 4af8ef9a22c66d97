"""Spectra that stay in the raw file until the SDFITS writer puts them into their rows.

A VEGAS spectrum is big-endian float32 in the raw bank file and in the SDFITS DATA column
alike, 128 KiB contiguous at 32768 channels: the filler has no reason to convert it, or
to hold a scan's spectra in Python.  :class:`SpectraInFile` names where each SDFITS row's
spectrum lies in the raw file (plus the few channels the filler changes, see
:meth:`SpectraInFile.with_channel_set`).  :meth:`SpectraInFile.mapped_cells` maps the raw
file read-only and gives each spectrum as views of the mapping, which the writer hands with
the rows' other columns to one ``pwritev`` per ~2 MiB of rows (the kernel copies page cache to
page cache); where a file cannot be mapped, :meth:`SpectraInFile.in_batches` reads them about a
MiB at a time into one reused buffer.  Measured on 32 MiB (256 rows of 128 KiB): one
``copy_file_range`` per row 20 ms, the batches 15 ms, ``cp`` 12-13 ms (a quiet moment); in a
whole fill the mapping beat the batches (paired 0.98-0.97) and the mapping without
``MAP_POPULATE`` lost (1.5: a fault per few pages).

Anything that needs the values (tests, quick-look) calls :meth:`SpectraInFile.read`, or
``np.asarray``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from obsflow.errors import InputError

__all__ = ["SpectraInFile"]

DTYPE = np.dtype(">f4")
#: spectra read and written per batch: 1-4 MiB measured alike (8 rows of 128 KiB: 15 ms per 32 MiB)
BATCH_BYTES = 2**20
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # the page tables filled at once, not a fault per page
MAX_BATCH_ROWS = 256  # small spectra: a batch's rows and their other columns stay within IOV_MAX (1024) pieces


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
        for first, views in self.in_batches():
            for k, view in enumerate(views):
                out[first + k] = np.frombuffer(view, dtype=DTYPE)
        return out

    def channels(self, rows: np.ndarray, first: int, count: int = 1) -> np.ndarray:
        """The raw values of channels ``first`` .. ``first + count - 1`` in each of ``rows``, one read per row
        (as in the file, before any change): (len(rows), count) big-endian float32."""
        out = np.empty((len(rows), count), dtype=DTYPE)
        view = memoryview(out.reshape(-1).view(np.uint8))
        width = count * DTYPE.itemsize
        with self._opened() as fd:
            for k, row in enumerate(np.asarray(rows).tolist()):
                self._read_exactly(fd, view[k * width : (k + 1) * width], int(self.offsets[row]) + DTYPE.itemsize * first)
        return out

    def with_channel_set(self, rows: np.ndarray, channel: int, values: np.ndarray) -> SpectraInFile:
        """These spectra with ``channel`` of each of ``rows`` set to ``values`` (float32)."""
        changed = dict(self.changed)
        for row, value in zip(np.asarray(rows).tolist(), np.asarray(values, dtype=np.float32), strict=True):
            changed[(row, channel)] = value
        return SpectraInFile(self.path, self.offsets, self.nchan, changed)

    def in_batches(self, batch_bytes: int | None = None) -> Iterator[tuple[int, list[memoryview]]]:
        """The spectra a batch of rows at a time: (first row, one view per row), changed channels set.

        The views point into one buffer that the next batch overwrites: use them before asking for it.
        """
        row_bytes = self.nchan * DTYPE.itemsize
        batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
        per_batch = max(1, min(MAX_BATCH_ROWS, batch_bytes // max(row_bytes, 1)))
        offsets = self.offsets.tolist()
        changed = self._changed_by_row()
        buffer = memoryview(bytearray(per_batch * row_bytes))
        close_enough = 2 * len(buffer)  # read across the raw rows' other columns, not across a sparse file
        with self._opened() as fd:
            for first in range(0, len(offsets), per_batch):
                these = offsets[first : first + per_batch]
                span = these[-1] - these[0] + row_bytes
                if _in_order_and_close(these, row_bytes, close_enough):  # raw rows: one read
                    if span > len(buffer):
                        buffer = memoryview(bytearray(span))
                    self._read_exactly(fd, buffer[:span], these[0])
                    views = [buffer[o - these[0] : o - these[0] + row_bytes] for o in these]
                else:
                    views = [buffer[k * row_bytes : (k + 1) * row_bytes] for k in range(len(these))]
                    for view, offset in zip(views, these, strict=True):
                        self._read_exactly(fd, view, offset)
                for k, view in enumerate(views):
                    for channel, value in changed.get(first + k, ()):
                        view[channel * DTYPE.itemsize : (channel + 1) * DTYPE.itemsize] = value
                yield first, views

    @contextmanager
    def mapped_cells(self) -> Iterator[list[list[memoryview | bytes]]]:
        """Each row's spectrum as the pieces a writer hands to ``pwritev``: views of the raw file mapped
        read-only (a changed channel a piece of its own), so the kernel copies page cache to page cache.

        Only the kernel reads the mapping: a raw file cut short after it was mapped makes that write
        fail (EFAULT, see :meth:`shrank`), it cannot crash this process.  OSError if the file cannot
        be mapped (the caller reads it instead, :meth:`in_batches`).
        """
        row_bytes = self.nchan * DTYPE.itemsize
        offsets = self.offsets.tolist()
        if not offsets:
            yield []
            return
        with self._opened() as fd:
            end = max(offsets) + row_bytes
            if os.fstat(fd).st_size < end:
                raise self.shrank()
            start = min(offsets) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
            mapping = mmap.mmap(fd, end - start, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=start)
        view = memoryview(mapping)
        changed = self._changed_by_row()
        cells: list[list[memoryview | bytes]] = []
        try:
            for row, offset in enumerate(offsets):
                at, pieces = offset - start, []
                for channel, value in changed.get(row, ()):
                    cut = offset - start + channel * DTYPE.itemsize
                    pieces += (view[at:cut], value)
                    at = cut + DTYPE.itemsize
                pieces.append(view[at : offset - start + row_bytes])
                cells.append(pieces)
            yield cells
        finally:
            cells.clear()  # every view of the mapping goes before it is closed
            view.release()
            try:
                mapping.close()
            except BufferError:  # a view still held (a traceback's frame): freed with it
                pass

    def _changed_by_row(self) -> dict[int, list[tuple[int, bytes]]]:
        changes = sorted(self.changed.items())
        stored = np.array([value for _, value in changes], dtype=DTYPE).tobytes()  # as in the file, in one go
        size = DTYPE.itemsize
        by_row: dict[int, list[tuple[int, bytes]]] = {}
        for k, ((row, channel), _) in enumerate(changes):
            by_row.setdefault(row, []).append((channel, stored[k * size : (k + 1) * size]))
        return by_row

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
                raise self.shrank()
            into, offset = into[got:], offset + got

    def shrank(self) -> InputError:
        return InputError("raw file is shorter than its spectra (rewritten while being filled?)", self.path)


def _in_order_and_close(offsets: list[int], row_bytes: int, limit: int) -> bool:
    """Ascending, not overlapping, and within ``limit`` bytes from the first to the last spectrum's end:
    a raw table's spectra (between them only its rows' other columns), read in one go."""
    return offsets[-1] - offsets[0] + row_bytes <= limit and all(
        b - a >= row_bytes for a, b in pairwise(offsets)
    )
