"""GBTIDL flag files (``*.flag``, version 1.0): the empty file, its link, VEGAS spur rows.

Layout (GBT_FORMATS.md §2): unpadded ``[header]`` lines (``created``, ``version = 1.0``,
``created_by``), ``[flags]``, the ``#RECNUM,...,IDSTRING`` column row, then one
``|``-separated row per flag, with no blank line anywhere (dysh's parser fails on one).

The flag file is the only product users may edit (GBTIDL ``flag``/``unflag``).  It lives in a
separate flags directory and is reached through a symlink ``<stem>.flag`` beside the FITS
file, so the data directory itself can stay read-only.

Invariants: the filler never removes or rewrites a user's line; it only creates a missing
file (atomically) and appends spur rows it has not written before (a row commented out by
GBTIDL ``unflag`` counts as written, so it is not re-added).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from obsflow.atomic import fsync_dir, write_atomic
from obsflow.errors import InputError, OutputError
from obsflow.sdfits.index import asctime

__all__ = [
    "FLAG_COLUMN_ROW",
    "FLAG_MODE",
    "FLAG_VERSION",
    "SPUR_ID",
    "append_flag_rows",
    "empty_flag_text",
    "ensure_flag_file",
    "flag_rows",
    "flag_target_path",
    "spur_channels",
    "vegas_spur_rows",
]

log = logging.getLogger(__name__)

FLAG_VERSION = "1.0"
FLAG_COLUMN_ROW = "#RECNUM,SCAN,INTNUM,PLNUM,IFNUM,FDNUM,BCHAN,ECHAN,IDSTRING"
SPUR_ID = "VEGAS_SPUR"
#: Group-writable: observers in the project group edit flags with GBTIDL; others read.
#: (FITS and index files are 0o644: only the filler's own account writes them.)
FLAG_MODE = 0o664
_SPUR_J = range(33)  # the FITS header comment: SPUR_CHANNEL = (J-VSPRVAL)*VSPDELT+VSPRPIX, 0 <= J <= 32


def empty_flag_text(now: datetime | None = None, created_by: str = "obsflow") -> str:
    """An empty flag file as the GBT filler writes it (unpadded header, column row, no rows)."""
    return (
        "[header]\n"
        f"created = {asctime(now or datetime.now(UTC))}\n"
        f"version = {FLAG_VERSION}\n"
        f"created_by = {created_by}\n"
        "[flags]\n"
        f"{FLAG_COLUMN_ROW}\n"
    )


def spur_channels(vspdelt: float, vsprval: float, vsprpix: float, n_channels: int) -> list[int]:
    """0-based VEGAS spur channels, without the central spur (sdfits replaces it) and out-of-range ones."""
    if not all(np.isfinite([vspdelt, vsprval, vsprpix])) or vspdelt == 0:
        return []
    centre = round(vsprval)
    channels = []
    for j in _SPUR_J:
        if j == centre:
            continue
        channel = round((j - vsprval) * vspdelt + vsprpix - 1)
        if 0 <= channel < n_channels:
            channels.append(channel)
    return channels


def vegas_spur_rows(columns: Mapping[str, Any]) -> list[str]:
    """Spur flag rows for SDFITS rows: one per (scan, ifnum, fdnum), in order of first appearance.

    ``columns`` maps SDFITS column names to per-row values (SCAN, IFNUM, FDNUM, VSPDELT,
    VSPRVAL, VSPRPIX, and TDIM7 or DATA for the channel count).  Rows without spur keywords
    (not VEGAS) give nothing.
    """
    if not {"VSPDELT", "VSPRVAL", "VSPRPIX", "SCAN", "IFNUM", "FDNUM"} <= set(columns):
        return []
    scans, ifnums, fdnums = (np.asarray(columns[name]).astype(np.int64) for name in ("SCAN", "IFNUM", "FDNUM"))
    spur = [np.asarray(columns[name], dtype=float) for name in ("VSPDELT", "VSPRVAL", "VSPRPIX")]
    rows = []
    seen: set[tuple[int, int, int]] = set()
    for i, key in enumerate(zip(scans.tolist(), ifnums.tolist(), fdnums.tolist(), strict=True)):
        if key in seen:
            continue
        seen.add(key)
        channels = spur_channels(spur[0][i], spur[1][i], spur[2][i], _channel_count(columns, i))
        if channels:
            listed = ",".join(str(c) for c in channels)
            scan, ifnum, fdnum = key
            rows.append(f"*|{scan}|*|*|{ifnum}|{fdnum}|{listed}|{listed}|{SPUR_ID}")
    return rows


def _channel_count(columns: Mapping[str, Any], row: int) -> int:
    """The channel count of one row (asked once per scan, IF and feed: a scan's rows share it)."""
    if "TDIM7" in columns:
        value = columns["TDIM7"][row]
        text = value.decode() if isinstance(value, bytes) else str(value)
        return int(text.strip().lstrip("(").split(",")[0] or 0)
    if "DATA" in columns:
        return int(np.shape(columns["DATA"])[-1])
    raise InputError("SDFITS rows need TDIM7 or DATA to know the channel count")


def flag_target_path(fits_path: Path, output_root: Path, flags_root: Path) -> Path:
    """Where the real flag file of ``fits_path`` lives: the same relative path under ``flags_root``."""
    fits_path, output_root = Path(fits_path), Path(output_root)
    # a FITS path made from the output root (the filler's): no need to resolve each folder on the way
    relative = fits_path.relative_to(output_root) if fits_path.is_relative_to(output_root) else None
    if relative is None or ".." in relative.parts:  # not plainly under the root: resolve both
        relative = fits_path.resolve().relative_to(output_root.resolve())
    return Path(flags_root) / relative.with_suffix(".flag")


def ensure_flag_file(
    fits_path: Path,
    target: Path,
    *,
    rows: Sequence[str] = (),
    now: datetime | None = None,
    created_by: str = "obsflow",
) -> Path:
    """Make sure ``fits_path`` has its flag file; create ``target`` and the link beside the FITS file.

    - A missing ``target`` is written atomically (empty, plus ``rows``), mode :data:`FLAG_MODE`.
    - An existing ``target`` is never rewritten; ``rows`` not yet in it are appended.
    - ``<stem>.flag`` beside the FITS file becomes a relative symlink to ``target``.  If a
      regular file or a link elsewhere is already there, it is left alone and used instead
      (a user's flags are never replaced), with a warning.

    Returns the path of the flag file actually used.
    """
    link = Path(fits_path).with_suffix(".flag")
    if _links_to(link, target) and Path(target).is_file():  # the usual case, after the first fill: append, done
        append_flag_rows(target, rows)
        return Path(target)
    is_other_link = link.is_symlink() and os.path.realpath(link) != os.path.realpath(target)
    if is_other_link or (link.exists() and not link.is_symlink()):
        log.warning("keeping existing flag file %s (not a link to %s)", link, target)
        append_flag_rows(link, rows)
        return link
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create flags folder: {err.strerror}", target.parent) from err
    if target.exists():
        append_flag_rows(target, rows)
    else:
        text = empty_flag_text(now, created_by) + "".join(row + "\n" for row in rows)
        write_atomic(target, text, mode=FLAG_MODE)
    if not link.is_symlink():
        _symlink_atomic(os.path.relpath(target, link.parent), link)
    return target


def _links_to(link: Path, target: Path) -> bool:
    """``link`` is the link this module makes to ``target`` (its text, the relative path; no folder resolved)."""
    try:
        return os.readlink(link) == os.path.relpath(target, link.parent)
    except OSError:  # not there, or not a link
        return False


def _symlink_atomic(destination: str, link: Path) -> None:
    temp = link.with_name(f".{link.name}.{os.getpid()}.link")
    try:
        temp.unlink(missing_ok=True)
        os.symlink(destination, temp)
        os.replace(temp, link)
        fsync_dir(link.parent)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot link flag file: {err.strerror}", link) from err


def flag_rows(path: Path) -> list[str]:
    """The flag rows of a flag file (lines after ``[flags]``; comments and blank lines skipped)."""
    lines = _read_lines(path)
    if "[flags]" not in lines:
        raise InputError("not a flag file: no [flags] line", path)
    body = lines[lines.index("[flags]") + 1 :]
    return [line for line in body if line.strip() and not line.startswith("#")]


def _read_lines(path: Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").splitlines()
    except OSError as err:
        raise InputError(f"cannot read flag file: {err.strerror}", path) from err


def append_flag_rows(path: Path, rows: Iterable[str]) -> list[str]:
    """Append the ``rows`` not already in the file (active or commented out); return those appended.

    Appends with one ``O_APPEND`` write, so a line a user adds at the same time is not lost
    (a rewrite-and-rename could drop it).  A last line without newline gets one first.
    """
    path = Path(path)
    wanted = [row.strip() for row in rows if row.strip()]
    if not wanted:
        return []
    present = {line.strip().lstrip("#").strip() for line in _read_lines(path)}
    new_rows = [row for row in dict.fromkeys(wanted) if row not in present]
    if not new_rows:
        return []
    payload = "".join(row + "\n" for row in new_rows)
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    payload = "\n" + payload
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, payload.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise OutputError(f"cannot append to flag file: {err.strerror}", path) from err
    return new_rows
