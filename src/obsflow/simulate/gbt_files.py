"""FITS writers for simulated GBT device files, in the layout the telescope writes.

Each function builds one file's HDUs and writes them through
:func:`obsflow.atomic.write_atomic`, so a reader never sees half a device file.
The layouts follow the real samples (GO, Antenna, IF, Rcvr, ScanLog) and, for
VEGAS and LO1, the public descriptions collected in ``docs/raw-format.md``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from obsflow.atomic import write_atomic

__all__ = [
    "AntennaTrack",
    "IfRow",
    "LogRow",
    "VegasSetup",
    "write_antenna",
    "write_go",
    "write_if",
    "write_lo1",
    "write_receiver",
    "write_scanlog",
    "write_vegas_bank",
]


def _primary(cards: dict[str, Any], instrume: str) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    hdu.header["ORIGIN"] = ("NRAO Green Bank", "")
    hdu.header["INSTRUME"] = (instrume, "device or program of origin")
    hdu.header["GBTMCVER"] = ("obsflow-sim", "telescope control software release")
    hdu.header["SIMULATE"] = (1, "Is the instrument in simulate mode?")
    hdu.header["TELESCOP"] = ("NRAO_GBT", "Green Bank Telescope (Robert C. Byrd 100m)")
    for key, value in cards.items():
        hdu.header[key] = value
    return hdu


def _write(path: Path, hdus: Sequence[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU]) -> None:
    buffer = io.BytesIO()
    fits.HDUList(list(hdus)).writeto(buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def _table(name: str, columns: list[fits.Column], cards: dict[str, Any] | None = None) -> fits.BinTableHDU:
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    for key, value in (cards or {}).items():
        hdu.header[key] = value
    return hdu


@dataclass(frozen=True)
class LogRow:
    """One scan-log row: DATE-OBS, SCAN, FILEPATH."""

    date_obs: str
    scan: int
    filepath: str


def write_scanlog(path: Path, project: str, rows: Sequence[LogRow]) -> None:
    """Rewrite ``ScanLog.fits`` atomically with all ``rows``."""
    columns = [
        fits.Column(name="DATE-OBS", format="20A", unit="UTC", array=np.array([r.date_obs for r in rows], dtype="U20")),
        fits.Column(name="SCAN", format="J", unit="none", array=np.array([r.scan for r in rows], dtype=np.int32)),
        fits.Column(name="FILEPATH", format="192A", unit="none",
                    array=np.array([r.filepath for r in rows], dtype="U192")),
    ]
    primary = _primary({"FITSVER": "2.1", "PROJID": (project, "Manager parameter projectId")}, "ScanLog")
    _write(path, [primary, _table("ScanLog", columns)])


def write_go(path: Path, cards: dict[str, Any], windows: list[dict[str, Any]]) -> None:
    """A GO file: scan metadata in the primary header and an ``IFWINDOWS`` table."""
    def col(name: str, fmt: str, key: str) -> fits.Column:
        return fits.Column(name=name, format=fmt, array=np.array([w[key] for w in windows]))

    columns = [
        col("BANDWIDTH", "D", "bandwidth"), col("BANK_A", "2A", "bank"), col("BANK_B", "2A", "bank"),
        col("FEED", "J", "feed"), col("IFNUM", "J", "ifnum"), col("NCHANS", "J", "nchan"), col("POL", "2A", "pol"),
        col("PORT_A", "J", "port"), col("PORT_B", "J", "port"), col("RESOLN", "D", "resoln"),
        col("RESTFREQ", "D", "restfreq"), col("SUBBAND", "J", "subband"), col("TINT", "D", "tint"),
    ]  # fmt: skip
    _write(path, [_primary({"FITSVER": "2.9", **cards}, "Turtle"), _table("IFWINDOWS", columns, {"BACKEND": "VEGAS"})])


@dataclass(frozen=True)
class AntennaTrack:
    """Antenna positions versus time (degrees, DMJD)."""

    dmjd: np.ndarray
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    az_deg: np.ndarray
    el_deg: np.ndarray


def write_antenna(
    path: Path, cards: dict[str, Any], track: AntennaTrack, beam_offsets: dict[str, tuple[float, float]]
) -> None:
    """An Antenna file: ``BEAM_OFFSETS`` and the ``ANTPOSGR`` pointing table."""
    names = list(beam_offsets)
    offsets = [
        fits.Column(name="NAME", format="32A", unit="none", array=np.array(names)),
        fits.Column(name="BEAMXELOFFSET", format="1D", unit="deg", array=np.array([beam_offsets[n][0] for n in names])),
        fits.Column(name="BEAMELOFFSET", format="1D", unit="deg", array=np.array([beam_offsets[n][1] for n in names])),
        fits.Column(name="SRFEED1", format="1J", unit="none", array=np.zeros(len(names), dtype=np.int32)),
        fits.Column(name="SRFEED2", format="1J", unit="none", array=np.zeros(len(names), dtype=np.int32)),
    ]
    zeros = np.zeros_like(track.dmjd)
    pointing = [
        fits.Column(name="DMJD", format="1D", unit="d", array=track.dmjd),
        fits.Column(name="RAJ2000", format="1D", unit="deg", array=track.ra_deg),
        fits.Column(name="DECJ2000", format="1D", unit="deg", array=track.dec_deg),
        fits.Column(name="MNT_AZ", format="1D", unit="deg", array=track.az_deg),
        fits.Column(name="MNT_EL", format="1D", unit="deg", array=track.el_deg),
        fits.Column(name="REFRACT", format="1D", unit="deg", array=zeros),
        fits.Column(name="MAJOR", format="1D", unit="deg", array=track.ra_deg),
        fits.Column(name="MINOR", format="1D", unit="deg", array=track.dec_deg),
        fits.Column(name="OBSC_AZ", format="1D", unit="deg", array=track.az_deg),
        fits.Column(name="OBSC_EL", format="1D", unit="deg", array=track.el_deg),
    ]
    _write(path, [_primary({"FITSVER": "2.15", **cards}, "Antenna"),
                  _table("BEAM_OFFSETS", offsets), _table("ANTPOSGR", pointing)])  # fmt: skip


def write_lo1(path: Path, cards: dict[str, Any], dmjd: np.ndarray, lo1_hz: np.ndarray, restfreq_hz: float) -> None:
    """An LO1A file: Doppler setup in the header, ``STATE``, ``SOUVEL`` and the ``LO1TBL`` table."""
    n = dmjd.size
    state = [
        fits.Column(name="SIGREF", format="1B", array=np.zeros(1, dtype=np.uint8)),
        fits.Column(name="FREQOFF", format="1D", unit="Hz", array=np.zeros(1)),
    ]
    souvel = [
        fits.Column(name="DMJD", format="1D", unit="d", array=dmjd[:1]),
        fits.Column(name="VELOCITY", format="1D", unit="m/s", array=np.zeros(1)),
    ]
    table = [
        fits.Column(name="DMJD", format="1D", unit="d", array=dmjd),
        fits.Column(name="RA", format="1D", unit="deg", array=np.full(n, cards.get("RA", 0.0))),
        fits.Column(name="DEC", format="1D", unit="deg", array=np.full(n, cards.get("DEC", 0.0))),
        fits.Column(name="LO1FREQ", format="1D", unit="Hz", array=lo1_hz),
        fits.Column(name="VFRAME", format="1D", unit="m/s", array=np.zeros(n)),
        fits.Column(name="RVSYS", format="1D", unit="m/s", array=np.zeros(n)),
    ]
    header = {"FITSVER": "2.6", "RESTFRQ": restfreq_hz, "LOMULT": 1.0, "LOOFFSET": 0.0, "SIDEBAND": "upper",
              "REQDPTOL": 0.0, **cards}  # fmt: skip
    _write(path, [_primary(header, "LO1"), _table("STATE", state), _table("SOUVEL", souvel), _table("LO1TBL", table)])


@dataclass(frozen=True)
class IfRow:
    """One IF-manager row."""

    bank: str
    port: int
    receiver: str
    feed: int
    receptor: str
    polarize: str
    center_if_hz: float
    center_sky_hz: float
    bandwidth_hz: float
    sff_offset_hz: float
    sff_sideband: float = 1.0
    sff_multiplier: float = 1.0
    high_cal: int = 0


def write_if(path: Path, cards: dict[str, Any], rows: Sequence[IfRow]) -> None:
    """An IF file: one ``IF`` table row per backend input."""
    def col(name: str, fmt: str, values: list[Any], unit: str = "none") -> fits.Column:
        return fits.Column(name=name, format=fmt, unit=unit, array=np.array(values))

    n = len(rows)
    columns = [
        col("BACKEND", "32A", ["VEGAS"] * n), col("BANK", "2A", [r.bank for r in rows]),
        col("PORT", "1J", [r.port for r in rows]), col("RECEIVER", "32A", [r.receiver for r in rows]),
        col("FEED", "1J", [r.feed for r in rows]), col("SRFEED1", "1J", [0] * n), col("SRFEED2", "1J", [0] * n),
        col("RECEPTOR", "8A", [r.receptor for r in rows]), col("LO_CIRCUIT", "32A", ["LO1A"] * n),
        col("LO_COMPONENT", "32A", ["synthesizer"] * n),
        col("SIDEBAND", "2A", ["U" if r.sff_sideband > 0 else "L" for r in rows]),
        col("POLARIZE", "2A", [r.polarize for r in rows]),
        col("CENTER_IF", "1E", [r.center_if_hz for r in rows], "Hz"),
        col("CENTER_SKY", "1E", [r.center_sky_hz for r in rows], "Hz"),
        col("BANDWDTH", "1E", [r.bandwidth_hz for r in rows], "Hz"), col("HIGH_CAL", "1J", [r.high_cal for r in rows]),
        col("SFF_MULTIPLIER", "1D", [r.sff_multiplier for r in rows]),
        col("SFF_SIDEBAND", "1D", [r.sff_sideband for r in rows]),
        col("SFF_OFFSET", "1D", [r.sff_offset_hz for r in rows]),
    ]  # fmt: skip
    _write(path, [_primary({"FITSVER": "2.3", **cards}, "IFManager"), _table("IF", columns)])


def write_receiver(
    path: Path, receiver: str, receptors: Sequence[tuple[str, int, str]], freq_hz: np.ndarray, tcal_k: float
) -> None:
    """A receiver calibration file: one ``RX_CAL_INFO`` table per (receptor, feed, polarization)."""
    hdus: list[Any] = [_primary({"FITSVER": "2.2", "OBJECT": "noise_diode", "SCAN": 0, "RECEIVER": receiver,
                                 "DATE-OBS": "2020-01-01T00:00:00"}, "Measurements")]  # fmt: skip
    for receptor, feed, polarize in receptors:
        columns = [
            fits.Column(name="FREQUENCY", format="1E", unit="Hz", array=freq_hz),
            fits.Column(name="RX_TEMP", format="1E", unit="K", array=np.full(freq_hz.size, 8.0)),
            fits.Column(name="LOW_CAL_TEMP", format="1E", unit="K", array=np.full(freq_hz.size, tcal_k)),
            fits.Column(name="HIGH_CAL_TEMP", format="1E", unit="K", array=np.full(freq_hz.size, 10.0 * tcal_k)),
        ]
        cards = {"TESTDATE": "2020-01-01", "RECEPTOR": receptor, "FEED": feed, "POLARIZE": polarize,
                 "BANDWDTH": 1.0e7}  # fmt: skip
        hdus.append(_table("RX_CAL_INFO", columns, cards))
    _write(path, hdus)


@dataclass(frozen=True)
class VegasSetup:
    """One bank's spectrometer setup."""

    bank: str
    nchan: int
    bandwidth_hz: float
    crval1_if_hz: float  # baseband frequency of channel CRPIX1
    adcsampf_hz: float
    ports: tuple[int, ...]
    sigref: tuple[int, ...]
    cal: tuple[int, ...]
    phasetim_s: float
    blanktim_s: float

    @property
    def cdelt1_hz(self) -> float:
        return self.bandwidth_hz / self.nchan

    @property
    def crpix1(self) -> float:
        return self.nchan // 2 + 1.0


def write_vegas_bank(
    path: Path, cards: dict[str, Any], setup: VegasSetup, dmjd: np.ndarray, integrat_s: np.ndarray, data: np.ndarray
) -> None:
    """One VEGAS bank file: PRIMARY, SPURS, PORT, STATE, SAMPLER, ACT_STATE, DATA (see docs/raw-format.md)."""
    nint, nsampler, nstate, nchan = data.shape
    spacing = setup.adcsampf_hz / 64.0
    j = np.arange(33)
    spur_chan = (j * spacing - setup.crval1_if_hz) / setup.cdelt1_hz + setup.crpix1
    inside = (spur_chan >= 1) & (spur_chan <= nchan)
    spurs = [
        fits.Column(name="SPURCHAN", format="1J", array=np.round(spur_chan[inside]).astype(np.int32)),
        fits.Column(name="SPURFREQ", format="1D", unit="Hz", array=(j * spacing)[inside]),
    ]
    ports = [
        fits.Column(name="BANK", format="2A", array=np.array([setup.bank] * len(setup.ports))),
        fits.Column(name="PORT", format="1J", array=np.array(setup.ports, dtype=np.int32)),
        fits.Column(name="MEASPWR", format="1D", unit="dBm", array=np.full(len(setup.ports), -20.0)),
    ]
    state = [
        fits.Column(name="BLANKTIM", format="1D", unit="s", array=np.full(nstate, setup.blanktim_s)),
        fits.Column(name="PHASETIM", format="1D", unit="s", array=np.full(nstate, setup.phasetim_s)),
        fits.Column(name="SIGREF", format="1B", array=np.array(setup.sigref, dtype=np.uint8)),
        fits.Column(name="CAL", format="1B", array=np.array(setup.cal, dtype=np.uint8)),
    ]
    n = len(setup.ports)
    bank = np.array([setup.bank] * n)
    sampler = [
        fits.Column(name="BANK_A", format="2A", array=bank),
        fits.Column(name="PORT_A", format="1J", array=np.array(setup.ports, dtype=np.int32)),
        fits.Column(name="BANK_B", format="2A", array=bank),
        fits.Column(name="PORT_B", format="1J", array=np.array(setup.ports, dtype=np.int32)),
        fits.Column(name="DATATYPE", format="4A", array=np.array(["REAL"] * n)),
        fits.Column(name="SUBBAND", format="1J", array=np.zeros(n, dtype=np.int32)),
        fits.Column(name="CRVAL1", format="1D", unit="Hz", array=np.full(n, setup.crval1_if_hz)),
        fits.Column(name="CDELT1", format="1D", unit="Hz", array=np.full(n, setup.cdelt1_hz)),
        fits.Column(name="FREQRES", format="1D", unit="Hz", array=np.full(n, abs(setup.cdelt1_hz))),
    ]
    act = [
        fits.Column(name=name, format="1B", array=np.array(values, dtype=np.uint8))
        for name, values in (("ISIGREF1", setup.sigref), ("ISIGREF2", [0] * nstate), ("ICAL", setup.cal),
                             ("ESIGREF1", setup.sigref), ("ESIGREF2", [0] * nstate), ("ECAL", setup.cal))
    ]  # fmt: skip
    utc_s = (dmjd % 1.0) * 86400.0
    table = [
        fits.Column(name="SUBSCAN", format="1J", array=np.arange(1, nint + 1, dtype=np.int32)),
        fits.Column(name="UTDATE", format="1J", unit="d", array=np.floor(dmjd).astype(np.int32)),
        fits.Column(name="UTCSTART", format="1D", unit="s", array=utc_s),
        fits.Column(name="UTCDELT", format="1D", unit="s", array=np.zeros(nint)),
        fits.Column(name="DMJD", format="1D", unit="d", array=dmjd),
        fits.Column(name="INTEGRAT", format=f"{nstate}D", unit="s", array=integrat_s),
        fits.Column(name="DATA", format=f"{nsampler * nstate * nchan}E", unit="counts",
                    dim=f"({nchan},{nstate},{nsampler})", array=data),
    ]  # fmt: skip
    header = {
        "FITSVER": "1.0", "BANK": setup.bank, "NCHAN": nchan, "NPOL": nsampler, "NSUBBAND": 1,
        "ADCSAMPF": setup.adcsampf_hz, "BASE_BW": setup.bandwidth_hz / 1e6, "SUB0FREQ": setup.crval1_if_hz,
        "EXPOSURE": float(np.sum(integrat_s[0])) if nint else 0.0, "NOISESRC": "OFF", "MODE": "sim",
        **cards,
    }  # fmt: skip
    _write(path, [_primary(header, "VEGAS"), _table("SPURS", spurs), _table("PORT", ports), _table("STATE", state),
                  _table("SAMPLER", sampler, {"CRPIX1": setup.crpix1}), _table("ACT_STATE", act),
                  _table("DATA", table)])  # fmt: skip
