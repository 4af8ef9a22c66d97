"""GBTIDL spectral-line index files (``*.index``, version 1.7): build, write, append, read, check.

The format (GBT_FORMATS.md §1) is a ``[header]`` of ``key = value`` lines each padded to
256 characters, a ``[rows]`` marker, the ``#INDEX#`` column-name row and one fixed-width
632-character row per SDFITS row.  GBTIDL reads rows with a fixed Fortran format, so every
column position matters; the columns are described once, as data, in :data:`INDEX_COLUMNS`.

Invariants:
- a written index is replaced atomically (old or new, never a prefix);
- an online update only appends whole row lines and rewrites ``last_modified`` in place with
  the same length, which is what GBTIDL's incremental reader expects;
- the rows of an index are, per (FILE, EXT), exactly rows ``0..NAXIS2-1`` of that extension
  (:func:`index_mismatch` says where they are not).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from obsflow.atomic import write_atomic
from obsflow.errors import InputError, IntegrityError, OutputError

__all__ = [
    "COLUMN_ROW",
    "HEADER_WIDTH",
    "INDEX_COLUMNS",
    "INDEX_MODE",
    "INDEX_VERSION",
    "ROW_WIDTH",
    "IndexColumn",
    "IndexContents",
    "IndexEntry",
    "IndexHeader",
    "append_index_rows",
    "asctime",
    "build_index_rows",
    "has_same_rows",
    "index_text",
    "int_values",
    "last_row",
    "next_index",
    "parse_index_row",
    "read_index",
    "renumbered",
    "row_count",
    "row_lines",
    "same_rows_in_any_order",
    "str_values",
    "write_index",
    "write_index_text",
]

log = logging.getLogger(__name__)

INDEX_VERSION = "1.7"
HEADER_WIDTH = 256
#: Index files are written by the filler only: owner-writable (so the daemon, which is not
#: root, can append in place), read-only for group and others.  Flag files are the only
#: user-writable product (see obsflow.sdfits.flag.FLAG_MODE).
INDEX_MODE = 0o644

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class IndexColumn:
    """One column of the rows section: its header name, width and Fortran-like kind.

    ``kind`` is ``"i"`` (integer, right-aligned), ``"a"`` (string, right-aligned, truncated to
    its leftmost ``width`` characters), ``"e"`` (``e16.9``) or ``"key"`` (INDEX and ROW: ``i6``
    plus one space below 1e6, ``i7`` from 1e6 on, so the width is always 7).  ``spaced`` says
    whether one blank precedes the column.
    """

    name: str
    width: int
    kind: str
    spaced: bool = True


def _e(name: str) -> IndexColumn:
    return IndexColumn(name, 16, "e")


#: The 43 columns of a spectral-line index row, in file order (GBT_FORMATS.md §1.3).
INDEX_COLUMNS: tuple[IndexColumn, ...] = (
    IndexColumn("#INDEX#", 7, "key", spaced=False),
    IndexColumn("PROJECT", 16, "a", spaced=False),  # INDEX's trailing blank separates them
    IndexColumn("FILE", 64, "a"),
    IndexColumn("EXT", 3, "i"),
    IndexColumn("ROW", 7, "key"),
    IndexColumn("SOURCE", 32, "a", spaced=False),  # ROW's trailing blank separates them
    IndexColumn("PROCEDURE", 9, "a"),
    IndexColumn("OBSID", 32, "a"),
    IndexColumn("E2ESC", 5, "i"),
    IndexColumn("PROCS", 5, "i"),
    IndexColumn("SCAN", 10, "i"),
    IndexColumn("POL", 3, "a"),
    IndexColumn("PLNUM", 5, "i"),
    IndexColumn("IFNUM", 5, "i"),
    IndexColumn("FEED", 5, "i"),
    IndexColumn("FDNUM", 5, "i"),
    IndexColumn("INT", 10, "i"),
    IndexColumn("NUMCHN", 6, "i"),
    IndexColumn("SIG", 3, "a"),
    IndexColumn("CAL", 3, "a"),
    IndexColumn("SAMPLER", 12, "a"),
    _e("AZIMUTH"),
    _e("ELEVATION"),
    _e("LONGITUDE"),
    _e("LATITUDE"),
    _e("TRGTLONG"),
    _e("TRGTLAT"),
    IndexColumn("SUB", 3, "i"),
    _e("LST"),
    _e("CENTFREQ"),
    _e("RESTFREQ"),
    _e("VELOCITY"),
    _e("FREQINT"),
    _e("FREQRES"),
    IndexColumn("DATEOBS", 22, "a"),
    IndexColumn("TIMESTAMP", 22, "a"),
    _e("BANDWIDTH"),
    _e("EXPOSURE"),
    _e("TSYS"),
    IndexColumn("NSAVE", 10, "i"),
    IndexColumn("PROCSCAN", 16, "a"),
    IndexColumn("PROCTYPE", 16, "a"),
    IndexColumn("WCALPOS", 16, "a"),
)


def _column_spans(columns: Sequence[IndexColumn]) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    position = 0
    for column in columns:
        start = position + (1 if column.spaced else 0)
        spans[column.name] = (start, start + column.width)
        position = start + column.width
    return spans


_SPANS = _column_spans(INDEX_COLUMNS)
ROW_WIDTH = max(end for _, end in _SPANS.values())
#: The ``#INDEX#`` column-name row: names right-aligned in each column's width.
COLUMN_ROW = "".join((" " if c.spaced else "") + f"{c.name:>{c.width}.{c.width}}" for c in INDEX_COLUMNS)

_KEY_LIMIT = 10_000_000  # INDEX and ROW have 7 characters at most
_POLARIZATIONS = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
                  -5: "XX", -6: "YY", -7: "XY", -8: "YX"}  # fmt: skip


# --------------------------------------------------------------------------------------------
# header


def asctime(moment: datetime) -> str:
    """``Tue Aug 20 09:38:32 2024``: C/IDL ``systime`` style, day padded with a space, any locale."""
    return (
        f"{_WEEKDAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:2d} "
        f"{moment:%H:%M:%S} {moment.year}"
    )


@dataclass(frozen=True)
class IndexHeader:
    """The ``[header]`` section; written in the real filler's key order.

    Dates are UTC, as GBTIDL writes them (the GBT filler wrote local time; no reader uses them).
    """

    created: str
    last_modified: str
    version: str = INDEX_VERSION
    observer: str = "Unknown"
    backend: str = "Unknown"
    tcal_rx_table: str = "Unknown"
    sprotect: int = 1
    created_by: str = "obsflow"

    @classmethod
    def new(
        cls, *, observer: str = "Unknown", backend: str = "Unknown", now: datetime | None = None, created: str | None = None
    ) -> IndexHeader:
        """A header stamped ``now`` (UTC); ``created`` keeps an older creation date when rebuilding."""
        stamp = asctime(now or datetime.now(UTC))
        return cls(created=created or stamp, last_modified=stamp, observer=observer or "Unknown",
                   backend=backend or "Unknown")  # fmt: skip

    def items(self) -> list[tuple[str, str]]:
        """(key, value) pairs in file order."""
        return [
            ("created", self.created),
            ("last_modified", self.last_modified),
            ("version", self.version),
            ("observer", self.observer),
            ("backend", self.backend),
            ("tcal_rx_table", self.tcal_rx_table),
            ("sprotect", str(self.sprotect)),
            ("created_by", self.created_by),
        ]

    def lines(self) -> list[str]:
        """The header lines, each exactly :data:`HEADER_WIDTH` characters."""
        return [_header_line(key, value) for key, value in self.items()]


_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _header_line(key: str, value: str) -> str:
    # No line breaks inside a header line; other spaces stay (asctime pads days 1-9: "Dec  1").
    text = f"{key} = {_LINE_BREAKS.sub(' ', str(value))}"
    return text[:HEADER_WIDTH].ljust(HEADER_WIDTH)


# --------------------------------------------------------------------------------------------
# rows from SDFITS column values


def build_index_rows(
    columns: Mapping[str, Any],
    *,
    projid: str | None,
    file_name: str,
    ext: int = 1,
    first_row: int = 0,
    first_index: int = 0,
) -> list[str]:
    """Index row lines (without newline) for consecutive rows of one SDFITS extension.

    Parameters
    ----------
    columns
        SDFITS column name -> one value per row (arrays or lists, as the writer holds them);
        ``DATA`` is only used for NUMCHN when there is no ``TDIM7`` column.
    projid
        The extension's PROJID keyword; ``None`` takes the PROJID column (GBTIDL keep files).
    file_name, ext, first_row, first_index
        Where these rows live: FITS basename, HDU number (1-based), the 0-based row of the first
        one in that extension, and the INDEX of the first one in the index file.

    INT is GBTIDL's: the dense rank of DATE-OBS within each run of equal TIMESTAMP (SCAN if
    there is none), unless the file has an INT column.  It depends only on the run's own rows,
    so rows built for a scan appended later are the same as in a full rebuild.
    """
    n = row_count(columns)
    if n == 0:
        return []
    if first_row < 0 or first_index < 0:
        raise ValueError("first_row and first_index must be >= 0")
    if first_row + n > _KEY_LIMIT or first_index + n > _KEY_LIMIT:
        raise OutputError("more than 9,999,999 rows do not fit the GBTIDL index format", file_name)
    cells = _index_cells(columns, n, projid=projid, file_name=file_name, ext=ext,
                         first_row=first_row, first_index=first_index)  # fmt: skip
    block = np.full((n, ROW_WIDTH), ord(" "), dtype=np.uint8)  # the blanks between columns stay
    for column in INDEX_COLUMNS:
        start, stop = _SPANS[column.name]
        block[:, start:stop] = cells[column.name].cells(column)
    text = block.tobytes().decode("ascii")
    return [text[start : start + ROW_WIDTH] for start in range(0, len(text), ROW_WIDTH)]


def row_count(columns: Mapping[str, Any]) -> int:
    for name in ("SCAN", "DATE-OBS"):
        if name in columns:
            return len(columns[name])
    raise InputError("SDFITS rows need SCAN and DATE-OBS columns")


_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def str_values(columns: Mapping[str, Any], name: str, n: int, default: str) -> list[str]:
    """The column's values as one-line printable ASCII: one character per byte, any other written '?'.

    GBTIDL reads index rows by byte position, so a value may neither widen (UTF-8, U+FFFD) nor
    break its line.
    """
    if name not in columns:
        return [default] * n
    values = columns[name]
    texts_of: dict[Any, str] = {}  # most of a scan's rows share their value: each distinct one converted once
    texts = []
    for value in values.tolist() if isinstance(values, np.ndarray) else values:
        text = texts_of.get(value)
        if text is None:
            text = texts_of[value] = (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip()
        texts.append(text)
    distinct = "".join(texts_of.values())
    if distinct.isascii() and distinct.isprintable():  # the usual case: nothing to replace, no regex per value
        return texts
    return [_NOT_PRINTABLE_ASCII.sub("?", text) for text in texts]


def int_values(columns: Mapping[str, Any], name: str, n: int, default: int) -> list[int]:
    if name not in columns:
        return [default] * n
    return _rounded(columns[name]).reshape(n).tolist()


def _rounded(values: Any) -> np.ndarray:
    """An integer column's values as int64, rounded to the nearest (a column stored as floats)."""
    return np.rint(np.asarray(values, dtype=float)).astype(np.int64)


@dataclass(frozen=True)
class _Column:
    """One index column of a run of rows: its distinct values, and per row which of them.

    A scan's rows share most values (source, procedure, frequencies...): each distinct one is
    formatted once and the rows take their cells from those, as numpy does gathers.
    """

    values: list[Any]
    which: np.ndarray  # one position in ``values`` per row

    def cells(self, column: IndexColumn) -> np.ndarray:
        """(rows, width) ASCII bytes: every row's cell (without the blank that may precede the column)."""
        if column.kind == "key":  # INDEX and ROW: a value per row
            texts = "".join(map(_key_cell, self.values))
        else:
            texts = "".join([_cell_text(column, value) for value in self.values])
        # a character that is not ASCII (a file name's) becomes one '?': the columns must not move
        table = np.frombuffer(texts.encode("ascii", errors="replace"), dtype=np.uint8)
        return table.reshape(len(self.values), column.width)[self.which]


def _constant(value: Any, n: int) -> _Column:
    return _Column([value], np.zeros(n, dtype=np.intp))


def _distinct(values: Any, n: int) -> _Column:
    """The column's distinct values (Python objects) and which one each row holds."""
    array = np.asarray(values).reshape(n)
    keys = array.view(f"u{array.itemsize}") if array.dtype.kind == "f" else array  # by bits: -0.0 and NaN print apart
    if (keys == keys[0]).all():  # most columns of a scan: one value
        return _constant(array[0].item(), n)
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    return _Column(array[first].tolist(), which.reshape(n))


def _texts(columns: Mapping[str, Any], name: str, n: int, default: str) -> _Column:
    """A text column as :func:`str_values` gives it, each distinct value converted once."""
    if name not in columns:
        return _constant(default, n)
    column = _distinct(columns[name], n)
    return _Column(str_values({name: column.values}, name, len(column.values), default), column.which)


def _ints(columns: Mapping[str, Any], name: str, n: int, default: int) -> _Column:
    """An integer column as :func:`int_values` gives it (values rounded)."""
    if name not in columns:
        return _constant(default, n)
    return _distinct(_rounded(columns[name]), n)


def _reals(columns: Mapping[str, Any], name: str, n: int) -> _Column:
    return _distinct(np.asarray(columns[name], dtype=float), n) if name in columns else _constant(0.0, n)


def _mapped(column: _Column, change: Any) -> _Column:
    """The column with ``change`` applied to each distinct value."""
    return _Column([change(value) for value in column.values], column.which)


def _per_row(column: _Column) -> list[Any]:
    return [column.values[k] for k in column.which.tolist()]


def _index_cells(
    columns: Mapping[str, Any], n: int, *, projid: str | None, file_name: str, ext: int, first_row: int,
    first_index: int,
) -> dict[str, _Column]:
    """Column name -> the n values of that index column (GBTIDL defaults for missing columns)."""
    project = _constant(projid.strip(), n) if projid is not None else _texts(columns, "PROJID", n, "unknown")
    numchn = _channel_counts(columns, n)
    crval1, crpix1, cdelt1 = (np.asarray(columns[name], dtype=float).reshape(n) if name in columns else np.zeros(n)
                              for name in ("CRVAL1", "CRPIX1", "CDELT1"))  # fmt: skip
    channels = np.asarray(numchn.values, dtype=np.int64)[numchn.which]
    # GBTIDL LINE_INDEX::get_center_frequency: the frequency of the middle of the band
    centre = ((channels / 2.0 - 0.5) - crpix1) * cdelt1 + crval1
    rows = np.arange(n)
    return {
        "#INDEX#": _Column(list(range(first_index, first_index + n)), rows),
        "PROJECT": project,
        "FILE": _constant(file_name, n),
        "EXT": _constant(ext, n),
        "ROW": _Column(list(range(first_row, first_row + n)), rows),
        "SOURCE": _texts(columns, "OBJECT", n, "source"),
        "PROCEDURE": _mapped(_texts(columns, "OBSMODE", n, "proc"), lambda mode: mode.split(":")[0]),
        "OBSID": _texts(columns, "OBSID", n, ""),
        "E2ESC": _constant(0, n),
        "PROCS": _ints(columns, "PROCSEQN", n, 0),
        "SCAN": _ints(columns, "SCAN", n, -1),
        "POL": _mapped(_ints(columns, "CRVAL4", n, 0), lambda code: _POLARIZATIONS.get(code, "?")),
        "PLNUM": _ints(columns, "PLNUM", n, 0),
        "IFNUM": _ints(columns, "IFNUM", n, 0),
        "FEED": _ints(columns, "FEED", n, -1),
        "FDNUM": _ints(columns, "FDNUM", n, 0),
        "INT": _ints(columns, "INT", n, 0) if "INT" in columns else _distinct(_integration_numbers(columns, n), n),
        "NUMCHN": numchn,
        "SIG": _texts(columns, "SIG", n, "T"),
        "CAL": _texts(columns, "CAL", n, "T"),
        "SAMPLER": _texts(columns, "SAMPLER", n, "??"),
        "AZIMUTH": _reals(columns, "AZIMUTH", n),
        "ELEVATION": _reals(columns, "ELEVATIO", n),
        "LONGITUDE": _reals(columns, "CRVAL2", n),
        "LATITUDE": _reals(columns, "CRVAL3", n),
        "TRGTLONG": _reals(columns, "TRGTLONG", n),
        "TRGTLAT": _reals(columns, "TRGTLAT", n),
        "SUB": _ints(columns, "SUBREF_STATE", n, 0),
        "LST": _reals(columns, "LST", n),
        "CENTFREQ": _distinct(centre, n),
        "RESTFREQ": _reals(columns, "RESTFREQ", n),
        "VELOCITY": _reals(columns, "VELOCITY", n),
        "FREQINT": _distinct(cdelt1, n),
        "FREQRES": _mapped(_reals(columns, "FREQRES", n), abs),
        "DATEOBS": _texts(columns, "DATE-OBS", n, ""),
        "TIMESTAMP": _texts(columns, "TIMESTAMP", n, ""),
        "BANDWIDTH": _reals(columns, "BANDWID", n),
        "EXPOSURE": _reals(columns, "EXPOSURE", n),
        "TSYS": _reals(columns, "TSYS", n),
        "NSAVE": _ints(columns, "NSAVE", n, -1),
        "PROCSCAN": _texts(columns, "PROCSCAN", n, "Unknown"),
        "PROCTYPE": _texts(columns, "PROCTYPE", n, "Unknown"),
        "WCALPOS": _texts(columns, "CALPOSITION", n, "Unknown"),
    }


_TDIM = re.compile(r"\(\s*(\d+)")


def _channel_counts(columns: Mapping[str, Any], n: int) -> _Column:
    """NUMCHN: the first number of TDIM7 ('(1024,1,1,1)'), else of TDIM6, else the DATA width."""
    for name in ("TDIM7", "TDIM6"):
        if name in columns:
            return _mapped(_texts(columns, name, n, ""), _first_dimension)
    if "DATA" in columns:
        shape = np.shape(columns["DATA"])
        return _constant(int(shape[-1]) if len(shape) > 1 else 1, n)
    return _constant(0, n)


def _first_dimension(tdim: str) -> int:
    match = _TDIM.match(tdim)
    return int(match.group(1)) if match else 0


def _integration_numbers(columns: Mapping[str, Any], n: int) -> list[int]:
    """Dense rank of DATE-OBS within each run of equal TIMESTAMP (or SCAN), as GBTIDL numbers INT."""
    ids = _per_row(_texts(columns, "TIMESTAMP", n, "") if "TIMESTAMP" in columns else _ints(columns, "SCAN", n, -1))
    dates = _per_row(_texts(columns, "DATE-OBS", n, ""))
    numbers = [0] * n
    start = 0
    while start < n:
        stop = start
        while stop < n and ids[stop] == ids[start]:
            stop += 1
        rank = {date: i for i, date in enumerate(sorted(set(dates[start:stop])))}
        for row in range(start, stop):
            numbers[row] = rank[dates[row]]
        start = stop
    return numbers


def _key_cell(value: int) -> str:
    """An INDEX or ROW cell: left of a trailing space up to 999,999, all 7 characters above."""
    return f"{value:6d} " if value < 1_000_000 else f"{value:7d}"


def renumbered(rows: Sequence[str], first_index: int) -> list[str]:
    """The same index rows with INDEX counting from ``first_index`` (a bank's rows in the combined index).

    Only the INDEX field changes, so rows are formatted once and numbered for each index file.
    """
    if rows and first_index + len(rows) > _KEY_LIMIT:
        raise OutputError("more than 9,999,999 rows do not fit the GBTIDL index format")
    start, stop = _SPANS["#INDEX#"]
    return [row[:start] + _key_cell(first_index + i) + row[stop:] for i, row in enumerate(rows)]


def _cell_text(column: IndexColumn, value: Any) -> str:
    """The cell of ``value``, ``column.width`` characters."""
    width = column.width
    if column.kind == "key":
        return _key_cell(value)
    if column.kind == "a":
        return f"{value:>{width}.{width}}"
    cell = f"{value:{width}d}" if column.kind == "i" else f"{value:{width}.9e}"
    # a value too wide for its field is written as asterisks, as Fortran/IDL formats do
    return cell if len(cell) == width else "*" * width


# --------------------------------------------------------------------------------------------
# whole files


def index_text(header: IndexHeader, rows: Iterable[str]) -> str:
    """The complete text of an index file."""
    parts = ["[header]\n"]
    parts.extend(line + "\n" for line in header.lines())
    parts.append("[rows]\n")
    parts.append(COLUMN_ROW + "\n")
    for row in rows:
        _check_row(row)
        parts.append(row + "\n")
    return "".join(parts)


def _check_row(row: str) -> None:
    if len(row) != ROW_WIDTH or "\n" in row:
        raise ValueError(f"an index row must be {ROW_WIDTH} characters without newline, got {len(row)}")


def write_index(path: Path, header: IndexHeader, rows: Iterable[str], mode: int = INDEX_MODE) -> None:
    """Write a whole index file atomically (readers see the old file or the new one)."""
    write_atomic(Path(path), index_text(header, rows), mode=mode)


def write_index_text(path: Path, text: str, mode: int = INDEX_MODE) -> None:
    """Write already-built index text (from :func:`build_index_for_fits`) atomically."""
    write_atomic(Path(path), text, mode=mode)


def append_index_rows(path: Path, rows: Sequence[str], now: datetime | None = None, flush: bool = True) -> None:
    """Append row lines to an existing index and rewrite ``last_modified`` in place.

    Every existing byte stays as it was except the ``last_modified`` line, rewritten with its
    own length (256), so GBTIDL's ``read_new_rows`` (new row lines only) keeps working.
    Rows are made durable before the header changes (``flush=False``: neither is flushed; for a
    fill whose journal flushes it later).
    """
    path = Path(path)
    for row in rows:
        _check_row(row)
    if not rows:
        return
    payload = "".join(row + "\n" for row in rows).encode("ascii")
    try:
        with open(path, "r+b") as handle:
            head = handle.read(16 * 1024)
            offset, old_line = _header_line_position(head, b"last_modified", path)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                raise IntegrityError("index does not end with a complete line", path)
            handle.seek(size)
            handle.write(payload)
            handle.flush()
            if flush:
                os.fsync(handle.fileno())
            if old_line is not None:
                stamp = asctime(now or datetime.now(UTC))
                new_line = f"last_modified = {stamp}".ljust(len(old_line)).encode("ascii")
                if len(new_line) == len(old_line):
                    handle.seek(offset)
                    handle.write(new_line)
                    handle.flush()
                    if flush:
                        os.fsync(handle.fileno())
                else:
                    log.warning("last_modified not updated: its line is too short to rewrite in place (%s)", path)
    except FileNotFoundError as err:
        raise InputError("index file not found", path) from err
    except OSError as err:
        raise OutputError(f"cannot append to index: {err.strerror}", path) from err


def next_index(path: Path, whole_rows_only: bool = False) -> int:
    """The INDEX the next appended row gets (= rows already in the file), without parsing rows.

    Rows are fixed-width, so this is the size of the rows section divided by the row length;
    a file where that does not divide evenly (a torn append) is an :class:`IntegrityError`.
    ``whole_rows_only``: for a reader that does not hold the project's lock, which may see the
    filler's append of rows partway (the file grows a page at a time); the whole rows are counted,
    as a line reader takes a line without its newline for not yet written.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
            size = handle.seek(0, os.SEEK_END)
    except FileNotFoundError as err:
        raise InputError("index file not found", path) from err
    marker = head.find(b"\n[rows]\n")
    column_row = head.find(b"#INDEX#", marker)
    if marker < 0 or column_row < 0:
        raise IntegrityError("not an index file: no [rows] section", path)
    rows_start = column_row + len(COLUMN_ROW) + 1
    rows_bytes = size - rows_start
    if rows_bytes < 0 or (rows_bytes % (ROW_WIDTH + 1) and not whole_rows_only):
        raise IntegrityError(f"index rows section is {rows_bytes} bytes, not whole {ROW_WIDTH}-character rows", path)
    return max(rows_bytes, 0) // (ROW_WIDTH + 1)


def last_row(path: Path, rows: int | None = None) -> dict[str, str] | None:
    """The fields of an index's last row (as :func:`parse_index_row`), None if it has none; O(1).

    ``rows``: the file's :func:`next_index`, when the caller has just read it.
    """
    path = Path(path)
    if (next_index(path) if rows is None else rows) == 0:  # next_index also checks the rows are whole
        return None
    with open(path, "rb") as handle:
        handle.seek(-(ROW_WIDTH + 1), os.SEEK_END)
        line = handle.read(ROW_WIDTH)
    try:
        return parse_index_row(line.decode("ascii"))
    except UnicodeDecodeError as err:
        raise IntegrityError("index's last row is not ASCII text", path) from err


def _rows_section(text: str) -> str:
    """Everything from ``[rows]`` on: what a check compares (header dates always differ)."""
    return text[text.find("\n[rows]\n") :]


def row_lines(text: str) -> list[str]:
    """The data rows of an index file's text."""
    return _rows_section(text).split("\n")[3:-1]  # after '', '[rows]' and the column-name row


def has_same_rows(current: str, fresh: str) -> bool:
    """True when the index text ``current`` holds the rows of ``fresh`` (a new build), in its order or another valid one."""
    if _rows_section(current) == _rows_section(fresh):
        return True
    # scans filled out of order are listed in fill order, a rebuild of a lost index sorts them
    return same_rows_in_any_order(row_lines(current), row_lines(fresh))


def same_rows_in_any_order(have: Sequence[str], fresh: Sequence[str]) -> bool:
    """True when the rows ``have`` are the freshly built rows ``fresh`` in another valid order.

    Valid: INDEX counts 0, 1, ..., each (FILE, EXT)'s ROWs ascend, and without INDEX the rows
    are the same multiset (the filler appends in fill order, a rebuild may sort by TIMESTAMP).
    """
    if len(have) != len(fresh):
        return False
    last_rows: dict[tuple[str, str], int] = {}
    for position, line in enumerate(have):
        fields = parse_index_row(line)
        if fields["#INDEX#"] != str(position) or not fields["ROW"].isdigit():
            return False
        key, row = (fields["FILE"], fields["EXT"]), int(fields["ROW"])
        if row <= last_rows.get(key, -1):
            return False
        last_rows[key] = row
    index_end = _SPANS["#INDEX#"][1]
    return Counter(line[index_end:] for line in have) == Counter(line[index_end:] for line in fresh)


def _header_line_position(head: bytes, key: bytes, path: Path) -> tuple[int, bytes | None]:
    """Byte offset and content (without newline) of the header line for ``key``."""
    if not head.startswith(b"[header]\n"):
        raise IntegrityError("not an index file: no [header] line", path)
    offset = 0
    for line in head.split(b"\n"):
        if line.startswith(b"[rows]"):
            break
        if line.split(b"=", 1)[0].strip().lower() == key:
            return offset, line
        offset += len(line) + 1
    return 0, None


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class IndexEntry:
    """The fields of one index row that locate it and its scan."""

    index: int
    file: str
    ext: int
    row: int
    scan: int
    intnum: int
    timestamp: str


@dataclass(frozen=True)
class IndexContents:
    """A parsed index file: header keys (lower case) and its rows."""

    header: dict[str, str]
    rows: tuple[IndexEntry, ...]

    @property
    def n_rows(self) -> int:
        """Number of data rows."""
        return len(self.rows)


def parse_index_row(line: str) -> dict[str, str]:
    """Column name -> stripped text of one row line (positions from :data:`INDEX_COLUMNS`)."""
    return {name: line[start:end].strip() for name, (start, end) in _SPANS.items()}


def read_index(path: Path) -> IndexContents:
    """Parse an index written by obsflow, the GBT filler or GBTIDL (spectral-line, v1.7)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as err:
        raise InputError("index file not found", path) from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read index: {err}", path) from err
    lines = text.split("\n")
    if lines[0] != "[header]":
        raise InputError("not an index file: first line is not [header]", path)
    header: dict[str, str] = {}
    number = 1
    while number < len(lines) and not lines[number].startswith("[rows]"):
        key, sep, value = lines[number].partition("=")
        if sep:
            header[key.strip().lower()] = value.strip()
        number += 1
    if number == len(lines):
        raise InputError("not an index file: no [rows] section", path)
    if header.get("version") != INDEX_VERSION:
        raise InputError(f"index version {header.get('version')!r} is not {INDEX_VERSION}", path)
    entries = []
    for line_number, line in enumerate(lines[number + 1 :], start=number + 2):
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("#INDEX#") and line.rstrip() != COLUMN_ROW.rstrip():
                raise InputError("not a spectral-line index: unexpected column row", path)
            continue
        if len(line) != ROW_WIDTH:
            raise InputError(f"index row has {len(line)} characters, expected {ROW_WIDTH}", f"{path}:{line_number}")
        entries.append(_entry(line, f"{path}:{line_number}"))
    return IndexContents(header=header, rows=tuple(entries))


def _entry(line: str, where: str) -> IndexEntry:
    def cell(name: str) -> str:
        start, end = _SPANS[name]
        return line[start:end].strip()

    try:
        return IndexEntry(index=int(cell("#INDEX#")), file=cell("FILE"), ext=int(cell("EXT")), row=int(cell("ROW")),
                          scan=int(cell("SCAN")), intnum=int(cell("INT")), timestamp=cell("TIMESTAMP"))  # fmt: skip
    except ValueError as err:
        raise InputError(f"unreadable index row: {err}", where) from err
