"""Raw GBT device files (GO, Antenna, LO1, IF, receiver, VEGAS, DCR), read into frozen values.

The ``read_*`` functions read one device file each, through the small FITS reader of
:mod:`obsflow.online.fitsfile`.

Device metadata files are written once and read for every bank of a scan (and a
receiver's calibration file for every scan), so their readers keep the last values per
file version (path, inode, size, mtime): a changed file is read again.  Cached values
are frozen and their arrays read-only.

Invariant: nothing here writes; a missing, unreadable, truncated or malformed file is
one :class:`~obsflow.errors.InputError` naming the file.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from obsflow.errors import InputError
from obsflow.online.fitsfile import (
    FitsFile,
    FitsHdu,
    FitsTable,
    find_table,
    float_column,
    open_fits,
    read_cells,
    read_only,
    table_column,
)

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

CACHE_ENTRIES = 256  # device metadata files remembered (a few KiB each)

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
        subband = table_column(t, "SUBBAND", path).tolist() if "SUBBAND" in t.names else [0] * len(t)
        columns = [table_column(t, name, path).tolist()
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
    tracking_offset: tuple[float, float] = (0.0, 0.0)  # the tracking beam's (xel, el) in the receiver, deg

    def feed_offset(self, feed: str) -> tuple[float, float]:
        """(xel, el) of ``feed`` from the tracking beam, deg (SDFITS FEEDXOFF/FEEDEOFF).

        The pointing (``ANTPOSGR``) is the tracking beam's, and BEAM_OFFSETS place every beam in
        the receiver: a Nod tracks with beam 1, then beam 2, and in each scan the beam on the
        source has offset 0 (dysh's getnod finds the nodding beams by exactly that).
        """
        xel, el = self.beam_offsets.get(feed, self.tracking_offset)
        return xel - self.tracking_offset[0], el - self.tracking_offset[1]

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
    table = find_table(hdus, "ANTPOSGR", path)
    az_name, el_name = ("OBSC_AZ", "OBSC_EL") if "OBSC_AZ" in table.names else ("MNT_AZ", "MNT_EL")
    dmjd = float_column(table, "DMJD", path)
    if dmjd.size == 0:
        raise InputError("Antenna file has no pointing samples", path)
    offsets: dict[str, tuple[float, float]] = {}
    beams = hdus.find("BEAM_OFFSETS")
    if beams is not None and beams.table is not None and beams.table.names:
        columns = (table_column(beams.table, name, path).tolist() for name in ("NAME", "BEAMXELOFFSET", "BEAMELOFFSET"))
        for name, xel, el in zip(*columns, strict=True):
            offsets[str(name).strip()] = (float(xel), float(el))
    return AntennaFile(
        path=path,
        header=hdus.primary.header,
        dmjd=dmjd,
        ra_deg=float_column(table, "RAJ2000", path),
        dec_deg=float_column(table, "DECJ2000", path),
        az_deg=float_column(table, az_name, path),
        el_deg=float_column(table, el_name, path),
        beam_offsets=MappingProxyType(offsets),
        tracking_offset=_tracking_offset(hdus.primary.header, offsets, path),
    )


def _tracking_offset(
    header: Mapping[str, Any], offsets: Mapping[str, tuple[float, float]], path: Path
) -> tuple[float, float]:
    """The tracking beam's (xel, el) in the receiver: its BEAM_OFFSETS row (``TRCKBEAM``), else the
    header's ``TRCKBMXE``/``TRCKBMEL``, else 0 (older files: beam 1, at the receiver's centre)."""
    name = str(header.get("TRCKBEAM", "")).strip()
    if name in offsets:
        return offsets[name]
    try:
        return float(header.get("TRCKBMXE", 0.0)), float(header.get("TRCKBMEL", 0.0))
    except (TypeError, ValueError):
        raise InputError("Antenna header TRCKBMXE/TRCKBMEL is not a number", path) from None


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
    table = find_table(hdus, "LO1TBL", path)
    dmjd = table_column(table, "DMJD", path).astype(float)
    if dmjd.size == 0:
        raise InputError("LO1 file has an empty LO1TBL", path)
    order = np.argsort(dmjd, kind="stable")

    def sorted_column(name: str) -> np.ndarray:
        return read_only(table_column(table, name, path).astype(float)[order])

    return Lo1File(
        path=path,
        header=hdus.primary.header,
        dmjd=read_only(dmjd[order]),
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
    table = find_table(open_fits(path), "IF", path)
    columns = []
    for _, name, convert in _IF_COLUMNS:
        values = table_column(table, name, path).tolist()
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
                freq_hz=float_column(hdu.table, "FREQUENCY", path),
                low_cal_k=float_column(hdu.table, "LOW_CAL_TEMP", path),
                high_cal_k=float_column(hdu.table, "HIGH_CAL_TEMP", path),
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
    """One VEGAS bank file: setup, samplers, switching states and where the spectra are.

    The spectra are not read: ``data_offsets`` says where each integration's DATA cell
    (samplers, states, channels; big-endian float32) starts in the file, and :attr:`data`
    reads them all, shaped (integrations, samplers, states, channels).  ``integrat_s``
    (integrations, states) is the exposure of each state; ``dmjd`` is the middle of each
    integration.
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
    data_offsets: np.ndarray = field(hash=False, compare=False)

    @property
    def integrations(self) -> int:
        return int(self.dmjd.size)

    @property
    def data_shape(self) -> tuple[int, int, int, int]:
        """(integrations, samplers, states, channels)."""
        return self.integrations, len(self.samplers), len(self.sigref), self.nchan

    @property
    def data(self) -> np.ndarray:
        """All spectra, read from the file now: (integrations, samplers, states, channels), big-endian float32."""
        cell = np.dtype((">f4", self.data_shape[1:]))
        return read_cells(self.path, self.data_offsets, cell)


_SAMPLER_COLUMNS = (("BANK_A", str), ("PORT_A", int), ("BANK_B", str), ("PORT_B", int), ("SUBBAND", int),
                    ("CRVAL1", float), ("CDELT1", float), ("FREQRES", float))  # fmt: skip


def read_vegas_bank(path: Path) -> VegasBank:
    """Read one VEGAS bank file (``<timestamp><A-H>.fits``)."""
    path = Path(path)
    # the spectra stay in the file: they go to the SDFITS file inside the kernel (sdfits.spectra)
    hdus = open_fits(path, unread=("DATA",))
    primary = hdus.primary.header
    sampler_hdu = hdus.find("SAMPLER")
    if sampler_hdu is None or sampler_hdu.table is None or not sampler_hdu.table.names:
        raise InputError("VEGAS file has no SAMPLER table", path)
    columns = []
    for name, convert in _SAMPLER_COLUMNS:
        values = table_column(sampler_hdu.table, name, path).tolist()
        columns.append([str(v).strip() for v in values] if convert is str else [convert(v) for v in values])
    samplers = tuple(VegasSampler(*row) for row in zip(*columns, strict=True))
    state = find_table(hdus, "STATE", path)
    table = find_table(hdus, "DATA", path)
    nchan = int(primary.get("NCHAN", 0))
    data_offsets, cell = _data_cells(table, path)
    nstate = len(state)
    expected = (len(table), len(samplers), nstate, nchan)
    if (len(table), *cell.shape) != expected or cell.base != np.dtype(">f4"):
        what = f"VEGAS DATA has shape {(len(table), *cell.shape)} {cell.base}, expected {expected} float32"
        raise InputError(f"{what} (rows, samplers, states, chans)", path)
    integrat = table_column(table, "INTEGRAT", path).astype(float).reshape(len(table), -1)
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
        sigref=tuple(table_column(state, "SIGREF", path).astype(int).tolist()),
        cal=tuple(table_column(state, "CAL", path).astype(int).tolist()),
        blanktim_s=tuple(table_column(state, "BLANKTIM", path).astype(float).tolist()),
        phasetim_s=tuple(table_column(state, "PHASETIM", path).astype(float).tolist()),
        dmjd=table_column(table, "DMJD", path).astype(float),
        integrat_s=integrat,
        data_offsets=data_offsets,
    )


def _data_cells(table: FitsTable, path: Path) -> tuple[np.ndarray, np.dtype]:
    try:
        offsets, cell = table.cell_offsets("DATA")
    except KeyError as err:
        raise InputError("table has no DATA column", path) from err
    except ValueError as err:
        raise InputError("VEGAS DATA is not a plain float32 array", path) from err
    return offsets, cell if cell.shape else np.dtype((cell.base, (1, 1, 1)))


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
    state = find_table(hdus, "STATE", path)
    receiver = find_table(hdus, "RECEIVER", path)
    table = find_table(hdus, "DATA", path)
    data = table_column(table, "DATA", path)
    nstate, nrcvr = len(state), len(receiver)
    if data.ndim != 3 or data.shape[1:] != (nrcvr, nstate):
        raise InputError(f"DCR DATA has shape {data.shape}, expected (rows, {nrcvr}, {nstate})", path)
    return DcrFile(
        path=path,
        header=hdus.primary.header,
        sigref=tuple(table_column(state, "SIGREF", path).astype(int).tolist()),
        cal=tuple(table_column(state, "CAL", path).astype(int).tolist()),
        phasetim_s=tuple(table_column(state, "PHASETIM", path).astype(float).tolist()),
        channel_ids=tuple(table_column(receiver, "CHANNELID", path).astype(int).tolist()),
        timetag_dmjd=table_column(table, "TIMETAG", path).astype(float),
        data=np.array(data),  # a writable copy, not a view of the file's bytes
    )
