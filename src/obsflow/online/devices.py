"""Raw GBT device files (GO, Antenna, LO1, IF, receiver, VEGAS, DCR) and the small FITS reader under them.

The ``read_*`` functions read one device file each into a frozen value.  They sit on
:func:`open_fits`, which reads the file once, walks its headers and views each binary
table's rows in place with a numpy dtype built from the ``TFORMn``/``TDIMn`` cards: a
raw file costs a read and a few hundred card parses, not astropy's per-table machinery.
Anything the fast path does not handle exactly (long-string or HIERARCH cards, scaled,
bit or variable-length columns, non-ASCII text) is handed to astropy, so values are
the ones astropy gives.

Device metadata files are written once and read for every bank of a scan (and a
receiver's calibration file for every scan), so their readers keep the last values per
file version (path, inode, size, mtime): a changed file is read again.  Cached values
are frozen and their arrays read-only.

Invariant: nothing here writes; a missing, unreadable, truncated or malformed file is
one :class:`~obsflow.errors.InputError` naming the file.
"""

from __future__ import annotations

import functools
import io
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from obsflow.errors import InputError

__all__ = [
    "AntennaFile",
    "CalTable",
    "DcrFile",
    "FitsFile",
    "FitsHdu",
    "FitsTable",
    "GoFile",
    "IfPath",
    "IfWindow",
    "Lo1File",
    "ReceiverFile",
    "VegasBank",
    "VegasSampler",
    "open_fits",
    "read_antenna",
    "read_dcr",
    "read_go",
    "read_if",
    "read_lo1",
    "read_receiver",
    "read_vegas_bank",
]

FITS_BLOCK = 2880
CARD_BYTES = 80
CACHE_ENTRIES = 256  # device metadata files remembered (a few KiB each)

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


class FitsTable:
    """A binary table's rows, viewed in place; :meth:`column` decodes one column."""

    def __init__(self, records: np.ndarray, specs: tuple[_ColumnSpec, ...], decode_slowly: Callable[[str], Any]):
        self._records = records
        self._specs = {spec.name.upper(): spec for spec in reversed(specs)}  # first of a repeated name wins
        self._decode_slowly = decode_slowly
        self.names: tuple[str, ...] = tuple(spec.name for spec in specs)

    def __len__(self) -> int:
        return len(self._records)

    def column(self, name: str) -> np.ndarray:
        """One column (case-insensitive name), as astropy gives it; a KeyError if there is none."""
        spec = self._specs[name.upper()]
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


def open_fits(path: Path) -> FitsFile:
    """Read a whole FITS file into memory, checking that every HDU is complete.

    Raises
    ------
    InputError
        The file is missing, unreadable, truncated (e.g. being rewritten) or not FITS.
    """
    path = Path(path)
    payload = _read_bytes(path)
    if not payload or len(payload) % FITS_BLOCK:
        raise InputError(f"truncated FITS file ({len(payload)} bytes, not a multiple of {FITS_BLOCK})", path)
    hdus: list[FitsHdu] = []
    offset = 0
    while offset < len(payload):
        is_extension = payload[offset : offset + 9] == b"XTENSION="
        if hdus and not is_extension and payload.count(b"\0", offset) == len(payload) - offset:
            raise InputError("malformed FITS file: unexpected extra padding at the end of the file", path)
        header, data_at = _parse_header(payload, offset, path, is_primary=not hdus)
        size = _data_bytes(header, path)
        if data_at + size > len(payload):
            raise InputError("truncated FITS file (an HDU runs past the end)", path)
        hdus.append(_hdu(payload, len(hdus), header, data_at, path))
        offset = data_at + -(-size // FITS_BLOCK) * FITS_BLOCK
    return FitsFile(path=path, hdus=tuple(hdus))


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


def _hdu(payload: bytes, index: int, header: Mapping[str, Any], data_at: int, path: Path) -> FitsHdu:
    name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip()
    table = None
    if str(header.get("XTENSION", "")).strip() == "BINTABLE":
        table = _bintable(payload, index, header, data_at, path)
    return FitsHdu(name=name, header=header, table=table)


def _bintable(payload: bytes, index: int, header: Mapping[str, Any], data_at: int, path: Path) -> FitsTable:
    """The rows of a binary table as a structured view; columns numpy cannot hold exactly are left to astropy."""
    row_bytes = _int_card(header, "NAXIS1", path)
    nrows = _int_card(header, "NAXIS2", path)
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
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
        field_name = None
        if dtype is not None:
            field_name = f"c{number}"
            names.append(field_name)
            formats.append(dtype)
            offsets.append(offset)
        specs.append(_ColumnSpec(name=name, field=field_name, code=code))
        offset += width
    if offset > row_bytes:
        raise InputError(f"malformed FITS file: columns need {offset} bytes, NAXIS1 is {row_bytes}", path)
    try:
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": row_bytes})
        records = np.frombuffer(payload, dtype=dtype, count=nrows, offset=data_at) if row_bytes else np.empty(0, dtype)
    except (ValueError, TypeError) as err:
        raise _malformed(err, path) from err
    return FitsTable(records, tuple(specs), functools.partial(_astropy_column, payload, index, path))


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


def _table(hdus: FitsFile, name: str, path: Path) -> FitsTable:
    hdu = hdus.find(name)
    if hdu is None:
        raise InputError(f"FITS file has no {name} table", path)
    if hdu.table is None or not hdu.table.names:
        raise InputError(f"{name} table is empty", path)
    return hdu.table


def _column(table: FitsTable, name: str, path: Path) -> np.ndarray:
    try:
        return table.column(name)
    except KeyError as err:
        raise InputError(f"table has no {name} column", path) from err


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(v).strip().rstrip("\x00") for v in np.atleast_1d(values))


def _floats(table: FitsTable, name: str, path: Path) -> np.ndarray:
    """A column as a read-only float64 array (safe to share from the cache)."""
    return _read_only(_column(table, name, path).astype(float))


def _read_only(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


# ---------------------------------------------------------------------------------------------------------------------
# Per-file-version cache

_T = TypeVar("_T")
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _file_version(path: Path) -> tuple[Any, ...]:
    try:
        status = path.stat()
    except FileNotFoundError as err:
        raise InputError("file named in the scan log is missing", path) from err
    except OSError as err:
        raise InputError(f"cannot read FITS file: {err.strerror}", path) from err
    return (str(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _cached(read: Callable[[Path], _T]) -> Callable[[Path], _T]:
    """``read``, remembering its value per file version (path, inode, size, mtime_ns); the newest CACHE_ENTRIES."""

    @functools.wraps(read)
    def cached_read(path: Path) -> _T:
        path = Path(path)
        key = (read.__name__, *_file_version(path))
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]  # type: ignore[no-any-return]
        value = read(path)
        with _cache_lock:
            _cache[key] = value
            while len(_cache) > CACHE_ENTRIES:
                _cache.popitem(last=False)
        return value

    return cached_read


# ---------------------------------------------------------------------------------------------------------------------
# Device files


@dataclass(frozen=True)
class IfWindow:
    """One row of the GO ``IFWINDOWS`` table: a spectral window on a backend input."""

    bank: str
    port: int
    ifnum: int
    feed: int
    pol: str
    restfreq_hz: float
    nchan: int
    bandwidth_hz: float
    subband: int


@dataclass(frozen=True)
class GoFile:
    """The GO file: scan metadata in its primary header, spectral windows in ``IFWINDOWS``."""

    path: Path
    header: Mapping[str, Any] = field(hash=False, compare=False)
    windows: tuple[IfWindow, ...] = ()


@_cached
def read_go(path: Path) -> GoFile:
    """Read a GO file."""
    hdus = open_fits(path)
    windows: tuple[IfWindow, ...] = ()
    hdu = hdus.find("IFWINDOWS")
    if hdu is not None and hdu.table is not None and hdu.table.names:
        t = hdu.table
        subband = _column(t, "SUBBAND", path).tolist() if "SUBBAND" in t.names else [0] * len(t)
        columns = [_column(t, name, path).tolist()
                   for name in ("BANK_A", "PORT_A", "IFNUM", "FEED", "POL", "RESTFREQ", "NCHANS", "BANDWIDTH")]
        windows = tuple(
            IfWindow(bank=str(bank).strip(), port=int(port), ifnum=int(ifnum), feed=int(feed), pol=str(pol).strip(),
                     restfreq_hz=float(rest), nchan=int(nchan), bandwidth_hz=float(bw), subband=int(sub))
            for bank, port, ifnum, feed, pol, rest, nchan, bw, sub in zip(*columns, subband, strict=True)
        )  # fmt: skip
    return GoFile(path=Path(path), header=hdus.primary.header, windows=windows)


@dataclass(frozen=True)
class AntennaFile:
    """Antenna pointing versus time (``ANTPOSGR``), site, weather and beam offsets."""

    path: Path
    header: Mapping[str, Any] = field(hash=False, compare=False)
    dmjd: np.ndarray = field(hash=False, compare=False)
    ra_deg: np.ndarray = field(hash=False, compare=False)
    dec_deg: np.ndarray = field(hash=False, compare=False)
    az_deg: np.ndarray = field(hash=False, compare=False)
    el_deg: np.ndarray = field(hash=False, compare=False)
    beam_offsets: Mapping[str, tuple[float, float]] = field(hash=False, compare=False)  # name -> (xel, el) deg

    def at(self, dmjd: np.ndarray) -> dict[str, np.ndarray]:
        """Pointing linearly interpolated at ``dmjd`` (azimuth unwrapped first)."""
        az = np.degrees(np.unwrap(np.radians(self.az_deg)))
        ra = np.degrees(np.unwrap(np.radians(self.ra_deg)))
        return {
            "ra": np.interp(dmjd, self.dmjd, ra) % 360.0,
            "dec": np.interp(dmjd, self.dmjd, self.dec_deg),
            "az": np.interp(dmjd, self.dmjd, az) % 360.0,
            "el": np.interp(dmjd, self.dmjd, self.el_deg),
        }


@_cached
def read_antenna(path: Path) -> AntennaFile:
    """Read an Antenna file (observed az/el: ``OBSC_AZ``/``OBSC_EL``, else ``MNT_AZ``/``MNT_EL``)."""
    path = Path(path)
    hdus = open_fits(path)
    table = _table(hdus, "ANTPOSGR", path)
    az_name, el_name = ("OBSC_AZ", "OBSC_EL") if "OBSC_AZ" in table.names else ("MNT_AZ", "MNT_EL")
    dmjd = _floats(table, "DMJD", path)
    if dmjd.size == 0:
        raise InputError("Antenna file has no pointing samples", path)
    offsets: dict[str, tuple[float, float]] = {}
    beams = hdus.find("BEAM_OFFSETS")
    if beams is not None and beams.table is not None and beams.table.names:
        columns = (_column(beams.table, name, path).tolist() for name in ("NAME", "BEAMXELOFFSET", "BEAMELOFFSET"))
        for name, xel, el in zip(*columns, strict=True):
            offsets[str(name).strip()] = (float(xel), float(el))
    return AntennaFile(
        path=path,
        header=hdus.primary.header,
        dmjd=dmjd,
        ra_deg=_floats(table, "RAJ2000", path),
        dec_deg=_floats(table, "DECJ2000", path),
        az_deg=_floats(table, az_name, path),
        el_deg=_floats(table, el_name, path),
        beam_offsets=MappingProxyType(offsets),
    )


@dataclass(frozen=True)
class Lo1File:
    """The first LO: Doppler setup in the header, ``LO1TBL`` (LO1 frequency, VFRAME, RVSYS) versus time."""

    path: Path
    header: Mapping[str, Any] = field(hash=False, compare=False)
    dmjd: np.ndarray = field(hash=False, compare=False)
    lo1freq_hz: np.ndarray = field(hash=False, compare=False)
    vframe_ms: np.ndarray = field(hash=False, compare=False)
    rvsys_ms: np.ndarray = field(hash=False, compare=False)

    def at(self, dmjd: np.ndarray) -> dict[str, np.ndarray]:
        """The LO1 table at ``dmjd`` (nearest earlier row: the LO steps, it does not glide)."""
        index = np.clip(np.searchsorted(self.dmjd, dmjd, side="right") - 1, 0, self.dmjd.size - 1)
        return {"lo1": self.lo1freq_hz[index], "vframe": self.vframe_ms[index], "rvsys": self.rvsys_ms[index]}


@_cached
def read_lo1(path: Path) -> Lo1File:
    """Read an LO1A/LO1B file."""
    path = Path(path)
    hdus = open_fits(path)
    table = _table(hdus, "LO1TBL", path)
    dmjd = _column(table, "DMJD", path).astype(float)
    if dmjd.size == 0:
        raise InputError("LO1 file has an empty LO1TBL", path)
    order = np.argsort(dmjd, kind="stable")

    def sorted_column(name: str) -> np.ndarray:
        return _read_only(_column(table, name, path).astype(float)[order])

    return Lo1File(
        path=path,
        header=hdus.primary.header,
        dmjd=_read_only(dmjd[order]),
        lo1freq_hz=sorted_column("LO1FREQ"),
        vframe_ms=sorted_column("VFRAME"),
        rvsys_ms=sorted_column("RVSYS"),
    )


@dataclass(frozen=True)
class IfPath:
    """One IF-manager row: a path from a receiver feed/receptor to a backend bank/port."""

    backend: str
    bank: str
    port: int
    receiver: str
    feed: int
    srfeed1: int
    receptor: str
    polarize: str
    sideband: str
    center_if_hz: float
    center_sky_hz: float
    bandwidth_hz: float
    high_cal: int
    sff_multiplier: float
    sff_sideband: float
    sff_offset_hz: float

    def sky_hz(self, if_hz: np.ndarray | float, lo1_hz: np.ndarray | float) -> np.ndarray:
        """The sky frequency formula: sky = SFF_SIDEBAND*IF + SFF_MULTIPLIER*LO1 + SFF_OFFSET."""
        return np.asarray(self.sff_sideband * np.asarray(if_hz) + self.sff_multiplier * np.asarray(lo1_hz)
                          + self.sff_offset_hz)  # fmt: skip


_IF_COLUMNS = (  # (IfPath field, IF column, converter), in IfPath order
    ("backend", "BACKEND", str), ("bank", "BANK", str), ("port", "PORT", int), ("receiver", "RECEIVER", str),
    ("feed", "FEED", int), ("srfeed1", "SRFEED1", int), ("receptor", "RECEPTOR", str),
    ("polarize", "POLARIZE", str), ("sideband", "SIDEBAND", str), ("center_if_hz", "CENTER_IF", float),
    ("center_sky_hz", "CENTER_SKY", float), ("bandwidth_hz", "BANDWDTH", float), ("high_cal", "HIGH_CAL", int),
    ("sff_multiplier", "SFF_MULTIPLIER", float), ("sff_sideband", "SFF_SIDEBAND", float),
    ("sff_offset_hz", "SFF_OFFSET", float),
)  # fmt: skip


@_cached
def read_if(path: Path) -> tuple[IfPath, ...]:
    """Read an IF file (one :class:`IfPath` per row of the ``IF`` table)."""
    path = Path(path)
    table = _table(open_fits(path), "IF", path)
    columns = []
    for _, name, convert in _IF_COLUMNS:
        values = _column(table, name, path).tolist()
        columns.append([str(v).strip() for v in values] if convert is str else [convert(v) for v in values])
    return tuple(IfPath(*row) for row in zip(*columns, strict=True))


@dataclass(frozen=True)
class CalTable:
    """One ``RX_CAL_INFO`` table of a receiver file: noise-diode temperature versus frequency."""

    receptor: str
    feed: int
    polarize: str
    testdate: str
    freq_hz: np.ndarray = field(hash=False, compare=False)
    low_cal_k: np.ndarray = field(hash=False, compare=False)
    high_cal_k: np.ndarray = field(hash=False, compare=False)


@dataclass(frozen=True)
class ReceiverFile:
    """A receiver's calibration file: TCAL tables per receptor and polarization."""

    path: Path
    receiver: str
    tables: tuple[CalTable, ...]

    def tcal(self, receptor: str, polarize: str, freq_hz: float, high: bool = False, feed: int | None = None) -> float:
        """TCAL (K) at ``freq_hz``, interpolated in the newest table for this receptor and polarization.

        A table whose POLARIZE matches wins over one for the same receptor with another
        polarization label; among those, the newest TESTDATE.
        """
        candidates = [t for t in self.tables if t.receptor == receptor and (feed is None or t.feed == feed)]
        if not candidates:
            raise InputError(f"receiver file has no TCAL table for receptor {receptor!r}", self.path)
        matching = [t for t in candidates if t.polarize == polarize] or candidates
        table = max(matching, key=lambda t: t.testdate)
        values = table.high_cal_k if high else table.low_cal_k
        order = np.argsort(table.freq_hz)
        return float(np.interp(freq_hz, table.freq_hz[order], values[order]))


@_cached
def read_receiver(path: Path) -> ReceiverFile:
    """Read a receiver (``Rcvr*``) file's ``RX_CAL_INFO`` tables (kept per file version: it serves many scans)."""
    path = Path(path)
    hdus = open_fits(path)
    tables = []
    for hdu in hdus.hdus[1:]:
        if hdu.name != "RX_CAL_INFO" or hdu.table is None or not hdu.table.names:
            continue
        h = hdu.header
        tables.append(
            CalTable(
                receptor=str(h.get("RECEPTOR", "")).strip(),
                feed=int(h.get("FEED", 0)),
                polarize=str(h.get("POLARIZE", "")).strip(),
                testdate=str(h.get("TESTDATE", "")).strip(),
                freq_hz=_floats(hdu.table, "FREQUENCY", path),
                low_cal_k=_floats(hdu.table, "LOW_CAL_TEMP", path),
                high_cal_k=_floats(hdu.table, "HIGH_CAL_TEMP", path),
            )
        )
    if not tables:
        raise InputError("receiver file has no RX_CAL_INFO tables", path)
    receiver = str(hdus.primary.header.get("RECEIVER", path.parent.name)).strip()
    return ReceiverFile(path=path, receiver=receiver, tables=tuple(tables))


@dataclass(frozen=True)
class VegasSampler:
    """One row of a VEGAS bank's ``SAMPLER`` table: an input (pair) and its IF frequency axis."""

    bank_a: str
    port_a: int
    bank_b: str
    port_b: int
    subband: int
    crval1_hz: float  # IF frequency at CRPIX1
    cdelt1_hz: float
    freqres_hz: float

    @property
    def name(self) -> str:
        """The SDFITS SAMPLER name: ``A1_0``, or ``A1xA2_0`` for a cross product."""
        first = f"{self.bank_a}{self.port_a}"
        is_auto = (self.bank_a, self.port_a) == (self.bank_b, self.port_b)
        pair = first if is_auto else f"{first}x{self.bank_b}{self.port_b}"
        return f"{pair}_{self.subband}"


@dataclass(frozen=True)
class VegasBank:
    """One VEGAS bank file: setup, samplers, switching states and the spectra.

    ``data`` has shape (integrations, samplers, states, channels); ``integrat_s``
    (integrations, states) is the exposure of each state; ``dmjd`` is the middle
    of each integration.
    """

    path: Path
    header: Mapping[str, Any] = field(hash=False, compare=False)
    bank: str
    nchan: int
    crpix1: float
    adcsampf_hz: float
    samplers: tuple[VegasSampler, ...]
    sigref: tuple[int, ...]  # per state: 0 = signal, 1 = reference
    cal: tuple[int, ...]  # per state: 1 = noise diode on
    blanktim_s: tuple[float, ...]
    phasetim_s: tuple[float, ...]
    dmjd: np.ndarray = field(hash=False, compare=False)
    integrat_s: np.ndarray = field(hash=False, compare=False)
    data: np.ndarray = field(hash=False, compare=False)

    @property
    def integrations(self) -> int:
        return int(self.dmjd.size)


_SAMPLER_COLUMNS = (("BANK_A", str), ("PORT_A", int), ("BANK_B", str), ("PORT_B", int), ("SUBBAND", int),
                    ("CRVAL1", float), ("CDELT1", float), ("FREQRES", float))  # fmt: skip


def read_vegas_bank(path: Path) -> VegasBank:
    """Read one VEGAS bank file (``<timestamp><A-H>.fits``)."""
    path = Path(path)
    hdus = open_fits(path)
    primary = hdus.primary.header
    sampler_hdu = hdus.find("SAMPLER")
    if sampler_hdu is None or sampler_hdu.table is None or not sampler_hdu.table.names:
        raise InputError("VEGAS file has no SAMPLER table", path)
    columns = []
    for name, convert in _SAMPLER_COLUMNS:
        values = _column(sampler_hdu.table, name, path).tolist()
        columns.append([str(v).strip() for v in values] if convert is str else [convert(v) for v in values])
    samplers = tuple(VegasSampler(*row) for row in zip(*columns, strict=True))
    state = _table(hdus, "STATE", path)
    table = _table(hdus, "DATA", path)
    nchan = int(primary.get("NCHAN", 0))
    data = _column(table, "DATA", path)
    nstate = len(state)
    expected = (len(table), len(samplers), nstate, nchan)
    if data.shape != expected:
        what = f"VEGAS DATA has shape {data.shape}, expected {expected} (rows, samplers, states, chans)"
        raise InputError(what, path)
    integrat = _column(table, "INTEGRAT", path).astype(float).reshape(len(table), -1)
    if integrat.shape[1] == 1 and nstate > 1:
        integrat = np.repeat(integrat, nstate, axis=1)
    return VegasBank(
        path=path,
        header=primary,
        bank=str(primary.get("BANK", path.stem[-1])).strip(),
        nchan=nchan,
        crpix1=float(sampler_hdu.header.get("CRPIX1", nchan // 2 + 1)),
        adcsampf_hz=float(primary.get("ADCSAMPF", np.nan)),
        samplers=samplers,
        sigref=tuple(_column(state, "SIGREF", path).astype(int).tolist()),
        cal=tuple(_column(state, "CAL", path).astype(int).tolist()),
        blanktim_s=tuple(_column(state, "BLANKTIM", path).astype(float).tolist()),
        phasetim_s=tuple(_column(state, "PHASETIM", path).astype(float).tolist()),
        dmjd=_column(table, "DMJD", path).astype(float),
        integrat_s=integrat,
        data=data.astype(np.float32),  # native byte order, one pass over the spectra
    )


@dataclass(frozen=True)
class DcrFile:
    """A DCR (continuum) file: states, receiver channels and counts (rows, receivers, states)."""

    path: Path
    header: Mapping[str, Any] = field(hash=False, compare=False)
    sigref: tuple[int, ...]
    cal: tuple[int, ...]
    phasetim_s: tuple[float, ...]
    channel_ids: tuple[int, ...]
    timetag_dmjd: np.ndarray = field(hash=False, compare=False)
    data: np.ndarray = field(hash=False, compare=False)


def read_dcr(path: Path) -> DcrFile:
    """Read a DCR file."""
    path = Path(path)
    hdus = open_fits(path)
    state = _table(hdus, "STATE", path)
    receiver = _table(hdus, "RECEIVER", path)
    table = _table(hdus, "DATA", path)
    data = _column(table, "DATA", path)
    nstate, nrcvr = len(state), len(receiver)
    if data.ndim != 3 or data.shape[1:] != (nrcvr, nstate):
        raise InputError(f"DCR DATA has shape {data.shape}, expected (rows, {nrcvr}, {nstate})", path)
    return DcrFile(
        path=path,
        header=hdus.primary.header,
        sigref=tuple(_column(state, "SIGREF", path).astype(int).tolist()),
        cal=tuple(_column(state, "CAL", path).astype(int).tolist()),
        phasetim_s=tuple(_column(state, "PHASETIM", path).astype(float).tolist()),
        channel_ids=tuple(_column(receiver, "CHANNELID", path).astype(int).tolist()),
        timetag_dmjd=_column(table, "TIMETAG", path).astype(float),
        data=np.array(data),  # a writable copy, not a view of the file's bytes
    )
