"""Simulated SAAO instrument computers: CCD FITS frames in dated folders, as SHOC and SpUpNIC write them.

``<root>/<inst>/YYYY/MMDD/<PREFIX>_YYYYMMDD.NNNN.fits``: a small valid FITS file (primary
HDU, 16-bit image) with a realistic header (DATE-OBS, OBJECT, EXPTIME, INSTRUME, ...).  Each
file's mtime is set to the end of its exposure, so old nights look settled to the sync.
Optionally the very last frame is left *growing*: only part of it is written and its mtime
is now, as if the camera were still writing it; :meth:`GrowingFile.finish` completes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["INSTRUMENTS", "GrowingFile", "InstrumentSpec", "Simulation", "fits_frame", "simulate_instruments"]

BLOCK = 2880


@dataclass(frozen=True)
class InstrumentSpec:
    """How one SAAO instrument names and describes its frames."""

    name: str  # folder name: sha, shd, spupnic
    prefix: str  # file prefix: SHA, SHD, a
    instrume: str  # INSTRUME card
    telescope: str  # TELESCOP card: 74in, 40in, 1m
    detector: str


INSTRUMENTS = {
    "sha": InstrumentSpec("sha", "SHA", "SHOC", "74in", "shocnawe"),
    "shd": InstrumentSpec("shd", "SHD", "SHOC", "40in", "shocndisbelief"),
    "spupnic": InstrumentSpec("spupnic", "a", "SpUpNIC", "74in", "SpUpNIC CCD"),
}
_OBJECTS = ("HD 12345", "NGC 2070", "WD 0310-688", "bias", "flat", "arc CuAr", "Eta Car", "47 Tuc", "SN 2016gkg")


@dataclass
class GrowingFile:
    """A frame still being written: ``path`` holds a prefix of ``content``."""

    path: Path
    content: bytes

    def finish(self, mtime: float | None = None) -> None:
        """Write the rest of the frame (as the camera would), then set its mtime."""
        written = self.path.stat().st_size
        with open(self.path, "ab") as handle:
            handle.write(self.content[written:])
        if mtime is not None:
            os.utime(self.path, (mtime, mtime))


@dataclass
class Simulation:
    """Every frame written, and the one left growing (if asked for)."""

    files: list[Path] = field(default_factory=list)
    growing: GrowingFile | None = None


def _card(key: str, value: object, comment: str = "") -> bytes:
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20d}"
    elif isinstance(value, float):
        text = f"{value:>20.6f}"
    else:
        text = f"'{str(value).replace(chr(39), chr(39) * 2):<8}'"
    card = f"{key:<8}= {text}" + (f" / {comment}" if comment else "")
    return card[:80].ljust(80).encode("ascii")


def fits_frame(spec: InstrumentSpec, start: datetime, exptime_s: float, obj: str, image: np.ndarray) -> bytes:
    """One complete FITS file: a primary header and a big-endian int16 image."""
    import numpy as np  # here, not at import: keeps `obsflow` start-up light
    ny, nx = image.shape
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 16, "array data type"),
        _card("NAXIS", 2, "number of array dimensions"),
        _card("NAXIS1", nx),
        _card("NAXIS2", ny),
        _card("BZERO", 32768, "data are unsigned 16-bit"),
        _card("BSCALE", 1),
        _card("ORIGIN", "SAAO", "South African Astronomical Observatory"),
        _card("OBSERVAT", "SAAO", "Sutherland"),
        _card("TELESCOP", spec.telescope),
        _card("INSTRUME", spec.instrume),
        _card("DETECTOR", spec.detector),
        _card("OBJECT", obj),
        _card("DATE-OBS", start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "UTC start of exposure"),
        _card("EXPTIME", float(exptime_s), "[s] exposure time"),
        _card("FILTER", "V"),
        _card("GAIN", 2.5, "[e-/ADU]"),
        _card("AIRMASS", 1.2),
        b"END".ljust(80),
    ]
    header = b"".join(cards)
    header += b" " * (-len(header) % BLOCK)
    data = (image.astype(np.int32) - 32768).astype(">i2").tobytes()
    data += b"\0" * (-len(data) % BLOCK)
    return header + data


def frame_name(spec: InstrumentSpec, night: date, number: int) -> str:
    """``SHA_20160907.0001.fits``."""
    return f"{spec.prefix}_{night:%Y%m%d}.{number:04d}.fits"


def simulate_instruments(
    root: Path,
    instruments: list[str],
    nights: int,
    end_date: date,
    frames: int = 3,
    seed: int = 0,
    image_size: int = 32,
    growing: bool = False,
) -> Simulation:
    """Write ``frames`` frames a night for ``nights`` nights ending ``end_date`` for each instrument.

    Files go to ``<root>/<inst>/YYYY/MMDD/``.  With ``growing``, the last frame of the last
    instrument's last night is left half-written with a fresh mtime.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sim = Simulation()
    unknown = [name for name in instruments if name not in INSTRUMENTS]
    if unknown:
        raise ValueError(f"unknown instrument {unknown[0]!r} (known: {', '.join(INSTRUMENTS)})")
    for i_inst, name in enumerate(instruments):
        spec = INSTRUMENTS[name]
        for back in range(nights - 1, -1, -1):
            night = end_date - timedelta(days=back)
            folder = Path(root) / name / f"{night:%Y}" / f"{night:%m%d}"
            folder.mkdir(parents=True, exist_ok=True)
            start = _night_start(night, frames)
            for number in range(1, frames + 1):
                exptime = float(rng.choice(_EXPTIMES_S))
                image = rng.poisson(1000.0, size=(image_size, image_size)).clip(0, 65535)
                content = fits_frame(spec, start, exptime, str(rng.choice(_OBJECTS)), image)
                path = folder / frame_name(spec, night, number)
                is_last = i_inst == len(instruments) - 1 and back == 0 and number == frames
                if growing and is_last:
                    path.write_bytes(content[: len(content) // 2])
                    sim.growing = GrowingFile(path, content)
                else:
                    path.write_bytes(content)
                    end = (start + timedelta(seconds=exptime)).timestamp()
                    os.utime(path, (end, end))
                sim.files.append(path)
                start += timedelta(seconds=exptime + _READOUT_S)
    return sim


_EXPTIMES_S = (1.0, 10.0, 30.0, 60.0, 120.0)
_READOUT_S = 15.0


def _night_start(night: date, frames: int) -> datetime:
    """18:30 UTC on the night's date, or earlier if that is still to come.

    The frames are written now, so their times (and mtimes) must already have passed, by an
    hour at least (older than any settle time): before 18:30 UTC, "tonight" would otherwise be
    a night of files from the future, which the sync rightly counts as still being written.
    """
    evening = datetime(night.year, night.month, night.day, 18, 30, tzinfo=UTC)
    longest = frames * timedelta(seconds=max(_EXPTIMES_S) + _READOUT_S)
    return min(evening, datetime.now(UTC) - timedelta(hours=1) - longest)

