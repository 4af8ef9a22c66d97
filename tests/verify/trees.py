"""Simulated nights written straight to disk for the verify tests (instrument -> suth -> cape)."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import date
from pathlib import Path

BLOCK = 2880  # FITS files are whole 2880-byte blocks
OLD = 3 * 86400  # files are three days old: long settled


def night_folder(day: date) -> str:
    return f"{day:%Y}/{day:%m%d}"


def fits_bytes(name: str, blocks: int) -> bytes:
    """Deterministic, name-dependent content of ``blocks`` FITS blocks."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (blocks * BLOCK // len(seed) + 1))[: blocks * BLOCK]


def write_nights(root: Path, prefix: str, days: list[date], per_night: int, mtime: float) -> list[str]:
    """Write ``per_night`` files per night under ``root``; return their relative paths, sorted."""
    paths = []
    for day in days:
        folder = root / night_folder(day)
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, per_night + 1):
            name = f"{prefix}_{day:%Y%m%d}.{number:04d}.fits"
            target = folder / name
            target.write_bytes(fits_bytes(name, 1 + number % 3))
            os.utime(target, (mtime, mtime))
            paths.append(f"{night_folder(day)}/{name}")
    return sorted(paths)


def mirror(source: Path, dest: Path) -> None:
    """Copy a tree keeping mtimes, as the sync would have."""
    shutil.copytree(source, dest, dirs_exist_ok=True, copy_function=shutil.copy2)


def truncate(path: Path) -> None:
    """Cut a file to half its size, keeping its mtime (a silent prefix copy, notes §0.1)."""
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.truncate(st.st_size // 2)
    os.utime(path, (st.st_atime, st.st_mtime))


def alter(path: Path, keep_mtime: bool = False) -> None:
    """Flip bytes in the middle of a file, same size (mtime changes unless ``keep_mtime``)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, (st.st_atime, st.st_mtime))
    else:
        os.utime(path, (st.st_mtime + 60, st.st_mtime + 60))
