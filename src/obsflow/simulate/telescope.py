"""A simulated GBT: writes a raw project directory scan by scan, as the telescope does.

Layout written (see ``docs/raw-format.md``)::

    <out>/<PROJECT>/ScanLog.fits                      rewritten atomically at every change
    <out>/<PROJECT>/GO/<timestamp>.fits               scan metadata (PROC*, SWSTATE, SWTCHSIG, ...)
    <out>/<PROJECT>/Antenna/<timestamp>.fits          pointing versus time
    <out>/<PROJECT>/LO1A/<timestamp>.fits             first LO
    <out>/<PROJECT>/IF/<timestamp>.fits               IF paths and the sky-frequency formula
    <out>/<PROJECT>/<Rcvr>/2020_01_01_00:00:00.fits   TCAL tables (calibration epoch, written once)
    <out>/<PROJECT>/VEGAS/<timestamp><A-H>.fits       one file per bank

At scan start the log gets the scan's file rows and ``SCAN STARTING AT``; GO,
LO1A, IF (and the receiver file) are written then; Antenna and VEGAS files are
written at the end of the scan, followed by ``SCAN FINISHED AT``.  Procedures:
``Track`` (one scan), ``OnOff``/``OffOn`` (two scans, PROCSEQN 1 and 2) and ``Nod``
(two feeds, two scans on source: beam 1 tracks it in the first, beam 2 in the second).  The
data carry a known Tsys, Tcal and, in the beam on source only, a Gaussian line (see
:mod:`obsflow.simulate.sky`).  Everything is deterministic for a given seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from obsflow.errors import UsageError
from obsflow.simulate import gbt_files as files
from obsflow.simulate.sky import GaussianLine, bank_counts

__all__ = [
    "SimEvent",
    "ScanPlan",
    "SimulationSummary",
    "TelescopeSimulator",
    "TelescopeSpec",
    "plan_scans",
    "simulate_project",
]

log = logging.getLogger(__name__)

Procedure = Literal["Track", "OnOff", "OffOn", "Nod"]
PROCEDURES: tuple[str, ...] = ("Track", "OnOff", "OffOn", "Nod")
BANK_LETTERS = "ABCDEFGH"
SITE_LAT_DEG = 38.4331194
SITE_LONG_DEG = -79.8398333  # east longitude
SITE_ELEV_M = 824.595
RECEIVER_EPOCH = "2020_01_01_00:00:00"
IF1_HZ = 3.0e9  # LO1 sits this far above the first window
BASEBAND_CENTRE_HZ = 750.0e6  # VEGAS baseband frequency of the centre channel
ADCSAMPF_HZ = 3.0e9
SWITCH_PERIOD_S = 0.2
BLANKING_S = 0.002
OFF_OFFSET_DEG = 1.0  # the OFF position is this far east in RA (great circle)
SLEW_S = 5.0  # pause between scans
BEAM_OFFSETS_DEG = {1: (0.0, 0.0), 2: (0.05, 0.0)}  # feed -> (xel, el) in the receiver, as the Antenna file's BEAM_OFFSETS


@dataclass(frozen=True)
class TelescopeSpec:
    """What to observe and how: every option of ``obsflow simulate``."""

    project: str = "AGBT26A_001_01"
    scans: int = 2
    procedure: Procedure = "OnOff"
    banks: int = 1
    pols: int = 2
    feeds: int = 1
    channels: int = 4096
    integrations: int = 10
    integration_s: float = 1.0
    bandwidth_hz: float = 23.4375e6
    tsys_k: float = 20.0
    tcal_k: float = 1.5
    cal_switching: bool = True
    line_peak_k: float = 2.0
    line_freq_hz: float = 1420.405752e6
    line_fwhm_kms: float | None = 20.0
    line_fwhm_hz: float | None = None
    centre_freq_hz: float | None = None  # bank A's centre; default: the line frequency
    circular: bool = False
    seed: int = 1
    start: datetime = datetime(2026, 1, 15, 3, 0, 0, tzinfo=UTC)
    first_scan: int = 1
    source: str = "SIM-HI-1"
    ra_deg: float | None = None  # default: the source transits at the first scan's start
    dec_deg: float = 45.0
    observer: str = "obsflow simulator"
    receiver: str = "Rcvr1_2"

    def check(self) -> None:
        """Raise UsageError for a spec the telescope could not observe."""
        problems = []
        if self.procedure not in PROCEDURES:
            problems.append(f"procedure must be one of {', '.join(PROCEDURES)}")
        if not 1 <= self.banks <= 8:
            problems.append("banks must be 1..8")
        if self.pols not in (1, 2) or self.feeds not in (1, 2):
            problems.append("pols and feeds must be 1 or 2")
        if not 1024 <= self.channels <= 32768:
            problems.append("channels must be 1024..32768")
        if self.integrations < 1 or self.integration_s <= 0 or self.scans < 1:
            problems.append("scans, integrations and integration time must be positive")
        if self.procedure != "Track" and self.scans % 2:
            problems.append(f"{self.procedure} takes scans in pairs: --scans must be even")
        if self.procedure == "Nod" and self.feeds != 2:
            problems.append("Nod nods between two beams: --feeds must be 2")
        if self.tsys_k <= self.tcal_k / 2 or self.tcal_k <= 0:
            problems.append("need tcal > 0 and tsys > tcal/2")
        if problems:
            raise UsageError("; ".join(problems))

    @property
    def source_ra_deg(self) -> float:
        """The source's RA: as given, or the LST at the start so the source is high in the sky."""
        if self.ra_deg is not None:
            return self.ra_deg
        return float(_lst_deg(np.array([_dmjd(self.start)]))[0]) % 360.0

    @property
    def line(self) -> GaussianLine:
        if self.line_fwhm_hz is not None:
            return GaussianLine(self.line_peak_k, self.line_freq_hz, self.line_fwhm_hz)
        return GaussianLine.from_velocity_width(self.line_peak_k, self.line_freq_hz, self.line_fwhm_kms or 20.0)

    def bank_centre_hz(self, bank_index: int) -> float:
        """Sky frequency of the centre channel (CRPIX1) of each bank's window."""
        first = self.centre_freq_hz if self.centre_freq_hz is not None else self.line_freq_hz
        return first + bank_index * 1.25 * self.bandwidth_hz


@dataclass(frozen=True)
class ScanPlan:
    """One scan to write: when, what procedure step, where the antenna points."""

    number: int
    start: datetime
    duration_s: float
    procname: str
    procseqn: int
    procsize: int
    procscan: str
    swstate: str
    is_on_source: bool
    laston: int
    lastoff: int
    ra_deg: float
    dec_deg: float
    tracking_beam: int = 1  # the feed the antenna points at (ra_deg, dec_deg)

    @property
    def timestamp(self) -> str:
        return self.start.strftime("%Y_%m_%d_%H:%M:%S")

    @property
    def date_obs(self) -> str:
        return self.start.strftime("%Y-%m-%dT%H:%M:%S")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)


@dataclass(frozen=True)
class SimEvent:
    """Something the simulated telescope did (for callbacks, logs and the demo)."""

    kind: Literal["started", "finished"]
    project: str
    scan: int
    timestamp: str
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote."""

    project_dir: Path
    scans: tuple[dict[str, Any], ...]
    files: int
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"project_dir": str(self.project_dir), "scans": list(self.scans), "files": self.files,
                "spec": self.spec}  # fmt: skip


def plan_scans(spec: TelescopeSpec) -> list[ScanPlan]:
    """The scans of the session, in order (pure)."""
    spec.check()
    plans = []
    start = spec.start.replace(microsecond=0)
    duration = spec.integrations * spec.integration_s
    off_ra = (spec.source_ra_deg + OFF_OFFSET_DEG / math.cos(math.radians(spec.dec_deg))) % 360.0
    laston = lastoff = 0
    for k in range(spec.scans):
        number = spec.first_scan + k
        if spec.procedure == "Track":
            seqn, size, on = 1, 1, True
        else:
            seqn, size = k % 2 + 1, 2
            on = (seqn == 1) == (spec.procedure == "OnOff")
        if spec.procedure == "Track":
            procscan, swstate = "ON", "NONE"
        elif spec.procedure == "Nod":
            procscan, swstate, on = f"BEAM{seqn}", "NONE", True
        else:
            procscan, swstate = ("ON", "PSWITCHON") if on else ("OFF", "PSWITCHOFF")
        laston, lastoff = (number, lastoff) if on else (laston, number)
        plans.append(
            ScanPlan(
                number=number, start=start, duration_s=duration, procname=spec.procedure, procseqn=seqn,
                procsize=size, procscan=procscan, swstate=swstate, is_on_source=on, laston=laston, lastoff=lastoff,
                ra_deg=spec.source_ra_deg if on else off_ra, dec_deg=spec.dec_deg,
                tracking_beam=seqn if spec.procedure == "Nod" else 1,
            )
        )  # fmt: skip
        start = start + timedelta(seconds=math.ceil(duration + SLEW_S))
    return plans


def _dmjd(moment: datetime) -> float:
    return (moment - datetime(1858, 11, 17, tzinfo=UTC)).total_seconds() / 86400.0


def _lst_deg(dmjd: np.ndarray) -> np.ndarray:
    """Local apparent sidereal time (degrees), accurate to well under a second here."""
    gmst_h = 18.697374558 + 24.06570982441908 * (dmjd + 2400000.5 - 2451545.0)
    return (gmst_h * 15.0 + SITE_LONG_DEG) % 360.0


def _azel(ra_deg: float, dec_deg: float, dmjd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ha = np.radians(_lst_deg(dmjd) - ra_deg)
    dec, lat = math.radians(dec_deg), math.radians(SITE_LAT_DEG)
    sin_el = np.sin(dec) * np.sin(lat) + np.cos(dec) * np.cos(lat) * np.cos(ha)
    el = np.arcsin(np.clip(sin_el, -1, 1))
    az = np.arctan2(-np.sin(ha) * np.cos(dec), np.sin(dec) * np.cos(lat) - np.cos(dec) * np.sin(lat) * np.cos(ha))
    return np.degrees(az) % 360.0, np.degrees(el)


class TelescopeSimulator:
    """Writes one project's raw data; call :meth:`start_scan` and :meth:`finish_scan` per plan, or :meth:`run`."""

    def __init__(self, spec: TelescopeSpec, out_dir: Path) -> None:
        spec.check()
        self.spec = spec
        self.project_dir = Path(out_dir) / spec.project
        self.plans = plan_scans(spec)
        self._log_rows: list[files.LogRow] = []
        self._written = 0
        self._ports = [(feed, pol) for feed in range(1, spec.feeds + 1) for pol in range(spec.pols)]

    # -- names ---------------------------------------------------------------------------------------------------
    def _pol_letters(self) -> str:
        return "RL" if self.spec.circular else "XY"

    def _device_paths(self, plan: ScanPlan) -> list[Path]:
        stamp = plan.timestamp
        paths = [self.project_dir / "Antenna" / f"{stamp}.fits", self.project_dir / "LO1A" / f"{stamp}.fits",
                 self.project_dir / self.spec.receiver / f"{RECEIVER_EPOCH}.fits"]  # fmt: skip
        paths += [self.project_dir / "VEGAS" / f"{stamp}{BANK_LETTERS[b]}.fits" for b in range(self.spec.banks)]
        paths += [self.project_dir / "IF" / f"{stamp}.fits", self.project_dir / "GO" / f"{stamp}.fits"]
        return paths

    def _log_path(self, path: Path) -> str:
        return f"./{self.spec.project}/{path.parent.name}/{path.name}"

    def _write_log(self) -> None:
        files.write_scanlog(self.project_dir / "ScanLog.fits", self.spec.project, self._log_rows)

    @staticmethod
    def _log_time(moment: datetime) -> str:
        mjd = int(_dmjd(moment))
        return f"{mjd} {moment.hour:2d}:{moment.minute:02d}:{moment.second:02d}"

    # -- scan steps ----------------------------------------------------------------------------------------------
    def start_scan(self, plan: ScanPlan) -> SimEvent:
        """Log the scan's files and ``SCAN STARTING``; write GO, LO1A, IF and the receiver file."""
        self.project_dir.mkdir(parents=True, exist_ok=True)
        paths = self._device_paths(plan)
        self._log_rows += [files.LogRow(plan.date_obs, plan.number, self._log_path(p)) for p in paths]
        starting = plan.start - timedelta(seconds=1)
        self._log_rows.append(files.LogRow(plan.date_obs, plan.number, f"SCAN STARTING AT {self._log_time(starting)}"))
        self._write_log()
        written = [self._write_go(plan), self._write_lo1(plan), self._write_if(plan)]
        receiver = self.project_dir / self.spec.receiver / f"{RECEIVER_EPOCH}.fits"
        if not receiver.exists():
            self._write_receiver(receiver)
            written.append(receiver)
        self._written += len(written) + 1
        log.info("scan %d started (%s)", plan.number, plan.timestamp)
        return SimEvent("started", self.spec.project, plan.number, plan.timestamp, tuple(written))

    def finish_scan(self, plan: ScanPlan) -> SimEvent:
        """Write the Antenna and VEGAS files, then log ``SCAN FINISHED``."""
        written = [self._write_antenna(plan)]
        written += [self._write_bank(plan, b) for b in range(self.spec.banks)]
        finished = plan.start + timedelta(seconds=math.ceil(plan.duration_s))
        self._log_rows.append(files.LogRow(plan.date_obs, plan.number, f"SCAN FINISHED AT {self._log_time(finished)}"))
        self._write_log()
        self._written += len(written)
        log.info("scan %d finished (%s)", plan.number, plan.timestamp)
        return SimEvent("finished", self.spec.project, plan.number, plan.timestamp, tuple(written))

    def run(
        self, on_event: Callable[[SimEvent], None] | None = None, realtime_factor: float | None = None
    ) -> SimulationSummary:
        """Write every scan; with ``realtime_factor`` sleep (scan time / factor) as a telescope would."""
        def pause(seconds: float) -> None:
            if realtime_factor:
                time.sleep(max(seconds, 0.0) / realtime_factor)

        for index, plan in enumerate(self.plans):
            if index:
                pause((plan.start - self.plans[index - 1].end).total_seconds())
            event = self.start_scan(plan)
            if on_event:
                on_event(event)
            pause(plan.duration_s)
            event = self.finish_scan(plan)
            if on_event:
                on_event(event)
        return self.summary()

    def summary(self) -> SimulationSummary:
        spec = asdict(self.spec)
        spec["start"] = self.spec.start.isoformat()
        scans = tuple(
            {"scan": p.number, "timestamp": p.timestamp, "procname": p.procname, "procseqn": p.procseqn,
             "on_source": p.is_on_source, "banks": list(BANK_LETTERS[: self.spec.banks])}
            for p in self.plans
        )  # fmt: skip
        return SimulationSummary(self.project_dir, scans, self._written, spec)

    # -- device files --------------------------------------------------------------------------------------------
    def _common_cards(self, plan: ScanPlan) -> dict[str, Any]:
        return {"DATE-OBS": plan.date_obs, "TIMESYS": "UTC", "OBJECT": self.spec.source,
                "PROJID": self.spec.project, "SCAN": plan.number}  # fmt: skip

    def _write_go(self, plan: ScanPlan) -> Path:
        spec = self.spec
        switched = "TPWCAL" if spec.cal_switching else "TPNOCAL"
        cards = {
            **self._common_cards(plan), "OBSERVER": spec.observer, "PROCNAME": plan.procname, "PROCTYPE": "SIMPLE",
            "PROCSCAN": plan.procscan, "PROCSIZE": plan.procsize, "PROCSEQN": plan.procseqn, "OBSID": "unknown",
            "OBSTYPE": "LINE", "SWSTATE": plan.swstate, "SWTCHSIG": switched, "LASTON": plan.laston,
            "LASTOFF": plan.lastoff, "VELDEF": "VRAD-TOP", "VELOCITY": 0.0, "RESTFRQ": spec.line_freq_hz,
            "SKYFREQ": spec.bank_centre_hz(0), "COORDSYS": "RADEC", "RADESYS": "FK5", "EQUINOX": 2000.0,
            "RA": spec.source_ra_deg, "DEC": spec.dec_deg, "RECEIVER": spec.receiver, "BLOCK": "obsflow",
        }  # fmt: skip
        letters = self._pol_letters()
        windows = [
            {"bandwidth": spec.bandwidth_hz, "bank": BANK_LETTERS[b], "feed": feed, "ifnum": b,
             "nchan": spec.channels, "pol": letters[pol] * 2, "port": port, "resoln": spec.bandwidth_hz / spec.channels,
             "restfreq": spec.bank_centre_hz(b), "subband": 0, "tint": spec.integration_s}
            for b in range(spec.banks) for port, (feed, pol) in enumerate(self._ports, start=1)
        ]  # fmt: skip
        path = self.project_dir / "GO" / f"{plan.timestamp}.fits"
        files.write_go(path, cards, windows)
        return path

    def _lo1_hz(self) -> float:
        return self.spec.bank_centre_hz(0) + IF1_HZ

    def _write_lo1(self, plan: ScanPlan) -> Path:
        path = self.project_dir / "LO1A" / f"{plan.timestamp}.fits"
        dmjd = np.array([_dmjd(plan.start)])
        cards = {**self._common_cards(plan), "RA": plan.ra_deg, "DEC": plan.dec_deg}
        files.write_lo1(path, cards, dmjd, np.array([self._lo1_hz()]), self.spec.line_freq_hz)
        return path

    def _receptor(self, feed: int, pol: int) -> tuple[str, str]:
        letter = self._pol_letters()[pol]
        receptor = {"X": "XL", "Y": "YR", "R": "YR", "L": "XL"}[letter] + ("" if feed == 1 else str(feed))
        return receptor, letter

    def _write_if(self, plan: ScanPlan) -> Path:
        spec = self.spec
        rows = []
        for b in range(spec.banks):
            centre = spec.bank_centre_hz(b)
            for port, (feed, pol) in enumerate(self._ports, start=1):
                receptor, letter = self._receptor(feed, pol)
                rows.append(files.IfRow(
                    bank=BANK_LETTERS[b], port=port, receiver=spec.receiver, feed=feed, receptor=receptor,
                    polarize=letter, center_if_hz=BASEBAND_CENTRE_HZ, center_sky_hz=centre,
                    bandwidth_hz=spec.bandwidth_hz, sff_offset_hz=centre - self._lo1_hz() - BASEBAND_CENTRE_HZ,
                ))  # fmt: skip
        path = self.project_dir / "IF" / f"{plan.timestamp}.fits"
        files.write_if(path, self._common_cards(plan), rows)
        return path

    def _write_receiver(self, path: Path) -> None:
        receptors = [(*self._receptor(feed, pol), feed) for feed, pol in self._ports]
        low = self.spec.bank_centre_hz(0) - 1.0e9
        grid = np.linspace(max(low, 1.0e8), self.spec.bank_centre_hz(self.spec.banks - 1) + 1.0e9, 201)
        files.write_receiver(path, self.spec.receiver, [(r, f, p) for r, p, f in receptors], grid, self.spec.tcal_k)

    def _integration_mid_dmjd(self, plan: ScanPlan) -> np.ndarray:
        mids = (np.arange(self.spec.integrations) + 0.5) * self.spec.integration_s
        return _dmjd(plan.start) + mids / 86400.0

    def _write_antenna(self, plan: ScanPlan) -> Path:
        step = 0.1
        t = np.arange(0.0, plan.duration_s + step / 2, step)
        dmjd = _dmjd(plan.start) + t / 86400.0
        az, el = _azel(plan.ra_deg, plan.dec_deg, dmjd)
        track = files.AntennaTrack(dmjd, np.full(t.size, plan.ra_deg), np.full(t.size, plan.dec_deg), az, el)
        cards = {
            **self._common_cards(plan), "LSTSTART": float(_lst_deg(np.array([dmjd[0]]))[0] / 15.0 * 3600.0),
            "SITELAT": SITE_LAT_DEG, "SITELONG": -SITE_LONG_DEG, "SITEELEV": SITE_ELEV_M, "INDICSYS": "RADEC",
            "RADESYS": "FK5", "EQUINOX": 2000.0, "AMBTEMP": 5.0, "AMBPRESS": 925.0, "AMBHUMID": 0.6,
        }  # fmt: skip
        offsets = {str(feed): BEAM_OFFSETS_DEG[feed] for feed in range(1, self.spec.feeds + 1)}
        # the pointing above is the tracking beam's; its offset in the receiver is in the header, as at GBT
        tracking = BEAM_OFFSETS_DEG[plan.tracking_beam]
        cards |= {"TRCKBEAM": str(plan.tracking_beam), "TRCKBMXE": tracking[0], "TRCKBMEL": tracking[1]}
        path = self.project_dir / "Antenna" / f"{plan.timestamp}.fits"
        files.write_antenna(path, cards, track, offsets)
        return path

    def _vegas_setup(self, bank_index: int) -> files.VegasSetup:
        spec = self.spec
        sigref, cal = ((0, 0), (0, 1)) if spec.cal_switching else ((0,), (0,))
        return files.VegasSetup(
            bank=BANK_LETTERS[bank_index], nchan=spec.channels, bandwidth_hz=spec.bandwidth_hz,
            crval1_if_hz=BASEBAND_CENTRE_HZ, adcsampf_hz=ADCSAMPF_HZ, ports=tuple(range(1, len(self._ports) + 1)),
            sigref=sigref, cal=cal, phasetim_s=SWITCH_PERIOD_S / len(cal), blanktim_s=BLANKING_S,
        )  # fmt: skip

    def _on_source_ports(self, plan: ScanPlan) -> np.ndarray:
        """Which ports see the source: all on an ON position, only the tracking beam's in a Nod."""
        if self.spec.procedure == "Nod":
            return np.array([feed == plan.tracking_beam for feed, _ in self._ports])
        return np.full(len(self._ports), plan.is_on_source)

    def _write_bank(self, plan: ScanPlan, bank_index: int) -> Path:
        spec = self.spec
        setup = self._vegas_setup(bank_index)
        nstate = len(setup.cal)
        cycles = spec.integration_s / SWITCH_PERIOD_S
        per_state = cycles * (setup.phasetim_s - setup.blanktim_s)
        integrat = np.full((spec.integrations, nstate), per_state)
        channel = np.arange(spec.channels) + 1.0
        sky = spec.bank_centre_hz(bank_index) + (channel - setup.crpix1) * setup.cdelt1_hz
        gains = 2.0e5 * (1.0 + 0.15 * np.arange(len(self._ports))) * (1.0 + 0.05 * bank_index)
        rng = np.random.default_rng([spec.seed, plan.number, bank_index])
        data = bank_counts(
            rng, sky, setup.cdelt1_hz, integrat, np.array(setup.cal, dtype=float), gains, spec.tsys_k, spec.tcal_k,
            spec.line, self._on_source_ports(plan),
        )  # fmt: skip
        path = self.project_dir / "VEGAS" / f"{plan.timestamp}{setup.bank}.fits"
        files.write_vegas_bank(path, self._common_cards(plan), setup, self._integration_mid_dmjd(plan), integrat, data)
        return path


def simulate_project(
    spec: TelescopeSpec,
    out_dir: Path,
    on_event: Callable[[SimEvent], None] | None = None,
    realtime_factor: float | None = None,
) -> SimulationSummary:
    """Write a whole simulated raw project under ``out_dir/<project>`` and say what was written."""
    return TelescopeSimulator(spec, out_dir).run(on_event, realtime_factor)

