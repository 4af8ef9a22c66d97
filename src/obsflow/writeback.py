"""Start writing a file's new bytes to disk while more of them are still being written.

An SDFITS append must ``fdatasync`` its rows before NAXIS2 may count them.  Left alone, the
kernel starts writing those pages only when that flush asks, so the disk idles while the rows
are copied and the CPU idles while the disk writes.  Handing the kernel each few MiB as soon as
they are written (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, as PostgreSQL's
``*_flush_after`` and RocksDB's ``bytes_per_sync`` do) lets both work at once, and the final
flush waits only for the tail: measured here, 32 MiB copied then flushed in 60 ms, with a
write-out started every 4 MiB in 48 ms (the same as ``cp`` + ``sync``).

This is a hint, never a guarantee: it neither waits nor flushes metadata or the disk's cache.
Durability still comes from ``fdatasync`` alone; where the call is missing, nothing happens.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["STEP", "Writeback", "disabled"]

#: start writing out every this many new bytes (1-8 MiB measured alike; 4 MiB keeps the calls few)
STEP = 4 * 2**20

_SYNC_FILE_RANGE_WRITE = 2
PAGE = 4096
_unset = object()
_call: object = _unset  # sync_file_range(fd, offset, nbytes, flags) or None, loaded on first use


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    global _call
    if _call is _unset:
        _call = None
        try:
            import ctypes  # only a writing process pays for it

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
            _call = function
        except (OSError, AttributeError):  # not Linux, or a libc without it
            pass
    return _call  # type: ignore[return-value]


class Writeback:
    """Tell the kernel to start writing ``fd``'s bytes from ``start`` on, every :data:`STEP` new bytes."""

    def __init__(self, fd: int, start: int, step: int | None = None, enabled: bool = True) -> None:
        self.fd = fd
        self.started_to = start  # write-out asked for every byte before this
        self.step = STEP if step is None else step
        self._call = _sync_file_range() if enabled else None

    def written_to(self, end: int) -> None:
        """Every byte before ``end`` is written: start writing out the new ones once there are ``step`` of them."""
        end -= end % PAGE  # a page still being filled must not be under write-out: its next write would wait for the disk
        if self._call is None or end - self.started_to < self.step:
            return
        if self._call(self.fd, self.started_to, end - self.started_to, _SYNC_FILE_RANGE_WRITE) != 0:
            self._call = None  # e.g. a file system without it: the final flush does it all
            return
        self.started_to = end


def disabled() -> None:
    """Stop starting write-outs in this process (benchmarks compare with and without)."""
    global _call
    _call = None
