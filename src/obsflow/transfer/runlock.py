"""One sync at a time: an ``flock`` on ``<state>/sync.lock``.

The kernel drops an ``flock`` when its holder dies (even by SIGKILL), so a crashed run never
leaves a stale lock.  A second run waits up to ``wait_s`` for the first, then refuses with
LockError naming the holder: two runs never copy at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from obsflow.config import make_state_folder
from obsflow.errors import LockError, OutputError

__all__ = ["RunLock", "sync_lock"]


@dataclass(frozen=True)
class RunLock:
    """The held run lock: its file, and the descriptor whose flock it is.

    A child given ``fd`` (rsync, through ``pass_fds``) keeps the lock held while it runs, so a
    run killed on its own (``kill``, cron's ``timeout``, the OOM killer) does not let a second
    run copy beside its still-running rsync.
    """

    path: Path
    fd: int


@contextmanager
def sync_lock(state_dir: Path, wait_s: float = 0.0, poll_s: float = 0.2) -> Iterator[RunLock]:
    """Hold ``<state_dir>/sync.lock`` for the block; LockError if another run keeps it past ``wait_s``."""
    path = state_dir / "sync.lock"
    make_state_folder(state_dir)  # apart from the lock: a state folder the account cannot make is the operator's to fix
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise OutputError(f"cannot take the run lock: {err.strerror}", path) from err
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise LockError(f"another sync is running (pid {holder}); waited {wait_s:g} s", path) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield RunLock(path, fd)
    finally:
        os.close(fd)  # releases the flock
