"""A small FITS reader for raw GBT device files: read once, view each binary table in place.

:func:`open_fits` reads the file once, walks its headers and views each binary table's
rows with a numpy dtype built from the ``TFORMn``/``TDIMn`` cards: a raw file costs a read
and a few hundred card parses, not astropy's per-table machinery (15-90 ms a file).
Anything the fast path does not handle exactly (long-string or HIERARCH cards, scaled,
bit or variable-length columns, non-ASCII text) is handed to astropy, so values are the
ones astropy gives.  A missing, truncated or malformed file is one
:class:`~obsflow.errors.InputError` naming the file.
"""

from __future__ import annotations

import functools
import io
import mmap
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from obsflow.errors import InputError

__all__ = [
    "FitsFile",
    "FitsHdu",
    "FitsTable",
    "as_strings",
    "find_table",
    "float_column",
    "open_fits",
    "read_cells",
    "read_only",
    "table_column",
]

FITS_BLOCK = 2880
CARD_BYTES = 80

_MALFORMED = (OSError, ValueError, VerifyError, TypeError, IndexError, KeyError, UnicodeError, Warning)


# ---------------------------------------------------------------------------------------------------------------------
# FITS access

_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
_VALUE = re.compile(
    r" *(?:'(?P<str>(?:[ -&(-~]|'')*)'|(?P<bool>[TF])|(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?P<exp>[DE][+-]?\d+)?))"
    r" *(?:/.*)?"
)
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})
_TFORM = re.compile(r" *(\d*)([LXBIJKAEDCMPQ])(.*)")
_TDIM = re.compile(r" *\( *(\d+(?: *, *\d+)*) *\) *")
_FIELD_BYTES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_NUMERIC = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16"}


def _malformed(err: BaseException, path: Path) -> InputError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"malformed FITS file: {reason[:120]}", path)


@dataclass(frozen=True)
class _ColumnSpec:
    name: str
    field: str | None  # the numpy field holding it, None when astropy must decode it
    code: str  # TFORM letter
    offset: int = 0  # first byte of the cell within a row
    dtype: Any = None  # numpy dtype of one cell (None: left to astropy)
    unread: bool = False  # left in the file (open_fits(unread=...)): see FitsTable.cell_offsets


class FitsTable:
    """A binary table's rows, viewed in place; :meth:`column` decodes one column."""

    def __init__(
        self, records: np.ndarray, specs: tuple[_ColumnSpec, ...], decode_slowly: Callable[[str], Any], data_at: int = 0
    ):
        self._records = records
        self._specs = {spec.name.upper(): spec for spec in reversed(specs)}  # first of a repeated name wins
        self._decode_slowly = decode_slowly
        self._data_at = data_at
        self.names: tuple[str, ...] = tuple(spec.name for spec in specs)

    def __len__(self) -> int:
        return len(self._records)

    def column(self, name: str) -> np.ndarray:
        """One column (case-insensitive name), as astropy gives it; a KeyError if there is none."""
        spec = self._specs[name.upper()]
        if spec.unread:
            raise ValueError(f"column {name} was left in the file: use cell_offsets()")
        if spec.field is None:
            return np.asarray(self._decode_slowly(spec.name))
        values = self._records[spec.field]
        if spec.code == "L":
            return values == ord("T")
        if spec.code == "A":
            try:
                return np.char.rstrip(np.char.decode(values, "ascii"))
            except UnicodeDecodeError:
                return np.asarray(self._decode_slowly(spec.name))
        return values

    def cell_offsets(self, name: str) -> tuple[np.ndarray, np.dtype]:
        """Where each row's ``name`` cell starts in the file (bytes), and the cell's dtype; a KeyError if no such column.

        For columns read with ``open_fits(unread=...)``: their bytes stay in the file until
        someone copies or reads them from there.
        """
        spec = self._specs[name.upper()]
        if spec.dtype is None:
            raise ValueError(f"column {name} is not a plain numeric array")
        rows = np.arange(len(self._records), dtype=np.int64)
        return self._data_at + rows * self._records.dtype.itemsize + spec.offset, np.dtype(spec.dtype)


@dataclass(frozen=True)
class FitsHdu:
    """One HDU: its name (EXTNAME, ``PRIMARY`` first), keyword values and, for a binary table, its rows."""

    name: str
    header: Mapping[str, Any] = field(hash=False, compare=False)
    table: FitsTable | None = field(hash=False, compare=False)


@dataclass(frozen=True)
class FitsFile:
    """A whole FITS file, checked complete, with its HDUs in file order."""

    path: Path
    hdus: tuple[FitsHdu, ...]

    def __iter__(self) -> Iterator[FitsHdu]:
        return iter(self.hdus)

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    @property
    def primary(self) -> FitsHdu:
        return self.hdus[0]

    def find(self, name: str) -> FitsHdu | None:
        """The first HDU called ``name`` (case-insensitive), if any."""
        wanted = name.upper()
        return next((hdu for hdu in self.hdus if hdu.name.upper() == wanted), None)


def open_fits(path: Path, unread: Collection[str] = ()) -> FitsFile:
    """Read a FITS file into memory, checking that every HDU is complete.

    Binary-table columns named in ``unread`` are not read (their bytes stay in the file, see
    :meth:`FitsTable.cell_offsets`): a VEGAS file's spectra go from the raw file to the SDFITS
    file inside the kernel, so reading them here would be a copy for nothing.

    Raises
    ------
    InputError
        The file is missing, unreadable, truncated (e.g. being rewritten) or not FITS.
    """
    path = Path(path)
    source = _SparseFile(path, unread) if unread else _WholeFile(path)
    payload = source.payload
    if not len(payload) or len(payload) % FITS_BLOCK:
        raise InputError(f"truncated FITS file ({len(payload)} bytes, not a multiple of {FITS_BLOCK})", path)
    hdus: list[FitsHdu] = []
    offset = 0
    with source:
        while offset < len(payload):
            source.load_header(offset)
            is_extension = payload[offset : offset + 9] == b"XTENSION="
            if hdus and not is_extension and payload[offset:].count(b"\0") == len(payload) - offset:
                raise InputError("malformed FITS file: unexpected extra padding at the end of the file", path)
            header, data_at = _parse_header(payload, offset, path, is_primary=not hdus)
            size = _data_bytes(header, path)
            if data_at + size > len(payload):
                raise InputError("truncated FITS file (an HDU runs past the end)", path)
            specs = _column_specs(header, path, source.unread) if _is_bintable(header) else ()
            source.load_data(data_at, size, header, specs)
            hdus.append(_hdu(payload, len(hdus), header, data_at, specs, path))
            offset = data_at + -(-size // FITS_BLOCK) * FITS_BLOCK
    return FitsFile(path=path, hdus=tuple(hdus))


class _WholeFile:
    """The whole file, read at once (every FITS file but the big VEGAS ones)."""

    unread: frozenset[str] = frozenset()

    def __init__(self, path: Path) -> None:
        self.payload: bytes = _read_bytes(path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def load_header(self, offset: int) -> None:
        pass

    def load_data(self, data_at: int, size: int, header: Mapping[str, Any], specs: Sequence[_ColumnSpec]) -> None:
        pass


class _SparseFile:
    """The file in a zero-filled anonymous map of its size, loaded piece by piece, skipping unread columns."""

    def __init__(self, path: Path, unread: Collection[str]) -> None:
        self.path = path
        self.unread = frozenset(name.upper() for name in unread)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as err:
            raise InputError("file named in the scan log is missing", path) from err
        except OSError as err:
            raise InputError(f"cannot read FITS file: {err.strerror}", path) from err
        size = os.fstat(self._fd).st_size
        # untouched pages of an anonymous map cost nothing: the unread cells are never paid for
        self.payload = mmap.mmap(-1, size) if size else b""
        self._view = memoryview(self.payload) if size else memoryview(b"")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def _load(self, start: int, stop: int) -> None:
        while start < stop:
            got = os.preadv(self._fd, [self._view[start:stop]], start)
            if got == 0:
                raise InputError("truncated FITS file (it shrank while being read)", self.path)
            start += got

    def load_header(self, offset: int) -> None:
        """The header blocks from ``offset`` up to its END card (or the end of the file)."""
        size = len(self.payload)
        while offset < size:
            self._load(offset, min(offset + FITS_BLOCK, size))
            block = self.payload[offset : offset + FITS_BLOCK]
            offset += FITS_BLOCK
            if any(block[i : i + 8] == b"END     " for i in range(0, len(block), CARD_BYTES)):
                return

    def load_data(self, data_at: int, size: int, header: Mapping[str, Any], specs: Sequence[_ColumnSpec]) -> None:
        skipped = [spec for spec in specs if spec.unread]
        if not skipped:
            self._load(data_at, data_at + size)
            return
        # Read the bytes between unread cells: within a row, and from one row's last to the next row's first.
        row_bytes, nrows = int(header["NAXIS1"]), int(header["NAXIS2"])
        holes = sorted((spec.offset, spec.offset + np.dtype(spec.dtype).itemsize) for spec in skipped)
        position = data_at
        for row in range(nrows):
            base = data_at + row * row_bytes
            for start, stop in holes:
                self._load(position, base + start)
                position = base + stop
        self._load(position, data_at + size)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise InputError("file named in the scan log is missing", path) from err
    except OSError as err:
        raise InputError(f"cannot read FITS file: {err.strerror}", path) from err


def _parse_header(payload: bytes, offset: int, path: Path, is_primary: bool) -> tuple[Mapping[str, Any], int]:
    """One header's keyword values (first occurrence wins, as astropy's ``header[key]``) and where its data start."""
    _check_first_card(payload[offset : offset + 9], is_primary, path)
    values: dict[str, Any] = {}
    needs_astropy = False
    position = offset
    while True:
        if position + FITS_BLOCK > len(payload):
            raise InputError("truncated FITS file (a header has no END card)", path)
        try:
            block = payload[position : position + FITS_BLOCK].decode("ascii")
        except UnicodeDecodeError as err:
            raise _malformed(err, path) from err
        position += FITS_BLOCK
        for start in range(0, FITS_BLOCK, CARD_BYTES):
            card = block[start : start + CARD_BYTES]
            key = card[:8].rstrip()
            if key == "END":
                text = payload[offset:position].decode("ascii")
                header = _astropy_header(text, path) if needs_astropy else values
                return MappingProxyType(header), position
            if needs_astropy:
                continue
            if card[8:10] != "= ":
                needs_astropy = key not in _COMMENTARY
                continue
            value = _VALUE.fullmatch(card, 10)
            if value is None or not _KEYWORD.fullmatch(key):
                needs_astropy = True
            elif key not in values:
                values[key] = _card_value(value)


def _card_value(match: re.Match[str]) -> Any:
    if (text := match.group("str")) is not None:
        return text.replace("''", "'").rstrip()
    if (flag := match.group("bool")) is not None:
        return flag == "T"
    number = match.group("num")
    if "." in number or match.group("exp"):
        return float(number.replace("D", "E"))
    return int(number)


def _astropy_header(text: str, path: Path) -> dict[str, Any]:
    """Keyword values of a header with cards the fast path leaves to astropy (CONTINUE, HIERARCH, odd values)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            header = fits.Header.fromstring(text)
            return {key: header[key] for key in header if key and key not in ("COMMENT", "HISTORY")}
    except _MALFORMED as err:
        raise _malformed(err, path) from err


def _check_first_card(start: bytes, is_primary: bool, path: Path) -> None:
    if start != (b"SIMPLE  =" if is_primary else b"XTENSION="):
        what = "no SIMPLE card, not a FITS file" if is_primary else "an extension does not start with XTENSION"
        raise InputError(f"malformed FITS file: {what}", path)


def _int_card(header: Mapping[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = header.get(key, default)
    if type(value) is not int:
        raise InputError(f"malformed FITS file: {key} is {value!r}, not an integer", path)
    return value


def _data_bytes(header: Mapping[str, Any], path: Path) -> int:
    """The data size the header declares: |BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)."""
    naxis = _int_card(header, "NAXIS", path)
    axes = [_int_card(header, f"NAXIS{i}", path) for i in range(1, naxis + 1)]
    if axes and axes[0] == 0 and header.get("GROUPS") is True:
        axes = axes[1:]  # random groups: NAXIS1 = 0 is not an axis
    count = int(np.prod(axes, dtype=np.int64)) if axes else 0
    bitpix = abs(_int_card(header, "BITPIX", path))
    return bitpix // 8 * _int_card(header, "GCOUNT", path, 1) * (_int_card(header, "PCOUNT", path, 0) + count)


def _is_bintable(header: Mapping[str, Any]) -> bool:
    return str(header.get("XTENSION", "")).strip() == "BINTABLE"


def _hdu(
    payload: bytes, index: int, header: Mapping[str, Any], data_at: int, specs: Sequence[_ColumnSpec], path: Path
) -> FitsHdu:
    name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip()
    table = _bintable(payload, index, header, data_at, specs, path) if _is_bintable(header) else None
    return FitsHdu(name=name, header=header, table=table)


def _column_specs(header: Mapping[str, Any], path: Path, unread: frozenset[str] = frozenset()) -> tuple[_ColumnSpec, ...]:
    """Each column of a binary table: its numpy field (if numpy can hold it exactly) and where it sits in a row.

    A column named in ``unread`` is marked so, if it is a plain numeric array (anything else is read).
    """
    row_bytes = _int_card(header, "NAXIS1", path)
    specs: list[_ColumnSpec] = []
    offset = 0
    for number in range(1, _int_card(header, "TFIELDS", path, 0) + 1):
        name = str(header.get(f"TTYPE{number}", "")).strip()
        form = _TFORM.fullmatch(str(header.get(f"TFORM{number}", "")))
        if form is None:
            raise InputError(f"malformed FITS file: TFORM{number} is {header.get(f'TFORM{number}')!r}", path)
        repeat, code = int(form.group(1) or 1), form.group(2)
        width = (repeat + 7) // 8 if code == "X" else repeat * _FIELD_BYTES[code]
        dtype = _field_dtype(code, repeat, header, number)
        skip = name.upper() in unread and dtype is not None and code not in "AL"
        specs.append(_ColumnSpec(name=name, field=None if dtype is None else f"c{number}", code=code, offset=offset,
                                 dtype=dtype, unread=skip))  # fmt: skip
        offset += width
    if offset > row_bytes:
        raise InputError(f"malformed FITS file: columns need {offset} bytes, NAXIS1 is {row_bytes}", path)
    return tuple(specs)


def _bintable(
    payload: bytes, index: int, header: Mapping[str, Any], data_at: int, specs: Sequence[_ColumnSpec], path: Path
) -> FitsTable:
    """The rows of a binary table as a structured view; columns numpy cannot hold exactly are left to astropy."""
    row_bytes = _int_card(header, "NAXIS1", path)
    nrows = _int_card(header, "NAXIS2", path)
    fields = [spec for spec in specs if spec.field is not None and not spec.unread]
    names = [spec.field for spec in fields]
    formats = [spec.dtype for spec in fields]
    offsets = [spec.offset for spec in fields]
    try:
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": row_bytes})
        records = np.frombuffer(payload, dtype=dtype, count=nrows, offset=data_at) if row_bytes else np.empty(0, dtype)
    except (ValueError, TypeError) as err:
        raise _malformed(err, path) from err
    return FitsTable(records, tuple(specs), functools.partial(_astropy_column, payload, index, path), data_at)


def _field_dtype(code: str, repeat: int, header: Mapping[str, Any], number: int) -> Any:
    """The numpy dtype of a column, or None when astropy must decode it (scaled, bits, heap, odd TDIM)."""
    if repeat == 0 or f"TSCAL{number}" in header or f"TZERO{number}" in header:
        return None
    tdim = header.get(f"TDIM{number}")
    if code == "A":
        return None if tdim is not None else f"S{repeat}"
    base = "u1" if code == "L" else _NUMERIC.get(code)
    if base is None:
        return None
    if tdim is None:
        return base if repeat == 1 else (base, (repeat,))
    dims = _TDIM.fullmatch(str(tdim))
    if dims is None:
        return None
    shape = tuple(int(d) for d in reversed(dims.group(1).split(",")))
    return (base, shape) if int(np.prod(shape)) == repeat and repeat > 1 else None


def _astropy_column(payload: bytes, index: int, path: Path, name: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with fits.open(io.BytesIO(payload), lazy_load_hdus=False, memmap=False) as hdus:
                return np.array(hdus[index].data[name])
    except _MALFORMED as err:
        raise _malformed(err, path) from err


def read_cells(path: Path, offsets: np.ndarray, cell: np.dtype) -> np.ndarray:
    """The cells of a column left in the file (:meth:`FitsTable.cell_offsets`), read now: shape (rows, *cell.shape)."""
    out = np.empty(len(offsets), dtype=cell)  # numpy unfolds the cell: shape (rows, *cell.shape)
    view = memoryview(out.reshape(-1).view(np.uint8))
    try:
        with open(path, "rb", buffering=0) as handle:
            for row, offset in enumerate(offsets.tolist()):
                part = view[row * cell.itemsize : (row + 1) * cell.itemsize]
                if os.preadv(handle.fileno(), [part], offset) != cell.itemsize:
                    raise InputError("truncated FITS file (it shrank while being read)", path)
    except OSError as err:
        raise InputError(f"cannot read FITS file: {err.strerror}", path) from err
    return out


def find_table(hdus: FitsFile, name: str, path: Path) -> FitsTable:
    hdu = hdus.find(name)
    if hdu is None:
        raise InputError(f"FITS file has no {name} table", path)
    if hdu.table is None or not hdu.table.names:
        raise InputError(f"{name} table is empty", path)
    return hdu.table


def table_column(table: FitsTable, name: str, path: Path) -> np.ndarray:
    try:
        return table.column(name)
    except KeyError as err:
        raise InputError(f"table has no {name} column", path) from err


def as_strings(values: Any) -> tuple[str, ...]:
    return tuple(str(v).strip().rstrip("\x00") for v in np.atleast_1d(values))


def float_column(table: FitsTable, name: str, path: Path) -> np.ndarray:
    """A column as a read-only float64 array (safe to share from the cache)."""
    return read_only(table_column(table, name, path).astype(float))


def read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values
