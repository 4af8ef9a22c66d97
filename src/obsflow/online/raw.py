"""Raw GBT project data as the telescope writes it: the scan log and the device files.

A project directory holds ``ScanLog.fits`` and one folder per device (``GO``,
``Antenna``, ``LO1A``, ``IF``, ``Rcvr*``, backends such as ``VEGAS`` and ``DCR``).
:func:`read_project` turns the scan log into :class:`Scan` values, in log order;
the ``read_*`` functions (from :mod:`obsflow.online.devices`, re-exported here)
read one device file each into a typed value.

Invariant: nothing here writes; every problem with the input (a truncated or
malformed FITS file, a log naming a file that is not there, an unreadable
folder) is raised as one :class:`~obsflow.errors.InputError` naming the file.
The telescope rewrites ``ScanLog.fits`` while scans run, so a short read is
an ``InputError`` too and the caller simply reads again later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from obsflow.errors import InputError, PathEscapeError
from obsflow.online.devices import (
    AntennaFile,
    CalTable,
    DcrFile,
    FitsTable,
    GoFile,
    IfPath,
    IfWindow,
    Lo1File,
    ReceiverFile,
    VegasBank,
    VegasSampler,
    open_fits,
    read_antenna,
    read_dcr,
    read_go,
    read_if,
    read_lo1,
    read_receiver,
    read_vegas_bank,
)
from obsflow.online.fitsfile import as_strings as _strings
from obsflow.online.fitsfile import find_table as _table
from obsflow.online.fitsfile import table_column as _column

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
    "stopped_by_another_project",
]

SCANLOG = "ScanLog.fits"
MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)

#: device folders that hold backend (science) data
BACKEND_DEVICES = frozenset(
    {"VEGAS", "DCR", "Spectrometer", "SpectralProcessor", "Zpectrometer", "Holography", "BCPM", "CCB", "Mustang2"}
)

_MARKER = re.compile(r"^SCAN (STARTING|FINISHED)(?: AT (\d+)\s+(\d{1,2}):(\d{2}):(\d{2}(?:\.\d*)?))?\s*$")
_BANK_FILE = re.compile(r"^(\d{4}_\d{2}_\d{2}_\d{2}:\d{2}:\d{2})([A-H])\.fits$")

ScanState = Literal["started", "finished"]


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
    stopped: bool = False  # never finished, and a later scan of the log started: it never will

    @property
    def key(self) -> tuple[int, str]:
        """(scan number, timestamp): unique within a project."""
        return (self.number, self.timestamp)

    @property
    def is_finished(self) -> bool:
        return self.state == "finished"

    @property
    def is_over(self) -> bool:
        """Finished, or stopped (no SCAN FINISHED, but a later scan started): its files are all it will get."""
        return self.is_finished or self.stopped

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
    project = str(hdus.primary.header.get("PROJID", "")).strip() or project_dir.name.split(":")[0]
    table = _table(hdus, "ScanLog", log_path)
    building = _group_log_rows(table, project_dir, log_path)
    scans = []
    for position, item in enumerate(building):
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
                stopped=not item.is_finished and position < len(building) - 1,
            )
        )
    return scans


def stopped_by_another_project(scan: Scan) -> str | None:
    """The project beside ``scan``'s (same raw root) that started a scan after it, or None.

    One telescope: a scan the log never finished is over when another project's scan started
    after it (the daemon, watching every project, knows; a fill of one project must look beside
    it).  Start timestamps compare as text, as the daemon's engine compares them.  Only logs
    written since the scan started are read: a raw root holds every project ever observed.
    """
    if scan.is_over:
        return None
    try:
        since = datetime.strptime(scan.timestamp, "%Y_%m_%d_%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        since = 0.0
    for log in scan.project_dir.parent.glob(f"*/{SCANLOG}"):
        if log.parent == scan.project_dir:
            continue
        try:
            if log.stat().st_mtime < since:
                continue
            others = read_project(log.parent, with_go=False)
        except (OSError, InputError):
            continue  # not a project this can read: it cannot tell the telescope went on
        if any(other.timestamp > scan.timestamp for other in others):
            return others[0].project
    return None


def _group_log_rows(table: FitsTable, project_dir: Path, log_path: Path) -> list[_Building]:
    names = [name.upper() for name in table.names]
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
                raise InputError("file named in the scan log is missing", path)  # the caller names the scan


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
