"""GBTIDL index files built from SDFITS files: read the index-relevant columns, (re)build, check.

Works on any SDFITS file, ours or the GBT filler's or GBTIDL's (several extensions, an INT
column in GBTIDL keep files).  :func:`index_mismatch` says where an index and its FITS file
disagree: GBTIDL and dysh trust an index blindly, so a wrong one must never be appended to.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from obsflow.errors import InputError, IntegrityError

from obsflow.sdfits.index import (
    IndexHeader,
    build_index_rows,
    index_text,
    int_values,
    read_index,
    row_count,
    str_values,
)

__all__ = [
    "SdfitsTable",
    "build_combined_index",
    "build_index_for_fits",
    "combined_index_path",
    "index_matches_fits",
    "index_mismatch",
    "index_path_for",
    "read_index_header",
    "read_sdfits_tables",
    "require_index_matches_fits",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# SDFITS files


@dataclass(frozen=True)
class SdfitsTable:
    """The index-relevant columns of one non-empty BINTABLE of an SDFITS file."""

    file_name: str
    ext: int
    projid: str | None
    columns: dict[str, np.ndarray]

    @property
    def n_rows(self) -> int:
        """NAXIS2."""
        return row_count(self.columns)


_REQUIRED = ("SCAN", "DATE-OBS", "IFNUM", "PLNUM", "FDNUM")
_WANTED = frozenset(
    "OBJECT OBSMODE OBSID PROCSEQN SCAN CRVAL4 PLNUM IFNUM FEED FDNUM INT TDIM7 TDIM6 SIG CAL SAMPLER AZIMUTH "
    "ELEVATIO CRVAL2 CRVAL3 TRGTLONG TRGTLAT SUBREF_STATE LST CRVAL1 CRPIX1 CDELT1 RESTFREQ VELOCITY FREQRES "
    "DATE-OBS TIMESTAMP BANDWID EXPOSURE TSYS NSAVE PROCSCAN PROCTYPE CALPOSITION PROJID OBSERVER BACKEND "
    "VSPDELT VSPRVAL VSPRPIX".split()
)


def read_sdfits_tables(fits_path: Path, extra_columns: Iterable[str] = ()) -> list[SdfitsTable]:
    """Read the index-relevant columns (never DATA) of every non-empty BINTABLE of an SDFITS file.

    Raises :class:`InputError` for a file that is not FITS, is truncated, or is not SDFITS.
    """
    path = Path(fits_path)
    wanted = _WANTED | set(extra_columns)
    tables = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul = _open_fits(path)
        try:
            _check_complete(hdul, path)
            primary_projid = hdul[0].header.get("PROJID")
            for number, hdu in enumerate(hdul):
                if not isinstance(hdu, fits.BinTableHDU) or not hdu.header.get("NAXIS2", 0):
                    continue
                columns, names = _table_columns(hdu, number, wanted, path)
                projid = hdu.header.get("PROJID", None if "PROJID" in names else primary_projid)
                backend = hdu.header.get("BACKEND") or hdul[0].header.get("INSTRUME")
                if backend and "BACKEND" not in columns:
                    columns["BACKEND"] = np.array([str(backend)] * hdu.header["NAXIS2"])
                tables.append(SdfitsTable(path.name, number, None if projid is None else str(projid), columns))
            if not any(isinstance(hdu, fits.BinTableHDU) for hdu in hdul):
                raise InputError("not an SDFITS file: no binary table", path)
        finally:
            hdul.close()
    return tables


def _table_columns(hdu: fits.BinTableHDU, number: int, wanted: set[str], path: Path
                   ) -> tuple[dict[str, np.ndarray], set[str]]:  # fmt: skip
    """The ``wanted`` columns of one table, each one value per row, and every column name."""
    try:
        names = set(hdu.columns.names)
        missing = [name for name in _REQUIRED if name not in names]
        if missing:
            raise InputError(f"not an SDFITS file: HDU {number} has no {', '.join(missing)} column", path)
        columns = {name: np.array(hdu.data[name]) for name in wanted & names}
        if not names & {"TDIM7", "TDIM6"} and "DATA" in names:
            width = int(hdu.columns["DATA"].format.repeat)
            columns["TDIM7"] = np.array([f"({width},1,1,1)"] * hdu.header["NAXIS2"])
    except InputError:
        raise
    except Exception as err:  # a malformed header: astropy raises VerifyError, KeyError, ValueError, ...
        raise InputError(f"unreadable FITS table in HDU {number}: {type(err).__name__}: {err}", path) from err
    for name, values in columns.items():
        if values.ndim != 1:  # '2J', '32X': the index has one cell per row
            raise InputError(f"not an SDFITS file: column {name} of HDU {number} has {values.shape[1:]} values per row,"
                             " expected one", path)  # fmt: skip
    return columns, names


def _open_fits(path: Path) -> fits.HDUList:
    try:
        return fits.open(path, memmap=True, lazy_load_hdus=False)
    except FileNotFoundError as err:
        raise InputError("file not found", path) from err
    except IsADirectoryError as err:
        raise InputError("is a directory, not a FITS file", path) from err
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise InputError("not a FITS file", path) from err


def _check_complete(hdul: fits.HDUList, path: Path) -> None:
    """A FITS file must end exactly where its last HDU's padded data ends."""
    size = path.stat().st_size
    info = hdul.fileinfo(len(hdul) - 1)
    end = info["datLoc"] + info["datSpan"]
    if end != size:
        raise InputError(f"truncated or corrupt FITS file: HDUs end at byte {end}, file has {size}", path)


def index_path_for(fits_path: Path) -> Path:
    """``X.fits`` -> ``X.index`` beside it."""
    return Path(fits_path).with_suffix(".index")


def combined_index_path(vegas_dir: Path) -> Path:
    """``<PROJ>.raw.vegas/<PROJ>.raw.vegas.index``: the index over all bank files that GBTIDL opens online."""
    name = Path(os.path.abspath(vegas_dir)).name  # '.' and 'x/..' have no name of their own
    return Path(vegas_dir) / f"{name}.index"


def _header_for(tables: Sequence[SdfitsTable], existing_index: Path | None, now: datetime | None) -> IndexHeader:
    """A fresh header; keeps ``created`` of an index being rebuilt, fills observer/backend from the data."""
    created = None
    if existing_index is not None and existing_index.is_file():
        try:
            created = read_index_header(existing_index).get("created")
        except InputError:
            created = None
    observer = backend = "Unknown"
    for table in tables:
        observer = str_values(table.columns, "OBSERVER", 1, "Unknown")[0] or "Unknown"
        backend = str_values(table.columns, "BACKEND", 1, "Unknown")[0] or "Unknown"
        break
    return IndexHeader.new(observer=observer, backend=backend, now=now, created=created)


def read_index_header(path: Path) -> dict[str, str]:
    """Only the header keys of an index (cheap; reads the first few KiB)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16 * 1024).decode("ascii", "replace")
    except OSError as err:
        raise InputError(f"cannot read index: {err.strerror}", path) from err
    lines = head.split("\n")
    if lines[0] != "[header]":
        raise InputError("not an index file: first line is not [header]", path)
    header = {}
    for line in lines[1:]:
        if line.startswith("[rows]"):
            break
        key, sep, value = line.partition("=")
        if sep:
            header[key.strip().lower()] = value.strip()
    return header


def build_index_for_fits(fits_path: Path, header: IndexHeader | None = None, now: datetime | None = None) -> str:
    """The text of the index for any SDFITS file (ours, the GBT filler's, GBTIDL's).

    One row per row of each non-empty BINTABLE, EXT = HDU number, INDEX continuous from 0.
    Without ``header`` the header keeps ``created`` of an existing ``.index`` beside the file.
    """
    path = Path(fits_path)
    tables = read_sdfits_tables(path)
    header = header or _header_for(tables, index_path_for(path), now)
    rows: list[str] = []
    for table in tables:
        rows.extend(build_index_rows(table.columns, projid=table.projid, file_name=table.file_name, ext=table.ext,
                                     first_row=0, first_index=len(rows)))  # fmt: skip
    return index_text(header, rows)


def _scan_runs(table: SdfitsTable) -> list[tuple[str, int, int]]:
    """(TIMESTAMP or scan, start, stop) for each run of equal TIMESTAMP in a table."""
    n = table.n_rows
    if "TIMESTAMP" in table.columns:
        ids = str_values(table.columns, "TIMESTAMP", n, "")
    else:
        ids = [f"{scan:010d}" for scan in int_values(table.columns, "SCAN", n, -1)]
    runs = []
    start = 0
    while start < n:
        stop = start
        while stop < n and ids[stop] == ids[start]:
            stop += 1
        runs.append((ids[start], start, stop))
        start = stop
    return runs


def build_combined_index(
    fits_paths: Sequence[Path], header: IndexHeader | None = None, now: datetime | None = None,
    existing_index: Path | None = None,
) -> str:
    """The text of ``<PROJ>.raw.<backend>.index`` over several bank files.

    Rows are ordered scan by scan, and within a scan bank file by bank file in the order given,
    INDEX continuous: the order in which the online filler appends them (scan N: bank A rows,
    bank B rows, ...).  Scans listed in ``existing_index`` keep its order (the fill order, which
    differs from TIMESTAMP order when scans were filled out of order, and which a GBTIDL reading
    the file online relies on); the others follow in TIMESTAMP order.  FILE names each row's
    bank file.
    """
    positions = _row_positions(existing_index)
    chunks = []
    all_tables: list[SdfitsTable] = []
    for file_order, fits_path in enumerate(fits_paths):
        tables = read_sdfits_tables(Path(fits_path))
        all_tables.extend(tables)
        for table in tables:
            for run_id, start, stop in _scan_runs(table):
                position = positions.get((table.file_name, table.ext, start))
                order = (0, position) if position is not None else (1, run_id, file_order, table.ext, start)
                chunks.append((order, table, start, stop))
    chunks.sort(key=lambda chunk: chunk[0])
    header = header or _header_for(all_tables, existing_index, now)
    rows: list[str] = []
    for _, table, start, stop in chunks:
        part = {name: values[start:stop] for name, values in table.columns.items()}
        rows.extend(build_index_rows(part, projid=table.projid, file_name=table.file_name, ext=table.ext,
                                     first_row=start, first_index=len(rows)))  # fmt: skip
    return index_text(header, rows)


def _row_positions(existing_index: Path | None) -> dict[tuple[str, int, int], int]:
    """(FILE, EXT, ROW) -> position in an existing index; empty when there is none or it is unreadable."""
    if existing_index is None or not Path(existing_index).is_file():
        return {}
    try:
        rows = read_index(Path(existing_index)).rows
    except InputError:
        return {}
    return {(entry.file, entry.ext, entry.row): position for position, entry in enumerate(rows)}


# --------------------------------------------------------------------------------------------
# agreement between an index and its FITS files


def _fits_row_counts(fits_path: Path) -> dict[tuple[str, int], int]:
    path = Path(fits_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        hdul = _open_fits(path)
        try:
            _check_complete(hdul, path)
            return {
                (path.name, number): int(hdu.header.get("NAXIS2", 0))
                for number, hdu in enumerate(hdul)
                if isinstance(hdu, fits.BinTableHDU) and hdu.header.get("NAXIS2", 0)
            }
        finally:
            hdul.close()


def index_mismatch(index_path: Path, *fits_paths: Path) -> str | None:
    """Why an index disagrees with its FITS file(s), or ``None`` when it agrees.

    It agrees when INDEX runs 0..n-1 and, for every non-empty extension of every given file,
    its rows list ROW 0..NAXIS2-1 in order, and no row names another file or extension
    (GBTIDL's ``check_file_properties`` compares the same row counts).
    """
    contents = read_index(Path(index_path))
    expected: dict[tuple[str, int], int] = {}
    for fits_path in fits_paths:
        expected.update(_fits_row_counts(Path(fits_path)))
    seen: dict[tuple[str, int], int] = {}
    for position, entry in enumerate(contents.rows):
        if entry.index != position:
            return f"index row {position} has INDEX {entry.index}"
        key = (entry.file, entry.ext)
        if key not in expected:
            return f"index row {position} names {entry.file} HDU {entry.ext}, which is not in the FITS file"
        if entry.row != seen.get(key, 0):
            return f"index row {position} points at ROW {entry.row} of {entry.file}, expected {seen.get(key, 0)}"
        seen[key] = entry.row + 1
    for (name, ext), n_rows in expected.items():
        if seen.get((name, ext), 0) != n_rows:
            return f"index lists {seen.get((name, ext), 0)} rows of {name} HDU {ext}, the FITS file has {n_rows}"
    return None


def index_matches_fits(index_path: Path, *fits_paths: Path) -> bool:
    """True when the index rows agree with the FITS row counts and positions."""
    return index_mismatch(index_path, *fits_paths) is None


def require_index_matches_fits(index_path: Path, *fits_paths: Path) -> None:
    """Raise :class:`IntegrityError` (one line: what disagrees, where) unless the index agrees."""
    reason = index_mismatch(index_path, *fits_paths)
    if reason is not None:
        raise IntegrityError(f"index disagrees with its FITS file: {reason}", index_path)
