"""The SDFITS bank file on disk: create it, append a scan's rows in O(scan), roll an append back.

The ``SINGLE DISH`` table is the file's last HDU, so new rows go right after the
old end of data: write the rows and the zero padding to the 2880-byte block,
flush them to disk (fdatasync), and only *then* rewrite the 80-byte NAXIS2 card
in place and flush again.
Nothing before the old end of data changes except that card, so an append costs
the scan's bytes, whatever the file's size.  A new file is written whole through
a temp file and a rename.

Invariants:

* a reader never sees a row count that points at bytes not yet written; between
  the two flushes it sees the old rows (plus bytes past them it does not count);
* an append either completes or, on any write error, is rolled back so the file
  is byte for byte as before; a crash in between is undone by the caller's
  journal with :func:`undo_patches` / :func:`rollback` (old size + saved bytes).

The pieces, for the journal: :func:`plan_append` (reads, validates, encodes; writes
nothing) -> record ``plan.old_size`` and ``plan.undo`` -> :func:`apply_append`;
:func:`rollback` undoes it and is idempotent.  :func:`append_rows` does all three.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, TypeVar

import numpy as np

from obsflow.atomic import WRITE_CHUNK, write_atomic, write_atomic_with
from obsflow.errors import InputError, IntegrityError, OutputError
from obsflow.sdfits.columns import (
    BLOCK,
    CARD,
    COLUMN_NAMES,
    COLUMNS,
    EXTNAME,
    FILE_KEYWORDS,
    IDENTITY_KEYWORDS,
    extension_header,
    header_keywords,
    naxis2_card,
    padded,
    primary_header,
    row_dtype,
    tforms,
)
from obsflow.sdfits.spectra import SpectraInFile
from obsflow.writeback import Writeback

__all__ = [
    "AppendPlan",
    "SdfitsState",
    "append_rows",
    "apply_append",
    "apply_appends",
    "create_file",
    "encode_rows",
    "plan_append",
    "read_state",
    "rollback",
    "scans_in_file",
    "undo_patches",
    "write_at",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

FITS_MODE = 0o644  # the filler appends in place; users only read


Buffer = bytes | bytearray | memoryview


def _pwrite_all(fd: int, data: Buffer | Sequence[Buffer], offset: int) -> None:
    """Write all of ``data`` (one buffer, or several one after the other: one ``pwritev``) at ``offset``.

    One big buffer goes in WRITE_CHUNK pieces (its source stays in the CPU cache while pages are filled).
    Several are bytes or flat byte views (``len`` is their size: a scan's ~800 pieces are not cast again).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        whole = memoryview(data).cast("B")
        for start in range(0, whole.nbytes, WRITE_CHUNK):
            _pwrite_all(fd, [whole[start : start + WRITE_CHUNK]], offset + start)
        return
    views = list(data)
    first = 0
    while first < len(views):
        written = os.pwritev(fd, views[first : first + _IOV_MAX], offset)
        if written == 0 and any(map(len, views[first : first + _IOV_MAX])):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += written
        while first < len(views) and written >= len(views[first]):  # may stop inside a piece
            written -= len(views[first])
            first += 1
        if written:
            views[first] = memoryview(views[first])[written:]


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

#: every new byte an append puts in a file goes through this (one buffer, or several written one
#: after the other); tests swap it to inject a full disk (the seam, like restic's ``tempFile``).
#: Rollback restores old bytes with ``os.pwrite`` directly.
write_at: Callable[[int, Buffer | Sequence[Buffer], int], None] = _pwrite_all


@dataclass(frozen=True)
class SdfitsState:
    """A well-formed SDFITS file, as its headers and size describe it."""

    path: Path
    nrows: int  # NAXIS2
    nchan: int  # from TFORM7 = '<nchan>E'
    row_bytes: int  # NAXIS1
    header_start: int  # first byte of the table's header
    data_start: int  # first byte of row 0
    naxis2_offset: int  # first byte of the NAXIS2 card
    file_size: int
    keywords: Mapping[str, object]  # the file keywords (PROJID, BACKEND, SITELONG, DATE, SDFITVER, ...)

    @property
    def data_end(self) -> int:
        """One past the last row byte: appended rows start here."""
        return self.data_start + self.nrows * self.row_bytes


@dataclass(frozen=True, eq=False)
class AppendPlan:
    """One append, decided but not done: what to write where, and how to undo it."""

    path: Path
    old_size: int
    old_nrows: int
    new_nrows: int
    data_offset: int  # the old end of data
    rows: np.ndarray  # encoded rows (structured, big-endian; without DATA when ``spectra`` holds it)
    row_bytes: int  # one row in the file (NAXIS1)
    pad_bytes: int  # zeros after the rows, to the block
    spectra: SpectraInFile | None  # DATA still in the raw file (rows["DATA"] unset), else None
    naxis2_offset: int
    naxis2_card: bytes  # the new card
    undo: tuple[tuple[int, bytes], ...]  # (offset, old bytes) this append overwrites below old_size

    @property
    def rows_nbytes(self) -> int:
        """The new rows' bytes in the file."""
        return len(self.rows) * self.row_bytes

    @property
    def new_size(self) -> int:
        return self.data_offset + self.rows_nbytes + self.pad_bytes


# ----------------------------------------------------------------------------- reading


def read_state(path: Path) -> SdfitsState:
    """Check ``path`` is a complete SDFITS file whose last HDU is the ``SINGLE DISH`` table; say where things are.

    Raises
    ------
    InputError
        Missing, unreadable, not FITS, or not the filler's 74-column SDFITS layout.
    IntegrityError
        Truncated, bytes past the last row block (an interrupted append), or inconsistent table header.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            primary, table, data_start, end = _walk_hdus(handle, size, path)  # each header parsed once
    except FileNotFoundError as err:
        raise InputError("SDFITS file not found", path) from err
    except IsADirectoryError as err:
        raise InputError("SDFITS path is a folder, not a file", path) from err
    except OSError as err:
        raise InputError(f"cannot read SDFITS file: {err.strerror}", path) from err
    header_start, cards, values = table
    nrows, row_bytes, nchan = _check_table(values, path)
    if size < end:
        raise IntegrityError(
            f"SDFITS file is truncated: {size} bytes, its {nrows} rows need {end} (ends inside row "
            f"{max(0, (size - data_start) // row_bytes)})", path)  # fmt: skip
    if size > end:
        raise IntegrityError(
            f"SDFITS file has {size - end} bytes past its {nrows} rows (an interrupted append? recover it first)", path
        )
    keywords = {name: value for name, value in (*primary.items(), *values.items()) if name in FILE_KEYWORDS}
    naxis2_index = next(i for i, c in enumerate(cards) if c[:8] == "NAXIS2  ")
    return SdfitsState(
        path=path, nrows=nrows, nchan=nchan, row_bytes=row_bytes, header_start=header_start, data_start=data_start,
        naxis2_offset=header_start + naxis2_index * CARD, file_size=size, keywords=MappingProxyType(keywords),
    )  # fmt: skip


def _walk_hdus(
    handle: BinaryIO, size: int, path: Path
) -> tuple[dict[str, object], tuple[int, list[str], dict[str, object]], int, int]:
    """(primary header's values, (last HDU's header offset, its cards, their values), its data start,
    where its padded data ends)."""
    if handle.read(9) != b"SIMPLE  =":
        raise InputError("not a FITS file", path)
    primary_cards, offset = _read_header(handle, 0, size, path)
    primary = _values(primary_cards)
    offset += padded(_data_size(primary, primary=True, path=path))
    if offset >= size:
        raise InputError(f"not an SDFITS file: no '{EXTNAME}' binary table", path)
    while True:
        cards, data_start = _read_header(handle, offset, size, path)
        values = _values(cards)
        end = data_start + padded(_data_size(values, primary=False, path=path))
        handle.seek(end)
        if end >= size or handle.read(8) != b"XTENSION":
            return primary, (offset, cards, values), data_start, end
        offset = end


def _read_header(handle: BinaryIO, start: int, size: int, path: Path) -> tuple[list[str], int]:
    """The cards of the header at ``start`` and the offset after its last block."""
    handle.seek(start)
    cards: list[str] = []
    while True:
        block = handle.read(BLOCK)
        if len(block) < BLOCK:
            raise IntegrityError(f"FITS file is truncated inside a header (at byte {start}, size {size})", path)
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError as err:
            raise InputError(f"not a FITS file: header at byte {start} is not ASCII", path) from err
        for i in range(0, BLOCK, CARD):
            card = text[i : i + CARD]
            if card[:8] == "END     ":
                return cards, handle.tell()
            cards.append(card)


def _values(cards: list[str]) -> dict[str, object]:
    """Keyword -> value of the valued cards (strings unquoted, numbers and T/F converted)."""
    values: dict[str, object] = {}
    for card in cards:
        if card[8:10] == "= ":
            values.setdefault(card[:8].rstrip(), _parse_value(card[10:]))
    return values


@functools.lru_cache(maxsize=8192)  # a bank file's cards are the same at every fill (but NAXIS2's)
def _parse_value(field: str) -> object:
    text = field.strip()
    if text.startswith("'"):
        chars, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1 : i + 2] != "'":
                    break
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars).rstrip()
    token = text.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    for kind in (int, float):
        try:
            return kind(token.replace("D", "E"))
        except ValueError:
            continue
    return token


def _data_size(values: Mapping[str, object], primary: bool, path: Path) -> int:
    """Bytes of an HDU's data (unpadded), from its mandatory keywords."""

    def number(name: str, default: int | None = None) -> int:
        value = values.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"not a FITS file: bad or missing {name} ({value!r})", path)
        return value

    naxis = number("NAXIS")
    count = 1 if naxis else 0
    for n in range(1, naxis + 1):
        count *= number(f"NAXIS{n}")
    bytes_per = abs(number("BITPIX")) // 8
    if primary:
        return bytes_per * count
    return bytes_per * number("GCOUNT", 1) * (number("PCOUNT", 0) + count)


def _check_table(values: Mapping[str, object], path: Path) -> tuple[int, int, int]:
    """(NAXIS2, NAXIS1, nchan) of the last HDU (its header's values), once it is known to be the filler's table."""
    if values.get("XTENSION") != "BINTABLE" or values.get("EXTNAME") != EXTNAME:
        raise InputError(f"not an SDFITS file: its last HDU is not a '{EXTNAME}' binary table", path)
    names = [values.get(f"TTYPE{n}") for n in range(1, len(COLUMNS) + 1)]
    if values.get("TFIELDS") != len(COLUMNS) or tuple(names) != COLUMN_NAMES:
        raise InputError(
            f"not the GBT filler's SDFITS layout: {values.get('TFIELDS')} columns, not the {len(COLUMNS)} expected",
            path,
        )
    data_form = str(values.get("TFORM7", ""))
    if not (data_form.endswith("E") and data_form[:-1].isdigit() and int(data_form[:-1]) > 0):
        raise InputError(f"not the GBT filler's SDFITS layout: DATA is {data_form!r}, not '<nchan>E'", path)
    nchan = int(data_form[:-1])
    formats = tuple(str(values.get(f"TFORM{n}")) for n in range(1, len(COLUMNS) + 1))
    if formats != tforms(nchan):
        wrong = next(n for n, (a, b) in enumerate(zip(formats, tforms(nchan), strict=True), 1) if a != b)
        raise InputError(f"not the GBT filler's SDFITS layout: TFORM{wrong} is {formats[wrong - 1]!r}", path)
    if values.get("PCOUNT") != 0 or values.get("GCOUNT") != 1 or values.get("NAXIS") != 2:
        raise InputError("SDFITS table has a heap or several groups: rows cannot be appended", path)
    nrows, row_bytes = values.get("NAXIS2"), values.get("NAXIS1")
    if not isinstance(nrows, int) or nrows < 0:
        raise IntegrityError(f"SDFITS table has a bad NAXIS2 ({nrows!r})", path)
    if row_bytes != row_dtype(nchan).itemsize:
        width = row_dtype(nchan).itemsize
        raise IntegrityError(f"NAXIS1 is {row_bytes} but {nchan}-channel rows are {width} bytes", path)
    return nrows, row_bytes, nchan


def scans_in_file(path: Path) -> set[tuple[int, str]]:
    """Every (SCAN, TIMESTAMP) in the file, reading only those two fields of each row (memory-mapped)."""
    state = read_state(path)
    if state.nrows == 0:
        return set()
    full = row_dtype(state.nchan)
    fields = ("SCAN", "TIMESTAMP")
    offsets = [full.fields[f][1] for f in fields]  # type: ignore[index]
    only = np.dtype({"names": list(fields), "formats": [full[f] for f in fields], "offsets": offsets,
                     "itemsize": full.itemsize})  # fmt: skip
    table = np.memmap(state.path, dtype=only, mode="r", offset=state.data_start, shape=(state.nrows,))
    try:
        scan = np.array(table["SCAN"], dtype=np.int64)
        stamp = np.array(table["TIMESTAMP"])
    finally:
        del table
    # A scan's rows are contiguous: look at the first row of each run only.
    first = np.ones(scan.size, dtype=bool)
    first[1:] = (scan[1:] != scan[:-1]) | (stamp[1:] != stamp[:-1])
    return {(int(s), t.decode("ascii", "replace").rstrip()) for s, t in zip(scan[first], stamp[first], strict=True)}


# ----------------------------------------------------------------------------- encoding


def encode_rows(rows: Mapping[str, Any], nchan: int | None = None) -> np.ndarray:
    """Rows (column name -> one value per row) as the table's big-endian structured array.

    ``DATA`` is (rows, channels) float32; string columns are space-padded ASCII, cut to
    their TFORM width as the filler does.  Every one of the 74 columns must be given.
    DATA left in the raw file (:class:`SpectraInFile`) is not in the array: its rows hold
    the other 73 columns (a few hundred bytes each, not the 128 KiB rows of a file; the
    writer puts each spectrum between a row's columns before and after DATA).
    """
    missing = [name for name in COLUMN_NAMES if name not in rows]
    extra = sorted(set(rows) - set(COLUMN_NAMES))
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown {', '.join(extra)}"] if extra else []
        raise InputError(f"SDFITS rows do not have the 74 filler columns: {'; '.join(parts)}")
    data = rows["DATA"] if isinstance(rows["DATA"], SpectraInFile) else np.asarray(rows["DATA"])
    if data.ndim != 2 or data.dtype.kind != "f" or data.dtype.itemsize != 4:
        raise InputError(f"SDFITS DATA must be a (rows, channels) float32 array, not {data.dtype} {data.shape}")
    nrows, width = data.shape
    if nchan is not None and width != nchan:
        raise InputError(f"rows have {width} channels but the file holds {nchan}-channel spectra")
    in_file = isinstance(data, SpectraInFile)
    table = np.empty(nrows, dtype=_without_data(row_dtype(width)) if in_file else row_dtype(width))
    for column in COLUMNS:
        if column.name == "DATA" and in_file:
            continue  # read from the raw file by _write_rows
        values = np.asarray(rows[column.name])
        if values.shape[:1] != (nrows,):
            raise InputError(f"SDFITS column {column.name} has {values.shape[:1] or 'no'} rows, DATA has {nrows}")
        field = table.dtype[column.name]
        table[column.name] = _ascii(values, field.itemsize, column.name) if field.kind == "S" else _numbers(
            values, field, column.name)  # fmt: skip
    expected = f"({width},1,1,1)"
    if nrows and not np.all(np.char.rstrip(table["TDIM7"]) == expected.encode()):
        raise InputError(f"SDFITS column TDIM7 must be {expected!r} for {width}-channel DATA")
    return table


def _without_data(dtype: np.dtype) -> np.dtype:
    """A row's dtype without DATA: the columns before it, then those after it, packed."""
    return np.dtype([(name, dtype.fields[name][0]) for name in dtype.names if name != "DATA"])


def _ascii(values: np.ndarray, width: int, name: str) -> np.ndarray:
    if values.dtype.kind not in "US":
        raise InputError(f"SDFITS column {name} must hold strings, not {values.dtype}")
    if values.ndim == 1:
        return _ascii_cells(values, width, name)
    if values.size == 0:
        return np.zeros(values.shape, f"S{width}")  # numpy's ljust fails on empty arrays
    try:
        encoded = values.astype(f"S{values.dtype.itemsize // 4 or 1}") if values.dtype.kind == "U" else values
    except UnicodeError as err:
        raise InputError(f"SDFITS column {name} holds a non-ASCII string") from err
    if encoded.dtype.kind == "S" and values.dtype.kind == "S" and np.any(values.reshape(-1).view(np.uint8) > 127):
        raise InputError(f"SDFITS column {name} holds a non-ASCII string")
    lengths = np.char.str_len(encoded)
    if encoded.dtype.itemsize > width and np.any(lengths > width):
        log.warning("SDFITS column %s: strings longer than %d characters are cut", name, width)
    # numpy pads with NUL bytes; FITS text is padded with spaces (only past each string's end)
    cells = encoded.astype(f"S{width}")
    padding = np.arange(width) >= np.minimum(lengths, width)[..., None]
    cells.reshape(-1).view(np.uint8).reshape(*cells.shape, width)[padding] = ord(" ")
    return cells


def _ascii_cells(values: np.ndarray, width: int, name: str) -> np.ndarray:
    """:func:`_ascii` of a column: each distinct value encoded once (a scan's rows share most of them)."""
    if len(values) and (values == values[0]).all():  # most columns: one value for the scan
        distinct, which = values[:1], np.zeros(len(values), dtype=np.intp)
    else:
        distinct, which = np.unique(values, return_inverse=True)
    texts = distinct.tolist()
    if not all(value.isascii() for value in texts):
        raise InputError(f"SDFITS column {name} holds a non-ASCII string")
    if any(len(value) > width for value in texts):
        log.warning("SDFITS column %s: strings longer than %d characters are cut", name, width)
    encoded = (value if isinstance(value, bytes) else value.encode("ascii") for value in texts)
    cells = [text[:width].ljust(width) for text in encoded]  # FITS text is padded with spaces
    return np.array(cells, dtype=f"S{width}")[which.reshape(-1)]


def _numbers(values: np.ndarray, field: np.dtype, name: str) -> np.ndarray:
    if values.dtype.kind not in "iufb":
        raise InputError(f"SDFITS column {name} must hold numbers, not {values.dtype}")
    if field.kind == "i" and values.dtype.kind == "f":
        raise InputError(f"SDFITS column {name} must hold integers, not {values.dtype}")
    if field.kind == "i" and values.size:
        info = np.iinfo(field)
        if values.min() < info.min or values.max() > info.max:
            raise InputError(f"SDFITS column {name} has a value out of range for {field.str[1:]}")
    return values


# ----------------------------------------------------------------------------- writing


def create_file(
    path: Path, rows: Mapping[str, Any], keywords: Mapping[str, object], now: datetime | None = None
) -> None:
    """Write a new SDFITS file holding ``rows``: primary HDU + ``SINGLE DISH`` table, via temp file + rename.

    ``keywords``: PROJID, BACKEND, TELESCOP, SITELONG, SITELAT, SITEELEV (required) and
    optionally DATE, ORIGIN, INSTRUME, SDFITVER, FITSVER, CTYPE4 (see ``columns.header_keywords``).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise OutputError("SDFITS file already exists; append to it instead", path)
    table = encode_rows(rows)
    spectra = _spectra(rows)
    nchan = table.dtype["DATA"].shape[0] if spectra is None else spectra.nchan
    values = header_keywords(keywords, now)
    header = primary_header(values) + extension_header(nchan, len(table), values)
    if spectra is None:
        body = table.tobytes()
        write_atomic(path, header + body + bytes(padded(len(body)) - len(body)), mode=FITS_MODE)
    else:
        body_bytes = len(table) * row_dtype(nchan).itemsize
        tail = bytes(padded(body_bytes) - body_bytes)
        write_atomic_with(path, lambda fd: _write_new(fd, header, table, spectra, tail, body_bytes), mode=FITS_MODE)
    log.info("created %s with %d rows of %d channels", path, len(table), nchan)


def _write_new(fd: int, header: bytes, table: np.ndarray, spectra: SpectraInFile, tail: bytes, body_bytes: int) -> None:
    _pwrite_all(fd, header, 0)
    _write_rows(fd, table, spectra, len(header))
    _pwrite_all(fd, tail, len(header) + body_bytes)


def undo_patches(state: SdfitsState) -> list[tuple[int, bytes]]:
    """The bytes an append overwrites below the old file size: the NAXIS2 card and the old tail padding."""
    with open(state.path, "rb") as handle:
        handle.seek(state.naxis2_offset)
        card = handle.read(CARD)
        handle.seek(state.data_end)
        tail = handle.read(state.file_size - state.data_end)
    return [(state.naxis2_offset, card), (state.data_end, tail)]


def plan_append(
    path: Path, rows: Mapping[str, Any], keywords: Mapping[str, object] | None = None, state: SdfitsState | None = None
) -> AppendPlan:
    """Decide an append of ``rows`` to the existing file ``path``; nothing is written.

    ``keywords``, if given, must agree with the file on PROJID, BACKEND and TELESCOP.
    ``state``: the file's :func:`read_state`, when the caller has just read it (saves a header parse);
    :func:`apply_append` still refuses to write if the file changed since.

    Raises
    ------
    InputError
        The file is not SDFITS, or the rows do not fit it (channels, columns, project).
    IntegrityError
        The file is damaged or an earlier append was interrupted (see :func:`read_state`).
    """
    state = state if state is not None and state.path == Path(path) else read_state(path)
    for name in IDENTITY_KEYWORDS:
        if keywords and name in keywords and str(keywords[name]).strip() != str(state.keywords.get(name, "")):
            raise InputError(f"rows are for {name}={keywords[name]!r} but the file holds {state.keywords.get(name)!r}",
                             state.path)  # fmt: skip
    try:
        table = encode_rows(rows, state.nchan)
    except InputError as err:
        raise InputError(err.what, state.path) from err
    table_bytes = (state.nrows + len(table)) * state.row_bytes
    undo = undo_patches(state)
    naxis2_old = undo[0][1]
    return AppendPlan(
        path=state.path,
        old_size=state.file_size,
        old_nrows=state.nrows,
        new_nrows=state.nrows + len(table),
        data_offset=state.data_end,
        rows=table,
        row_bytes=state.row_bytes,
        pad_bytes=padded(table_bytes) - table_bytes,
        spectra=_spectra(rows),
        naxis2_offset=state.naxis2_offset,
        naxis2_card=_new_naxis2(naxis2_old, state.nrows + len(table)),
        undo=tuple(undo),
    )


def _new_naxis2(old: bytes, nrows: int) -> bytes:
    """The NAXIS2 card with ``nrows``, keeping the old card's comment (only the value field changes)."""
    value = f"{nrows:>20}".encode()
    if len(value) == 20 and old[10:30].strip().isdigit():
        return old[:10] + value + old[30:]
    return naxis2_card(nrows)


def apply_append(plan: AppendPlan) -> None:
    """Do ``plan``: rows + padding after the old end of data, flush, then the NAXIS2 card, flush.

    On any write error the file is rolled back to exactly its old bytes and
    :class:`OutputError` is raised.  If the file changed since the plan was made,
    :class:`IntegrityError` is raised and nothing is written.
    """
    apply_appends([plan])


def apply_appends(plans: Sequence[AppendPlan], flush: bool = True, beside: Callable[[], T] | None = None) -> T | None:
    """Do several plans (one per file: a scan's bank files) as :func:`apply_append` does one, flushing together.

    Every file's rows first, then one flush of them all (in parallel: a fill of four banks
    waits for the disk once, not four times), then every NAXIS2 card, then one flush of
    those.  Each file keeps the single append's guarantees; on any error every file is
    rolled back to its old bytes.  If any file changed since its plan was made,
    :class:`IntegrityError` is raised and nothing is written.

    ``flush=False``: no flush at all (the caller's journal keeps the fill undoable until it
    flushes later); NAXIS2 is still written after the rows, so a reader never sees a count
    beyond the rows written.

    ``beside`` (Python work that touches none of these files, e.g. formatting index rows) runs
    here while the rows go to disk (the first flush) or, without a flush, while the kernel copies
    them (a thread makes the system calls, prepared here first); its result is returned.  An
    exception from it is raised after the rows are written, before NAXIS2 changes (the caller
    rolls back).
    """
    opened: list[tuple[AppendPlan, int]] = []
    try:
        for plan in plans:
            try:
                opened.append((plan, os.open(plan.path, os.O_RDWR)))
            except OSError as err:
                raise OutputError(f"cannot open SDFITS file for appending: {err.strerror}", plan.path) from err
        for plan, fd in opened:
            _check_unchanged(fd, plan)
        result = _append_opened(opened, flush, beside)
    finally:
        for _, fd in opened:
            os.close(fd)
    for plan in plans:
        log.info("appended %d rows to %s (%d rows now)", len(plan.rows), plan.path, plan.new_nrows)
    return result


def _append_opened(
    opened: Sequence[tuple[AppendPlan, int]], flush: bool, beside: Callable[[], T] | None
) -> T | None:
    touched: list[tuple[AppendPlan, int]] = []
    plan = opened[0][0]  # the file being written, for an error message
    try:
        with contextlib.ExitStack() as mappings:
            writes = [(plan, fd, _rows_writer(fd, plan, mappings, start_write_out=flush)) for plan, fd in opened]

            def write_rows() -> None:
                nonlocal plan
                for plan, fd, write in writes:
                    touched.append((plan, fd))
                    write()

            if flush:
                write_rows()
                result = _fdatasync_all(opened, beside)  # the data and the new sizes; mtimes need not be durable
            else:
                result = _in_threads_beside([write_rows], beside)
        for plan, fd in opened:
            write_at(fd, plan.naxis2_card, plan.naxis2_offset)
        if flush:
            _fdatasync_all(opened)
    except InputError:
        _rollback_all(touched)  # a raw file went away under us
        raise
    except OSError as err:
        _rollback_all(touched)
        what = "disk full" if err.errno == errno.ENOSPC else f"cannot write: {err.strerror or err}"
        path = Path(err.filename) if err.filename else plan.path  # a flush names its file
        failed = next((p for p, _ in opened if p.path == path), plan)
        raise OutputError(f"{what} while appending {len(failed.rows)} rows; the file was left as it was",
                          path) from err  # fmt: skip
    return result


def _rollback_all(touched: Sequence[tuple[AppendPlan, int]]) -> None:
    for plan, fd in reversed(touched):
        _rollback_fd(fd, plan.path, plan.old_size, plan.undo)


def _spectra(rows: Mapping[str, Any]) -> SpectraInFile | None:
    return rows["DATA"] if isinstance(rows["DATA"], SpectraInFile) else None


def _write_rows(
    fd: int, table: np.ndarray, spectra: SpectraInFile | None, offset: int, start_write_out: bool = True
) -> None:
    """The encoded rows at ``offset``; with ``spectra``, their DATA cells come from the raw file instead."""
    with contextlib.ExitStack() as mappings:
        _prepared_rows(fd, table, spectra, offset, mappings, start_write_out)()


def _rows_writer(fd: int, plan: AppendPlan, mappings: contextlib.ExitStack, start_write_out: bool) -> Callable[[], None]:
    """Writes ``plan``'s rows and padding when called (prepared now: see :func:`_prepared_rows`)."""
    write_rows = _prepared_rows(fd, plan.rows, plan.spectra, plan.data_offset, mappings, start_write_out)

    def write() -> None:
        write_rows()
        write_at(fd, bytes(plan.pad_bytes), plan.data_offset + plan.rows_nbytes)

    return write


def _prepared_rows(
    fd: int, table: np.ndarray, spectra: SpectraInFile | None, offset: int, mappings: contextlib.ExitStack,
    start_write_out: bool,
) -> Callable[[], None]:
    """What writes the encoded rows at ``offset`` when called; with ``spectra``, their DATA cells come from
    the raw file instead.

    Each row's columns before DATA, its spectrum and its columns after DATA go to one ``pwritev``
    with more rows' (about :data:`ROWS_PER_CALL_BYTES` a call): the spectra straight from the raw
    file mapped read-only (the kernel copies page cache to page cache).  The mapping (kept open by
    ``mappings``) and every call's pieces are made now, so the call itself is only system calls:
    run in a thread, it leaves the interpreter to other work.  Where the raw file cannot be mapped
    its spectra are read a batch at a time into a buffer when called.  ``start_write_out``: the
    disk writes the first rows while the next are written (for a flush that follows at once;
    without one, the hint only slows the writes).
    """
    raw = memoryview(table.view(np.uint8).reshape(-1))  # its slices are the rows' pieces as they are
    writeback = Writeback(fd, offset, enabled=start_write_out)
    if spectra is None:

        def write_encoded() -> None:
            for start in range(0, len(raw), writeback.step):
                write_at(fd, raw[start : start + writeback.step], offset + start)
                writeback.written_to(offset + min(start + writeback.step, len(raw)))

        return write_encoded
    full = row_dtype(spectra.nchan)
    cell_at, row_bytes, others = full.fields["DATA"][1], full.itemsize, table.dtype.itemsize

    def pieces_of(first: int, cells: Sequence[Sequence[Buffer]]) -> list[Buffer]:
        pieces: list[Buffer] = []
        for row, cell in enumerate(cells, start=first):
            at = row * others
            pieces += (raw[at : at + cell_at], *cell, raw[at + cell_at : at + others])
        return pieces

    def write(first: int, pieces: list[Buffer], rows: int) -> None:
        try:
            write_at(fd, pieces, offset + first * row_bytes)
        except OSError as err:
            if err.errno == errno.EFAULT:  # the raw file was cut short under its mapping
                raise spectra.shrank() from err
            raise
        writeback.written_to(offset + (first + rows) * row_bytes)

    try:
        cells = mappings.enter_context(spectra.mapped_cells())
    except OSError as err:  # a file system that cannot map it: read it a batch at a time
        log.debug("cannot map %s (%s): reading its spectra instead", spectra.path, err)

        def write_read() -> None:
            for first, batch in spectra.in_batches():
                write(first, pieces_of(first, [[cell] for cell in batch]), len(batch))

        return write_read
    per_call = _rows_per_write(cells, row_bytes, writeback.step if start_write_out else None)
    batches = [(first, cells[first : first + per_call]) for first in range(0, len(cells), per_call)]
    calls = [(first, pieces_of(first, batch), len(batch)) for first, batch in batches]
    mappings.callback(calls.clear)  # every view of the mapping goes before it is closed

    def write_mapped() -> None:
        for first, pieces, rows in calls:
            write(first, pieces, rows)

    return write_mapped


#: bytes of rows per ``pwritev``.  A bigger call makes the kernel fill the page cache with 2 MiB folios,
#: and on memory this VM has handed back to its host each costs a host fault: 32 MiB of rows in one
#: call took 91 ms there, in ~1-2 MiB calls 37-40 ms (in memory just used, 35 vs 37 ms).
ROWS_PER_CALL_BYTES = 2 * 2**20


def _rows_per_write(cells: Sequence[Sequence[Buffer]], row_bytes: int, step: int | None) -> int:
    """Rows per ``pwritev``: its pieces within IOV_MAX, about :data:`ROWS_PER_CALL_BYTES`, and with a flush
    to follow, about ``step`` bytes (write-out hints)."""
    most_pieces = max((len(cell) for cell in cells), default=1) + 2
    rows = max(1, min(_IOV_MAX // most_pieces, ROWS_PER_CALL_BYTES // row_bytes))
    return rows if step is None else max(1, min(rows, step // row_bytes))


def _fdatasync_all(opened: Sequence[tuple[AppendPlan, int]], beside: Callable[[], T] | None = None) -> T | None:
    """Flush every file, each in a thread of its own (fdatasync releases the GIL for the whole wait: a
    scan's bank files wait for the disk together), while ``beside`` runs here; return what it returned.
    A failed flush is raised, naming its file, after every flush has ended."""
    return _in_threads_beside([functools.partial(_fdatasync_naming, plan, fd) for plan, fd in opened], beside)


#: while jobs run beside Python work, the GIL changes hands this often (s): at the default 5 ms a
#: job back from one system call waits that long for its next (a scan's rows are ~16 calls).
#: Alternated 20 fills x4 in one process: 20 us vs 200 us paired 0.94-1.03, median 0.955.
SWITCH_INTERVAL_S = 0.00002


def _in_threads_beside(jobs: Sequence[Callable[[], object]], work: Callable[[], T] | None) -> T | None:
    """Each of ``jobs`` in a thread of its own (their system calls release the GIL) while ``work`` runs
    here; return what ``work`` returned.  A job's error is raised after every job has ended, before
    ``work``'s.  One job and no work: the job runs here.

    Measured (32 MiB scan, no flush): index rows formatted beside the kernel's copy of the rows,
    prepared so that the thread only makes system calls, paired 0.90-0.96 against in turn; beside a
    thread that also built the pieces, 1.03-1.10 (the GIL handed back and forth).
    """
    if len(jobs) == 1 and work is None:
        jobs[0]()
        return None
    interval = sys.getswitchinterval()
    if work is not None:
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    try:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="append") as pool:
            running = [pool.submit(job) for job in jobs]
            try:
                return work() if work is not None else None
            finally:
                for job in running:
                    job.result()
    finally:
        sys.setswitchinterval(interval)


def _fdatasync_naming(plan: AppendPlan, fd: int) -> None:
    try:
        os.fdatasync(fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(plan.path)) from err


def _check_unchanged(fd: int, plan: AppendPlan) -> None:
    size = os.fstat(fd).st_size
    saved = dict(plan.undo)
    if size != plan.old_size or os.pread(fd, CARD, plan.naxis2_offset) != saved.get(plan.naxis2_offset):
        raise IntegrityError(f"SDFITS file changed since the append was planned ({size} bytes, "
                             f"planned for {plan.old_size}): another writer?", plan.path)  # fmt: skip


def rollback(path: Path, old_size: int, undo: Sequence[tuple[int, bytes]]) -> None:
    """Put an appended-to file back: restore the saved bytes, flush, cut to ``old_size``, flush. Idempotent.

    The header bytes go back first, so no reader ever sees a row count beyond the file's end.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as err:
        raise IntegrityError(f"cannot open SDFITS file to roll it back: {err.strerror}", path) from err
    try:
        _rollback_fd(fd, path, old_size, undo)
    finally:
        os.close(fd)


def _rollback_fd(fd: int, path: Path, old_size: int, undo: Sequence[tuple[int, bytes]]) -> None:
    size = os.fstat(fd).st_size
    if size < old_size:
        raise IntegrityError(f"SDFITS file is shorter ({size} bytes) than before the append ({old_size})", path)
    try:
        for offset, data in undo:
            _pwrite_all(fd, data, offset)
        os.fdatasync(fd)
        os.ftruncate(fd, old_size)
        os.fdatasync(fd)
    except OSError as err:
        raise IntegrityError(f"rollback failed ({err.strerror}); the journal must restore it", path) from err
    log.warning("rolled back %s to %d bytes", path, old_size)


def append_rows(path: Path, rows: Mapping[str, Any], keywords: Mapping[str, object] | None = None) -> int:
    """Append ``rows`` to the SDFITS file at ``path``, creating it if missing; return the first new row's number."""
    path = Path(path)
    if not path.exists():
        create_file(path, rows, keywords or {})
        return 0
    plan = plan_append(path, rows, keywords)
    apply_append(plan)
    return plan.old_nrows
