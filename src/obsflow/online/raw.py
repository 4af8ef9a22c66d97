"""Raw GBT project data as the telescope writes it: the scan log and the device files.

A project directory holds ``ScanLog.fits`` and one folder per device (``GO``,
``Antenna``, ``LO1A``, ``IF``, ``Rcvr*``, backends such as ``VEGAS`` and ``DCR``).
:func:`read_project` turns the scan log into :class:`Scan` values, in log order;
the ``read_*`` functions read one device file each into a typed value.

Invariant: nothing here writes; every problem with the input (a truncated or
malformed FITS file, a log naming a file that is not there, an unreadable
folder) is raised as one :class:`~obsflow.errors.InputError` naming the file.
The telescope rewrites ``ScanLog.fits`` while scans run, so a short read is
an ``InputError`` too and the caller simply reads again later.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from obsflow.errors import InputError, PathEscapeError

__all__ = [
    "BACKEND_DEVICES",
    "SCANLOG",
    "AntennaFile",
    "CalTable",
    "DcrFile",
    "GoFile",
    "IfPath",
    "IfWindow",
    "Lo1File",
    "ReceiverFile",
    "Scan",
    "VegasBank",
    "VegasSampler",
    "bank_file",
    "mjd_to_datetime",
    "open_fits",
    "read_antenna",
    "read_dcr",
    "read_go",
    "read_if",
    "read_lo1",
    "read_project",
    "read_receiver",
    "read_vegas_bank",
    "require_backend",
    "require_files",
]

SCANLOG = "ScanLog.fits"
FITS_BLOCK = 2880
MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)

#: device folders that hold backend (science) data
BACKEND_DEVICES = frozenset(
    {"VEGAS", "DCR", "Spectrometer", "SpectralProcessor", "Zpectrometer", "Holography", "BCPM", "CCB", "Mustang2"}
)

_MARKER = re.compile(r"^SCAN (STARTING|FINISHED)(?: AT (\d+)\s+(\d{1,2}):(\d{2}):(\d{2}(?:\.\d*)?))?\s*$")
_BANK_FILE = re.compile(r"^(\d{4}_\d{2}_\d{2}_\d{2}:\d{2}:\d{2})([A-H])\.fits$")

ScanState = Literal["started", "finished"]


# ---------------------------------------------------------------------------------------------------------------------
# FITS access


def open_fits(path: Path) -> fits.HDUList:
    """Read a whole FITS file into memory, checking that every HDU is complete.

    Raises
    ------
    InputError
        The file is missing, unreadable, truncated (e.g. being rewritten) or not FITS.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except FileNotFoundError as err:
        raise InputError("file named in the scan log is missing", path) from err
    except OSError as err:
        raise InputError(f"cannot read FITS file: {err.strerror}", path) from err
    if not payload or len(payload) % FITS_BLOCK:
        raise InputError(f"truncated FITS file ({len(payload)} bytes, not a multiple of {FITS_BLOCK})", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hdus = fits.open(io.BytesIO(payload), lazy_load_hdus=False, memmap=False)
            for hdu in hdus:
                info = hdu.fileinfo()
                if info is not None and info["datLoc"] + hdu._data_size > len(payload):
                    raise InputError("truncated FITS file (an HDU runs past the end)", path)
    except InputError:
        raise
    except (OSError, ValueError, VerifyError, TypeError, IndexError, KeyError, Warning) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"malformed FITS file: {reason[:120]}", path) from err
    return hdus


def _table(hdus: fits.HDUList, name: str, path: Path) -> Any:
    try:
        data = hdus[name].data
    except KeyError as err:
        raise InputError(f"FITS file has no {name} table", path) from err
    if data is None:
        raise InputError(f"{name} table is empty", path)
    return data


def _column(table: Any, name: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(table[name])
    except KeyError as err:
        raise InputError(f"table has no {name} column", path) from err


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(v).strip().rstrip("\x00") for v in np.atleast_1d(values))


def _header(hdu: Any) -> Mapping[str, Any]:
    """A read-only copy of a header's keyword values (COMMENT/HISTORY dropped, last value wins)."""
    return MappingProxyType(
        {key: hdu.header[key] for key in hdu.header if key and key not in ("COMMENT", "HISTORY")}
    )


def mjd_to_datetime(mjd: float) -> datetime:
    """An MJD (days) as an aware UTC datetime."""
    return MJD_EPOCH + timedelta(days=float(mjd))


# ---------------------------------------------------------------------------------------------------------------------
# The scan log


@dataclass(frozen=True)
class Scan:
    """One scan instance from the scan log (scan numbers may repeat; the timestamp tells them apart).

    ``devices`` maps a device folder name (``GO``, ``VEGAS``, ``Rcvr1_2``, ...) to the
    files the log lists for it, resolved under the project directory.  ``go`` is the
    GO file's primary header, empty while the GO file is not there yet.
    """

    project: str
    number: int
    timestamp: str  # '2017_03_08_21:41:02', the device file stem
    date_obs: str  # '2017-03-08T21:41:02', as in the log
    state: ScanState
    started_at: datetime | None
    finished_at: datetime | None
    project_dir: Path
    devices: Mapping[str, tuple[Path, ...]] = field(hash=False, compare=False)
    go: Mapping[str, Any] = field(hash=False, compare=False, default_factory=lambda: MappingProxyType({}))

    @property
    def key(self) -> tuple[int, str]:
        """(scan number, timestamp): unique within a project."""
        return (self.number, self.timestamp)

    @property
    def is_finished(self) -> bool:
        return self.state == "finished"

    @property
    def backends(self) -> tuple[str, ...]:
        """Backend device names with files in this scan, in log order."""
        return tuple(name for name in self.devices if name in BACKEND_DEVICES)

    @property
    def banks(self) -> tuple[str, ...]:
        """VEGAS bank letters with a file in this scan, sorted."""
        letters = {m.group(2) for p in self.devices.get("VEGAS", ()) if (m := _BANK_FILE.match(p.name))}
        return tuple(sorted(letters))

    @property
    def receiver(self) -> str | None:
        """The receiver device folder (``Rcvr*``), if the log lists one."""
        return next((name for name in self.devices if name.startswith("Rcvr")), None)

    def device_file(self, device: str) -> Path:
        """The (first) file of ``device``; a receiver prefers the calibration-epoch file that has TCAL tables."""
        paths = self.devices.get(device)
        if not paths:
            raise InputError(f"scan {self.number} has no {device} file in the scan log", self.project_dir / SCANLOG)
        return paths[0]


@dataclass
class _Building:
    number: int
    date_obs: str
    paths: list[Path] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    is_finished: bool = False
    has_marker: bool = False


def read_project(project_dir: Path, with_go: bool = True) -> list[Scan]:
    """The scans of a raw project directory, in scan-log order.

    Parameters
    ----------
    project_dir
        ``/home/gbtdata/<PROJECT>``: the folder holding ``ScanLog.fits``.
    with_go
        Also read each scan's GO header when the GO file exists (else ``go`` is empty).

    Raises
    ------
    InputError
        The directory or its scan log cannot be read, or the log is truncated or malformed.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise InputError("raw project directory not found or not a directory", project_dir)
    try:
        next(project_dir.iterdir(), None)
    except OSError as err:
        raise InputError(f"cannot read raw project directory: {err.strerror}", project_dir) from err
    log_path = project_dir / SCANLOG
    if not log_path.exists():
        raise InputError("no ScanLog.fits in raw project directory", project_dir)
    hdus = open_fits(log_path)
    project = str(hdus[0].header.get("PROJID", "")).strip() or project_dir.name.split(":")[0]
    table = _table(hdus, "ScanLog", log_path)
    building = _group_log_rows(table, project_dir, log_path)
    scans = []
    for item in building:
        devices: dict[str, list[Path]] = {}
        for path in item.paths:
            devices.setdefault(path.parent.name, []).append(path)
        frozen = MappingProxyType({name: tuple(paths) for name, paths in devices.items()})
        timestamp = _timestamp(item, frozen)
        go: Mapping[str, Any] = MappingProxyType({})
        if with_go and frozen.get("GO") and frozen["GO"][0].exists():
            go = read_go(frozen["GO"][0]).header
        scans.append(
            Scan(
                project=project,
                number=item.number,
                timestamp=timestamp,
                date_obs=item.date_obs,
                state="finished" if item.is_finished else "started",
                started_at=item.started_at,
                finished_at=item.finished_at,
                project_dir=project_dir,
                devices=frozen,
                go=go,
            )
        )
    return scans


def _group_log_rows(table: Any, project_dir: Path, log_path: Path) -> list[_Building]:
    names = [name.upper() for name in table.columns.names]
    numbers = _column(table, "SCAN", log_path).astype(int)
    filepaths = _strings(_column(table, "FILEPATH", log_path))
    if "DATE-OBS" in names:
        dates: tuple[str, ...] = _strings(_column(table, "DATE-OBS", log_path))
        dmjds: np.ndarray | None = None
    elif "DMJD" in names:  # older logs: a DMJD double instead of DATE-OBS
        dmjds = _column(table, "DMJD", log_path).astype(float)
        dates = tuple(mjd_to_datetime(d).strftime("%Y-%m-%dT%H:%M:%S") for d in dmjds)
    else:
        raise InputError("scan log has neither a DATE-OBS nor a DMJD column", log_path)

    scans: list[_Building] = []
    for row, (number, date_obs, filepath) in enumerate(zip(numbers, dates, filepaths, strict=True)):
        current = scans[-1] if scans else None
        marker = _MARKER.match(filepath)
        if (
            current is None
            or current.number != number
            or (dmjds is None and current.date_obs != date_obs)
            or (marker is None and current.has_marker)  # a repeated scan number in an old-style log
        ):
            current = _Building(int(number), date_obs)
            scans.append(current)
        if marker is None:
            current.paths.append(_resolve(filepath, project_dir, log_path))
            continue
        current.has_marker = True
        when = _marker_time(marker, None if dmjds is None else float(dmjds[row]))
        if marker.group(1) == "STARTING":
            current.started_at = when
        else:
            current.finished_at = when
            current.is_finished = True
    return scans


def _marker_time(marker: re.Match[str], dmjd: float | None) -> datetime | None:
    if marker.group(2) is None:
        return None if dmjd is None else mjd_to_datetime(dmjd)
    day = MJD_EPOCH + timedelta(days=int(marker.group(2)))
    return day + timedelta(hours=int(marker.group(3)), minutes=int(marker.group(4)), seconds=float(marker.group(5)))


def _resolve(filepath: str, project_dir: Path, log_path: Path) -> Path:
    """``./<PROJ>/<device>/<file>`` -> ``<project_dir>/<device>/<file>`` (the log names the project folder)."""
    parts = [part for part in Path(filepath).parts if part not in (".", "")]
    if len(parts) < 2 or Path(filepath).is_absolute():
        raise InputError(f"scan log row names an unexpected path {filepath!r}", log_path)
    relative = parts[-2:]
    if any(part == ".." for part in relative):
        raise PathEscapeError(f"scan log path leaves the project directory: {filepath!r}", log_path)
    return project_dir.joinpath(*relative)


def _timestamp(item: _Building, devices: Mapping[str, tuple[Path, ...]]) -> str:
    if item.date_obs and re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", item.date_obs):
        return item.date_obs[:19].replace("-", "_").replace("T", "_")
    for paths in devices.values():
        for path in paths:
            if match := re.match(r"^(\d{4}_\d{2}_\d{2}_\d{2}:\d{2}:\d{2})", path.name):
                return match.group(1)
    return ""


def require_files(scan: Scan, devices: tuple[str, ...] | None = None) -> None:
    """Check that every file the log lists for ``scan`` (or for ``devices``) exists."""
    for name, paths in scan.devices.items():
        if devices is not None and name not in devices:
            continue
        for path in paths:
            if not path.is_file():
                raise InputError(f"scan {scan.number}: file named in the scan log is missing", path)


def require_backend(scan: Scan) -> tuple[str, ...]:
    """The scan's backends; an InputError if it has none (nothing to fill)."""
    if not scan.backends:
        raise InputError(f"scan {scan.number} ({scan.timestamp}) has no backend data", scan.project_dir / SCANLOG)
    return scan.backends


def bank_file(scan: Scan, bank: str) -> Path:
    """The VEGAS file of one bank (``<timestamp><bank>.fits``)."""
    for path in scan.devices.get("VEGAS", ()):
        match = _BANK_FILE.match(path.name)
        if match and match.group(2) == bank:
            return path
    raise InputError(f"scan {scan.number} has no VEGAS bank {bank} file", scan.project_dir / SCANLOG)


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


def read_go(path: Path) -> GoFile:
    """Read a GO file."""
    hdus = open_fits(path)
    windows: list[IfWindow] = []
    if "IFWINDOWS" in hdus and hdus["IFWINDOWS"].data is not None:
        t = hdus["IFWINDOWS"].data
        for row in t:
            windows.append(
                IfWindow(
                    bank=str(row["BANK_A"]).strip(),
                    port=int(row["PORT_A"]),
                    ifnum=int(row["IFNUM"]),
                    feed=int(row["FEED"]),
                    pol=str(row["POL"]).strip(),
                    restfreq_hz=float(row["RESTFREQ"]),
                    nchan=int(row["NCHANS"]),
                    bandwidth_hz=float(row["BANDWIDTH"]),
                    subband=int(row["SUBBAND"]) if "SUBBAND" in t.columns.names else 0,
                )
            )
    return GoFile(path=Path(path), header=_header(hdus[0]), windows=tuple(windows))


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


def read_antenna(path: Path) -> AntennaFile:
    """Read an Antenna file (observed az/el: ``OBSC_AZ``/``OBSC_EL``, else ``MNT_AZ``/``MNT_EL``)."""
    path = Path(path)
    hdus = open_fits(path)
    table = _table(hdus, "ANTPOSGR", path)
    names = table.columns.names
    az_name, el_name = ("OBSC_AZ", "OBSC_EL") if "OBSC_AZ" in names else ("MNT_AZ", "MNT_EL")
    dmjd = _column(table, "DMJD", path).astype(float)
    if dmjd.size == 0:
        raise InputError("Antenna file has no pointing samples", path)
    offsets: dict[str, tuple[float, float]] = {}
    if "BEAM_OFFSETS" in hdus and hdus["BEAM_OFFSETS"].data is not None:
        for row in hdus["BEAM_OFFSETS"].data:
            offsets[str(row["NAME"]).strip()] = (float(row["BEAMXELOFFSET"]), float(row["BEAMELOFFSET"]))
    return AntennaFile(
        path=path,
        header=_header(hdus[0]),
        dmjd=dmjd,
        ra_deg=_column(table, "RAJ2000", path).astype(float),
        dec_deg=_column(table, "DECJ2000", path).astype(float),
        az_deg=_column(table, az_name, path).astype(float),
        el_deg=_column(table, el_name, path).astype(float),
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


def read_lo1(path: Path) -> Lo1File:
    """Read an LO1A/LO1B file."""
    path = Path(path)
    hdus = open_fits(path)
    table = _table(hdus, "LO1TBL", path)
    dmjd = _column(table, "DMJD", path).astype(float)
    if dmjd.size == 0:
        raise InputError("LO1 file has an empty LO1TBL", path)
    order = np.argsort(dmjd, kind="stable")
    return Lo1File(
        path=path,
        header=_header(hdus[0]),
        dmjd=dmjd[order],
        lo1freq_hz=_column(table, "LO1FREQ", path).astype(float)[order],
        vframe_ms=_column(table, "VFRAME", path).astype(float)[order],
        rvsys_ms=_column(table, "RVSYS", path).astype(float)[order],
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


def read_if(path: Path) -> tuple[IfPath, ...]:
    """Read an IF file (one :class:`IfPath` per row of the ``IF`` table)."""
    path = Path(path)
    hdus = open_fits(path)
    table = _table(hdus, "IF", path)
    rows = []
    for row in table:
        rows.append(
            IfPath(
                backend=str(row["BACKEND"]).strip(),
                bank=str(row["BANK"]).strip(),
                port=int(row["PORT"]),
                receiver=str(row["RECEIVER"]).strip(),
                feed=int(row["FEED"]),
                srfeed1=int(row["SRFEED1"]),
                receptor=str(row["RECEPTOR"]).strip(),
                polarize=str(row["POLARIZE"]).strip(),
                sideband=str(row["SIDEBAND"]).strip(),
                center_if_hz=float(row["CENTER_IF"]),
                center_sky_hz=float(row["CENTER_SKY"]),
                bandwidth_hz=float(row["BANDWDTH"]),
                high_cal=int(row["HIGH_CAL"]),
                sff_multiplier=float(row["SFF_MULTIPLIER"]),
                sff_sideband=float(row["SFF_SIDEBAND"]),
                sff_offset_hz=float(row["SFF_OFFSET"]),
            )
        )
    return tuple(rows)


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


def read_receiver(path: Path) -> ReceiverFile:
    """Read a receiver (``Rcvr*``) file's ``RX_CAL_INFO`` tables."""
    path = Path(path)
    hdus = open_fits(path)
    tables = []
    for hdu in hdus[1:]:
        if hdu.name != "RX_CAL_INFO" or hdu.data is None:
            continue
        h = hdu.header
        tables.append(
            CalTable(
                receptor=str(h.get("RECEPTOR", "")).strip(),
                feed=int(h.get("FEED", 0)),
                polarize=str(h.get("POLARIZE", "")).strip(),
                testdate=str(h.get("TESTDATE", "")).strip(),
                freq_hz=_column(hdu.data, "FREQUENCY", path).astype(float),
                low_cal_k=_column(hdu.data, "LOW_CAL_TEMP", path).astype(float),
                high_cal_k=_column(hdu.data, "HIGH_CAL_TEMP", path).astype(float),
            )
        )
    if not tables:
        raise InputError("receiver file has no RX_CAL_INFO tables", path)
    receiver = str(hdus[0].header.get("RECEIVER", path.parent.name)).strip()
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


def read_vegas_bank(path: Path) -> VegasBank:
    """Read one VEGAS bank file (``<timestamp><A-H>.fits``)."""
    path = Path(path)
    hdus = open_fits(path)
    primary = hdus[0].header
    sampler_hdu = hdus["SAMPLER"] if "SAMPLER" in hdus else None
    if sampler_hdu is None or sampler_hdu.data is None:
        raise InputError("VEGAS file has no SAMPLER table", path)
    samplers = tuple(
        VegasSampler(
            bank_a=str(r["BANK_A"]).strip(),
            port_a=int(r["PORT_A"]),
            bank_b=str(r["BANK_B"]).strip(),
            port_b=int(r["PORT_B"]),
            subband=int(r["SUBBAND"]),
            crval1_hz=float(r["CRVAL1"]),
            cdelt1_hz=float(r["CDELT1"]),
            freqres_hz=float(r["FREQRES"]),
        )
        for r in sampler_hdu.data
    )
    state = _table(hdus, "STATE", path)
    table = _table(hdus, "DATA", path)
    nchan = int(primary.get("NCHAN", 0))
    data = _column(table, "DATA", path).astype(np.float32, copy=False)
    nstate = len(state)
    expected = (len(table), len(samplers), nstate, nchan)
    if data.shape != expected:
        raise InputError(f"VEGAS DATA has shape {data.shape}, expected {expected} (rows, samplers, states, chans)", path)
    integrat = _column(table, "INTEGRAT", path).astype(float).reshape(len(table), -1)
    if integrat.shape[1] == 1 and nstate > 1:
        integrat = np.repeat(integrat, nstate, axis=1)
    return VegasBank(
        path=path,
        header=_header(hdus[0]),
        bank=str(primary.get("BANK", path.stem[-1])).strip(),
        nchan=nchan,
        crpix1=float(sampler_hdu.header.get("CRPIX1", nchan // 2 + 1)),
        adcsampf_hz=float(primary.get("ADCSAMPF", np.nan)),
        samplers=samplers,
        sigref=tuple(int(v) for v in _column(state, "SIGREF", path)),
        cal=tuple(int(v) for v in _column(state, "CAL", path)),
        blanktim_s=tuple(float(v) for v in _column(state, "BLANKTIM", path)),
        phasetim_s=tuple(float(v) for v in _column(state, "PHASETIM", path)),
        dmjd=_column(table, "DMJD", path).astype(float),
        integrat_s=integrat,
        data=data,
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
        header=_header(hdus[0]),
        sigref=tuple(int(v) for v in _column(state, "SIGREF", path)),
        cal=tuple(int(v) for v in _column(state, "CAL", path)),
        phasetim_s=tuple(float(v) for v in _column(state, "PHASETIM", path)),
        channel_ids=tuple(int(v) for v in _column(receiver, "CHANNELID", path)),
        timetag_dmjd=_column(table, "TIMETAG", path).astype(float),
        data=np.asarray(data),
    )
