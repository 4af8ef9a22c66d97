"""Wait on the disk and compute at once: system calls that release the GIL (fsync, big writes) run in
threads of their own while Python work runs in the caller's.

A fill waits on the disk twice (its journal's fsync before any change; with a flush, its rows'
fdatasync) and has Python work that touches no file (formatting index rows): doing both at once
hides the shorter of the two.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["SWITCH_INTERVAL_S", "run_beside"]

T = TypeVar("T")

#: while jobs run beside Python work, the GIL changes hands this often (s): at the default 5 ms a
#: job back from its fsync waits that long for the few lines that follow it (a rename, the next call)
SWITCH_INTERVAL_S = 0.0002


def run_beside(jobs: Sequence[Callable[[], object]], work: Callable[[], T] | None = None) -> T | None:
    """Each of ``jobs`` in a thread of its own while ``work`` runs here; return what ``work`` returned.

    A job's error is raised after every job has ended, before ``work``'s (the caller learns
    first that its disk failed).  One job and no work: the job runs here.
    """
    if len(jobs) == 1 and work is None:
        jobs[0]()
        return None
    interval = sys.getswitchinterval()
    if work is not None:
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    try:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="beside") as pool:
            running = [pool.submit(job) for job in jobs]
            try:
                return work() if work is not None else None
            finally:
                for job in running:
                    job.result()
    finally:
        sys.setswitchinterval(interval)
