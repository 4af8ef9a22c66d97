"""Raw scan -> SDFITS row values, computed the way the GBT sdfits filler computes them.

:func:`scan_rows` turns one VEGAS bank of one raw :class:`~obsflow.online.raw.Scan`
into the 74 SDFITS columns of the real filler output (GBT_FORMATS.md §3), in the
same order and with the same names; :func:`scan_header` gives the file-level
keywords.  Writing the FITS file is :mod:`obsflow.sdfits.writer`'s job.

Row order is the filler's: per integration, per sampler, then per switching
state in the backend's state-table order (sig/cal: (T,F), (T,T), (F,F), (F,T)).

Values:

* frequency axis: the sky-frequency formula of the IF file,
  ``sky = SFF_SIDEBAND*IF + SFF_MULTIPLIER*LO1 + SFF_OFFSET``, applied to the VEGAS
  SAMPLER axis (``CRVAL1`` at ``CRPIX1``, ``CDELT1``) with LO1 at each integration;
* pointing interpolated from the Antenna file at each integration's middle (the tracking
  beam's), each feed's offset from that beam added to AZIMUTH/ELEVATIO and to CRVAL2/3;
* ``DATE-OBS`` the start of each integration, ``TIMESTAMP`` the scan's;
* ``TCAL`` from the receiver's RX_CAL_INFO table at the observed frequency;
* VEGAS spur keywords from ``SPUR_CHANNEL = (J*ADCSAMPF/64 - CRVAL1)/CDELT1 + CRPIX1``,
  and the centre spur channel replaced by the mean of its neighbours, as the filler does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from obsflow.errors import InputError
from obsflow.online.raw import (
    AntennaFile,
    GoFile,
    IfPath,
    Lo1File,
    Scan,
    VegasBank,
    bank_file,
    read_antenna,
    read_go,
    read_if,
    read_lo1,
    read_receiver,
    read_vegas_bank,
    require_files,
)
from obsflow.sdfits import spectra

__all__ = ["COLUMN_NAMES", "POLARIZATION_CODES", "scan_header", "scan_rows"]

#: the 74 columns of the real filler's VEGAS SDFITS, in file order
COLUMN_NAMES: tuple[str, ...] = (
    "OBJECT", "BANDWID", "DATE-OBS", "DURATION", "EXPOSURE", "TSYS",
    "DATA", "TDIM7", "TUNIT7", "CTYPE1", "CRVAL1", "CRPIX1", "CDELT1", "CTYPE2", "CRVAL2", "CTYPE3", "CRVAL3",
    "CRVAL4",
    "OBSERVER", "OBSID", "SCAN", "OBSMODE", "FRONTEND", "TCAL", "VELDEF", "VFRAME", "RVSYS", "OBSFREQ", "LST",
    "AZIMUTH", "ELEVATIO", "TAMBIENT", "PRESSURE", "HUMIDITY", "RESTFREQ", "FREQRES",
    "EQUINOX", "RADESYS", "TRGTLONG", "TRGTLAT", "SAMPLER", "FEED", "SRFEED", "FEEDXOFF", "FEEDEOFF",
    "SUBREF_STATE", "SIDEBAND", "PROCSEQN", "PROCSIZE", "PROCSCAN", "PROCTYPE", "LASTON", "LASTOFF",
    "TIMESTAMP", "QD_XEL", "QD_EL", "QD_BAD", "QD_METHOD", "VELOCITY", "ZEROCHAN", "DOPFREQ", "ADCSAMPF",
    "VSPDELT", "VSPRVAL", "VSPRPIX", "SIG", "CAL", "CALTYPE", "TWARM", "TCOLD", "CALPOSITION",
    "IFNUM", "PLNUM", "FDNUM",
)  # fmt: skip

#: SDFITS CRVAL4 codes (FITS Stokes convention) for a correlation product
POLARIZATION_CODES = {"I": 1, "Q": 2, "U": 3, "V": 4, "RR": -1, "LL": -2, "RL": -3, "LR": -4,
                      "XX": -5, "YY": -6, "XY": -7, "YX": -8}  # fmt: skip

SIDEREAL_PER_SOLAR = 1.002737909350795
MBAR_TO_MMHG = 0.750061683
GBT_SITE = {"SITELONG": -79.8398333, "SITELAT": 38.4331194, "SITEELEV": 824.595}  # east longitude, deg / m
_VELDEF_PREFIX = {"VRAD": "RADI", "VOPT": "OPTI", "VELO": "RELA"}
_VELDEF_FRAME = {"TOP": "OBS"}
_COORDS = {"RADEC": ("RA", "DEC"), "J2000": ("RA", "DEC"), "GALACTIC": ("GLON", "GLAT")}


def _number(header: Any, key: str, default: Any, kind: type = float) -> Any:
    """``header[key]`` as a number (``default`` when absent); raw data holding text there is bad input."""
    value = header.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"header keyword {key} = {value!r} is not a number") from None


def scan_header(scan: Scan, bank: str = "A", backend: str = "VEGAS") -> dict[str, Any]:
    """File-level keywords of the SDFITS file that holds ``scan``'s ``bank`` (site from the Antenna file if there)."""
    site = dict(GBT_SITE)
    antenna_paths = scan.devices.get("Antenna", ())
    if antenna_paths and antenna_paths[0].is_file():
        header = read_antenna(antenna_paths[0]).header
        if "SITELONG" in header:  # the Antenna file gives west longitude
            site = {"SITELONG": -_number(header, "SITELONG", None), "SITELAT": _number(header, "SITELAT", None),
                    "SITEELEV": _number(header, "SITEELEV", None)}  # fmt: skip
    return {
        "TELESCOP": "NRAO_GBT", "ORIGIN": "NRAO Green Bank", "INSTRUME": backend, "BACKEND": backend,
        "PROJID": scan.project, "CTYPE4": "STOKES", **site,
    }  # fmt: skip


def scan_rows(scan: Scan, bank: str) -> dict[str, np.ndarray]:
    """The SDFITS column values of one VEGAS bank of ``scan`` (74 columns, one array each).

    ``DATA`` has shape (rows, channels), big-endian float32; string columns are numpy ``str`` arrays.

    Raises
    ------
    InputError
        A file the scan needs is missing, truncated or malformed, or the files disagree.
    """
    if not scan.is_over:
        raise InputError(f"scan {scan.number} ({scan.timestamp}) has not finished", scan.project_dir / "ScanLog.fits")
    path = bank_file(scan, bank)
    # Not the other banks' files: one that never came must not stop this bank (the fill decides about it).
    require_files(scan, ("GO", "Antenna", "IF", "LO1A"))
    go = read_go(scan.device_file("GO"))
    antenna = read_antenna(scan.device_file("Antenna"))
    lo1 = read_lo1(scan.device_file("LO1A"))
    if_rows = read_if(scan.device_file("IF"))
    vegas = read_vegas_bank(path)
    return _rows(scan, go, antenna, lo1, if_rows, vegas)


def _rows(
    scan: Scan, go: GoFile, antenna: AntennaFile, lo1: Lo1File, if_rows: Sequence[IfPath], vegas: VegasBank
) -> dict[str, np.ndarray]:
    """The 74 columns in file order, one column group per helper.

    The groups run in a fixed order, so of several malformed header keywords the same one is always reported.
    """
    if vegas.integrations == 0:
        raise InputError("VEGAS bank file has no integrations", vegas.path)
    vegas_ifs = [row for row in if_rows if row.backend == "VEGAS"]
    paths = [_if_for(vegas_ifs, s.bank_a, s.port_a, vegas.path) for s in vegas.samplers]  # each sampler's IF path
    grid = _RowGrid.of(vegas)
    lo = lo1.at(vegas.dmjd)  # LO1, VFRAME, RVSYS at each integration's middle
    crval1 = _sky_crval1(vegas, paths, lo["lo1"])  # (nint, nsamp): the frequency axis and TCAL both need it
    columns = {
        **_time_columns(vegas, grid),
        **_frequency_columns(vegas, paths, crval1, grid),
        **_pointing_columns(go.header, antenna, vegas.dmjd, paths, grid),
        **_spectrum_columns(vegas, grid),
        **_receiver_columns(scan, vegas, paths, crval1, grid),
        **_window_columns(go, lo1.header, vegas_ifs, vegas, paths, grid),
        **_weather_columns(antenna.header, grid),
        **_target_columns(go.header, grid),
        **_procedure_columns(scan, go.header, grid),
        **_doppler_columns(go.header, lo1.header, lo, grid),
        **_switching_columns(vegas, grid),
    }
    return {name: columns[name] for name in COLUMN_NAMES}


@dataclass(frozen=True, eq=False)
class _RowGrid:
    """The integration, sampler and switching state of each row, in the filler's row order (nested in that order)."""

    integration: np.ndarray
    sampler: np.ndarray
    state: np.ndarray

    @classmethod
    def of(cls, vegas: VegasBank) -> _RowGrid:
        nint, nsamp, nstate, _ = vegas.data_shape
        integration, sampler, state = (a.ravel() for a in np.indices((nint, nsamp, nstate)))
        return cls(integration, sampler, state)

    def per_sampler(self, values: Sequence[Any], dtype: Any = None) -> np.ndarray:
        """One value per sampler, repeated on each of its rows."""
        return np.asarray(values, dtype=dtype)[self.sampler]

    def const(self, value: Any, dtype: Any = None) -> np.ndarray:
        """The same value on every row."""
        return np.full(self.integration.size, value, dtype=dtype)


def _time_columns(vegas: VegasBank, grid: _RowGrid) -> dict[str, np.ndarray]:
    """DATE-OBS (each integration's start), DURATION (each state's share of it) and EXPOSURE."""
    # a state's exposure excludes its blanked time, its duration does not
    duration_s = vegas.integrat_s * np.array(
        [p / (p - b) if p > b else 1.0 for p, b in zip(vegas.phasetim_s, vegas.blanktim_s, strict=True)]
    )  # (nint, nstate)
    # DMJD is the middle of each integration
    start_dmjd = vegas.dmjd - duration_s.sum(axis=1) / 2.0 / 86400.0
    return {
        "DATE-OBS": _iso(start_dmjd)[grid.integration],
        "DURATION": duration_s[grid.integration, grid.state],
        "EXPOSURE": vegas.integrat_s[grid.integration, grid.state],
    }


def _sky_crval1(vegas: VegasBank, paths: Sequence[IfPath], lo1_hz: np.ndarray) -> np.ndarray:
    """Sky frequency at CRPIX1 per (integration, sampler): the IF file's formula with LO1 at each integration."""
    crval_if = np.array([s.crval1_hz for s in vegas.samplers])
    sideband = np.array([p.sff_sideband for p in paths])
    multiplier = np.array([p.sff_multiplier for p in paths])
    offset = np.array([p.sff_offset_hz for p in paths])
    return sideband * crval_if + multiplier * lo1_hz[:, None] + offset  # as IfPath.sky_hz


def _frequency_columns(
    vegas: VegasBank, paths: Sequence[IfPath], crval1: np.ndarray, grid: _RowGrid
) -> dict[str, np.ndarray]:
    """The sky-frequency axis (CTYPE1, CRVAL1, CRPIX1, CDELT1), its width and resolution, OBSFREQ, SIDEBAND."""
    cdelt_if = np.array([s.cdelt1_hz for s in vegas.samplers])
    sideband = np.array([p.sff_sideband for p in paths])
    return {
        "BANDWID": grid.per_sampler(np.abs(cdelt_if) * vegas.nchan, np.float64),
        "CTYPE1": grid.const("FREQ-OBS"),
        "CRVAL1": crval1[grid.integration, grid.sampler],
        "CRPIX1": grid.const(vegas.crpix1),
        "CDELT1": (sideband * cdelt_if)[grid.sampler],  # a lower sideband runs backwards on the sky
        "OBSFREQ": crval1[grid.integration, grid.sampler],  # CRPIX1 is the centre channel
        "FREQRES": grid.per_sampler([abs(s.freqres_hz) for s in vegas.samplers], np.float64),
        "SIDEBAND": grid.per_sampler(["U" if p.sff_sideband > 0 else "L" for p in paths]),
    }


def _pointing_columns(
    go_header: Any, antenna: AntennaFile, dmjd: np.ndarray, paths: Sequence[IfPath], grid: _RowGrid
) -> dict[str, np.ndarray]:
    """Where each feed points at each integration's middle (az/el and the scan's coordinates), LST, feed offsets."""
    pointing = antenna.at(dmjd)  # the tracking beam's
    offsets = [antenna.feed_offset(str(p.feed)) for p in paths]  # from the tracking beam
    xel = np.array([o[0] for o in offsets])
    eloff = np.array([o[1] for o in offsets])
    el = pointing["el"][grid.integration] + eloff[grid.sampler]
    az = (pointing["az"][grid.integration] + xel[grid.sampler] / np.cos(np.radians(el))) % 360.0
    lst = _lst_s(antenna, dmjd)

    ctype2, ctype3 = _COORDS.get(str(go_header.get("COORDSYS", "RADEC")).strip().upper(), ("AZ", "EL"))
    if ctype2 in ("RA", "GLON"):  # each feed's own position, as the header says ("Feed offsets ARE included")
        latitude = _number(antenna.header, "SITELAT", GBT_SITE["SITELAT"])
        ra, dec = _feed_radec(pointing["ra"][grid.integration], pointing["dec"][grid.integration],
                              lst[grid.integration] / 240.0, latitude, xel[grid.sampler], eloff[grid.sampler])  # fmt: skip
        crval2, crval3 = (ra, dec) if ctype2 == "RA" else _galactic(ra, dec)
    else:
        crval2, crval3 = az, el
    return {
        "CTYPE2": grid.const(ctype2),
        "CRVAL2": crval2,
        "CTYPE3": grid.const(ctype3),
        "CRVAL3": crval3,
        "LST": lst[grid.integration],
        "AZIMUTH": az,
        "ELEVATIO": el,
        "FEEDXOFF": xel[grid.sampler],
        "FEEDEOFF": eloff[grid.sampler],
        # no quadrant-detector pointing corrections
        "QD_XEL": grid.const(np.nan),
        "QD_EL": grid.const(np.nan),
        "QD_BAD": grid.const(-1, np.int16),
        "QD_METHOD": grid.const(""),
    }


def _lst_s(antenna: AntennaFile, dmjd: np.ndarray) -> np.ndarray:
    """Local sidereal time (s) at ``dmjd``, counted on from the Antenna file's LSTSTART at its first sample."""
    lst_start_s = _number(antenna.header, "LSTSTART", 0.0)
    elapsed_s = (dmjd - antenna.dmjd[0]) * 86400.0
    return (lst_start_s + elapsed_s * SIDEREAL_PER_SOLAR) % 86400.0


def _spectrum_columns(vegas: VegasBank, grid: _RowGrid) -> dict[str, np.ndarray]:
    """DATA (where each spectrum is in the raw file), its shape and unit, and the VEGAS spur keywords."""
    _, _, nstate, nchan = vegas.data_shape
    crval_if = np.array([s.crval1_hz for s in vegas.samplers])
    cdelt_if = np.array([s.cdelt1_hz for s in vegas.samplers])
    # spurs: channels (J*ADCSAMPF/64 - CRVAL1)/CDELT1 + CRPIX1 in the IF axis
    spacing = vegas.adcsampf_hz / 64.0
    vspdelt = spacing / np.abs(cdelt_if)
    vsprval = crval_if / spacing
    # the spectra stay in the raw file until the writer copies them (row order: integration, sampler, state)
    cell = (vegas.data_offsets[grid.integration]
            + (grid.sampler * nstate + grid.state) * nchan * spectra.DTYPE.itemsize)  # fmt: skip
    data = _smooth_centre_spur(spectra.SpectraInFile(vegas.path, cell, nchan), vsprval[grid.sampler], vegas.crpix1)
    return {
        "DATA": data,  # big-endian float32 as in the raw file: copied there, never read or swapped
        "TDIM7": grid.const(f"({nchan},1,1,1)"),
        "TUNIT7": grid.const("Counts"),
        "ZEROCHAN": grid.const(np.nan, np.float32),
        "ADCSAMPF": grid.const(vegas.adcsampf_hz),
        "VSPDELT": vspdelt[grid.sampler],
        "VSPRVAL": vsprval[grid.sampler],
        "VSPRPIX": grid.const(vegas.crpix1),
    }


def _receiver_columns(
    scan: Scan, vegas: VegasBank, paths: Sequence[IfPath], crval1: np.ndarray, grid: _RowGrid
) -> dict[str, np.ndarray]:
    """Each sampler's name, receiver, feeds, polarization and noise diode (TCAL, CALTYPE); TSYS is left at 1."""
    tcal = _tcal(scan, paths, float(np.mean(crval1[0])))  # at the first integration's mean sky frequency
    return {
        "TSYS": grid.const(1.0),
        "SAMPLER": grid.per_sampler([s.name for s in vegas.samplers]),
        "CRVAL4": grid.per_sampler([_pol_code(p, s) for p, s in zip(paths, vegas.samplers, strict=True)], np.int16),
        "FRONTEND": grid.per_sampler([p.receiver for p in paths]),
        "TCAL": grid.per_sampler(tcal, np.float32),
        "FEED": grid.per_sampler([p.feed for p in paths], np.int16),
        "SRFEED": grid.per_sampler([p.srfeed1 for p in paths], np.int16),
        "CALTYPE": grid.per_sampler(["HIGH" if p.high_cal else "LOW" for p in paths]),
        "TWARM": grid.const(np.nan, np.float32),
        "TCOLD": grid.const(np.nan, np.float32),
        "CALPOSITION": grid.const("Unknown"),
    }


def _window_columns(
    go: GoFile, lo1_header: Any, vegas_ifs: Sequence[IfPath], vegas: VegasBank, paths: Sequence[IfPath],
    grid: _RowGrid,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Each sampler's spectral window (IFNUM), polarization (PLNUM) and feed (FDNUM) number, and its RESTFREQ."""
    windows = {(w.bank, w.port): w for w in go.windows}
    ifnum, plnum, fdnum = _numbering(vegas_ifs, windows, paths)
    # a sampler outside GO's IFWINDOWS gets the Doppler rest frequency
    restfreq = [windows[(s.bank_a, s.port_a)].restfreq_hz if (s.bank_a, s.port_a) in windows
                else _rest_frequency_hz(lo1_header, go.header, 0.0) for s in vegas.samplers]  # fmt: skip
    return {
        "RESTFREQ": grid.per_sampler(restfreq, np.float64),
        "IFNUM": grid.per_sampler(ifnum, np.int16),
        "PLNUM": grid.per_sampler(plnum, np.int16),
        "FDNUM": grid.per_sampler(fdnum, np.int16),
    }


def _weather_columns(antenna_header: Any, grid: _RowGrid) -> dict[str, np.ndarray]:
    """TAMBIENT (K), PRESSURE (mmHg) and HUMIDITY from the Antenna file's weather keywords (C, mbar)."""
    return {
        "TAMBIENT": grid.const(_number(antenna_header, "AMBTEMP", np.nan) + 273.15),
        "PRESSURE": grid.const(_number(antenna_header, "AMBPRESS", np.nan) * MBAR_TO_MMHG),
        "HUMIDITY": grid.const(_number(antenna_header, "AMBHUMID", np.nan)),
    }


def _target_columns(go_header: Any, grid: _RowGrid) -> dict[str, np.ndarray]:
    """The source's name and the position the scan was asked for (TRGTLONG/TRGTLAT, EQUINOX, RADESYS)."""
    return {
        "OBJECT": grid.const(_str(go_header, "OBJECT")),
        "EQUINOX": grid.const(_number(go_header, "EQUINOX", 0.0)),
        "RADESYS": grid.const(_str(go_header, "RADESYS")),
        "TRGTLONG": grid.const(_number(go_header, "RA", np.nan)),
        "TRGTLAT": grid.const(_number(go_header, "DEC", np.nan)),
    }


def _procedure_columns(scan: Scan, go_header: Any, grid: _RowGrid) -> dict[str, np.ndarray]:
    """Bookkeeping: who observed, which scan this is and its place in its observing procedure."""
    obsmode = f"{_str(go_header, 'PROCNAME')}:{_str(go_header, 'SWSTATE')}:{_str(go_header, 'SWTCHSIG')}"
    return {
        "OBSERVER": grid.const(_str(go_header, "OBSERVER")),
        "OBSID": grid.const(_str(go_header, "OBSID")),
        "SCAN": grid.const(scan.number, np.int32),
        "OBSMODE": grid.const(obsmode),
        "TIMESTAMP": grid.const(scan.timestamp),
        "PROCSEQN": grid.const(_number(go_header, "PROCSEQN", 1, int), np.int16),
        "PROCSIZE": grid.const(_number(go_header, "PROCSIZE", 1, int), np.int16),
        "PROCSCAN": grid.const(_str(go_header, "PROCSCAN")),
        "PROCTYPE": grid.const(_str(go_header, "PROCTYPE")),
        "LASTON": grid.const(_number(go_header, "LASTON", 0, int), np.int32),
        "LASTOFF": grid.const(_number(go_header, "LASTOFF", 0, int), np.int32),
    }


def _doppler_columns(
    go_header: Any, lo1_header: Any, lo: dict[str, np.ndarray], grid: _RowGrid
) -> dict[str, np.ndarray]:
    """The velocity definition and the LO's Doppler tracking: VELDEF, VFRAME, RVSYS, VELOCITY, DOPFREQ."""
    return {
        "VELDEF": grid.const(_veldef(_str(go_header, "VELDEF"))),
        "VFRAME": lo["vframe"][grid.integration],
        "RVSYS": lo["rvsys"][grid.integration],
        "VELOCITY": grid.const(_number(go_header, "VELOCITY", 0.0)),
        "DOPFREQ": grid.const(_rest_frequency_hz(lo1_header, go_header, np.nan)),
    }


def _rest_frequency_hz(lo1_header: Any, go_header: Any, default: float) -> float:
    """The Doppler rest frequency: the LO1 file's RESTFRQ, else GO's, else ``default``."""
    return _number(lo1_header, "RESTFRQ", _number(go_header, "RESTFRQ", default))


def _switching_columns(vegas: VegasBank, grid: _RowGrid) -> dict[str, np.ndarray]:
    """SIG and CAL of each row's switching state, from the backend's state table, and SUBREF_STATE."""
    return {
        "SUBREF_STATE": grid.const(1, np.int16),
        "SIG": np.where(np.array(vegas.sigref) == 0, "T", "F")[grid.state],
        "CAL": np.where(np.array(vegas.cal) == 1, "T", "F")[grid.state],
    }


def _if_for(rows: Sequence[IfPath], bank: str, port: int, where: Any) -> IfPath:
    for row in rows:
        if row.bank == bank and row.port == port:
            return row
    raise InputError(f"IF file has no VEGAS row for bank {bank} port {port}", where)


def _str(header: Any, key: str) -> str:
    return str(header.get(key, "")).strip()


def _iso(dmjd: np.ndarray) -> np.ndarray:
    """MJDs as ``YYYY-MM-DDThh:mm:ss.ss`` strings, rounded to the centisecond (half to even) within each day."""
    days = np.floor(dmjd)
    centi = np.round((dmjd - days) * 8_640_000).astype(np.int64)
    since_epoch = (days.astype(np.int64) * 8_640_000 + centi) * 10
    stamps = np.datetime64("1858-11-17T00:00:00.000", "ms") + since_epoch.astype("timedelta64[ms]")
    return np.array([text[:-1] for text in np.datetime_as_string(stamps, unit="ms").tolist()])


def _veldef(go_veldef: str) -> str:
    """GO's ``VRAD-TOP`` style -> SDFITS ``RADI-OBS`` style."""
    prefix, _, frame = go_veldef.partition("-")
    if prefix not in _VELDEF_PREFIX:
        return go_veldef[:8]
    return f"{_VELDEF_PREFIX[prefix]}-{_VELDEF_FRAME.get(frame, frame)}"[:8]


def _pol_code(path: IfPath, sampler: Any) -> int:
    pol = path.polarize[:1].upper() if path.polarize else "X"
    if (sampler.bank_a, sampler.port_a) != (sampler.bank_b, sampler.port_b):
        other = {"X": "Y", "Y": "X", "R": "L", "L": "R"}.get(pol, pol)
        return POLARIZATION_CODES.get(pol + other, 0)
    return POLARIZATION_CODES.get(pol * 2, 0)


def _numbering(
    vegas_ifs: Sequence[IfPath], windows: dict[tuple[str, int], Any], paths: Sequence[IfPath]
) -> tuple[list[int], list[int], list[int]]:
    """IFNUM (from GO IFWINDOWS, else sky-centre rank), PLNUM (port rank per window+feed), FDNUM (feed rank)."""
    feeds = sorted({row.feed for row in vegas_ifs})
    centres = sorted({round(row.center_sky_hz) for row in vegas_ifs})

    def ifnum_of(row: IfPath) -> int:
        window = windows.get((row.bank, row.port))
        return window.ifnum if window is not None else centres.index(round(row.center_sky_hz))

    groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for row in sorted(vegas_ifs, key=lambda r: (r.bank, r.port)):
        groups.setdefault((ifnum_of(row), row.feed), []).append((row.bank, row.port))
    ifnum, plnum, fdnum = [], [], []
    for path in paths:
        number = ifnum_of(path)
        ifnum.append(number)
        plnum.append(groups[(number, path.feed)].index((path.bank, path.port)))
        fdnum.append(feeds.index(path.feed))
    return ifnum, plnum, fdnum


def _tcal(scan: Scan, paths: Sequence[IfPath], freq_hz: float) -> list[float]:
    """TCAL per sampler from the first receiver file that has RX_CAL_INFO tables (NaN if none is listed)."""
    receiver = scan.receiver
    if receiver is None:
        return [float("nan")] * len(paths)
    errors: list[InputError] = []
    for candidate in scan.devices[receiver]:
        try:
            table = read_receiver(candidate)
        except InputError as err:
            errors.append(err)
            continue
        return [table.tcal(p.receptor, p.polarize, freq_hz, high=bool(p.high_cal)) for p in paths]
    raise errors[0]


def _smooth_centre_spur(data: spectra.SpectraInFile, vsprval: np.ndarray, crpix1: float) -> spectra.SpectraInFile:
    """Replace the centre spur channel with the mean of its neighbours when a spur sits there (as sdfits does)."""
    channel = int(round(crpix1)) - 1
    if not 0 < channel < data.nchan - 1:
        return data
    rows = np.flatnonzero(np.isclose(vsprval, np.round(vsprval)) & (vsprval >= 0) & (vsprval <= 32))
    if not rows.size:
        return data
    around = data.channels(rows, channel - 1, 3)  # the spur and its two neighbours: one read per row
    mean = 0.5 * (around[:, 0] + around[:, 2])  # float32, as the filler
    return data.with_channel_set(rows, channel, mean)


def _feed_radec(
    ra: np.ndarray, dec: np.ndarray, lst_deg: np.ndarray, latitude_deg: float, xel: np.ndarray, eloff: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec (deg) of a feed (xel, el) deg from the tracking beam pointed at (ra, dec).

    On the sky +el points at the zenith, whose position angle (north through east) is the
    parallactic angle q, and +xel (growing azimuth) at q - 90 deg.
    """
    hour_angle = np.radians(lst_deg - ra)
    dec_r, lat = np.radians(dec), np.radians(latitude_deg)
    q = np.arctan2(np.sin(hour_angle), np.tan(lat) * np.cos(dec_r) - np.sin(dec_r) * np.cos(hour_angle))
    north = eloff * np.cos(q) + xel * np.sin(q)
    east = eloff * np.sin(q) - xel * np.cos(q)
    return (ra + east / np.cos(dec_r)) % 360.0, dec + north


def _galactic(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from astropy.coordinates import SkyCoord

    coords = SkyCoord(ra=ra, dec=dec, unit="deg", frame="fk5").galactic
    return np.asarray(coords.l.deg), np.asarray(coords.b.deg)
