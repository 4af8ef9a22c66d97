"""Writing SDFITS bank files for the quick-look tests, in the real filler's 74-column layout.

Every column comes from a real GBT filler file (the ``samples`` fixture); the columns a
quick look reads (SCAN, TIMESTAMP, PLNUM, FDNUM, CRVAL1/CDELT1/CRPIX1, CRVAL4, DATA) get
values the test chooses, so expected spectra are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

TEMPLATE = "testdata/AGBT22A_325_23/AGBT22A_325_23.raw.vegas/AGBT22A_325_23.raw.vegas.A.fits"


@dataclass(frozen=True)
class ScanSpec:
    """One scan to write: its number, timestamp, integrations and a constant added to its counts."""

    scan: int
    timestamp: str
    integrations: int
    level: float


def counts_for(spec: ScanSpec, integration: int, plnum: int, nchan: int) -> np.ndarray:
    """The DATA row written for one integration and polarisation: a sloped baseline plus a line at 3/4 band."""
    channel = np.arange(nchan, dtype=np.float64)
    line = 50.0 * np.exp(-0.5 * ((channel - 0.75 * nchan) / 6.0) ** 2)
    return spec.level + 100.0 * plnum + 0.01 * channel + integration + line


def write_bank(samples: Path, path: Path, scans: list[ScanSpec], nchan: int = 1024, npol: int = 2,
               crval1_hz: float = 1.42e9, cdelt1_hz: float = 12_207.03125) -> Path:
    """Write one bank file holding ``scans``; rows ordered per integration, per polarisation (like the filler)."""
    with fits.open(samples / TEMPLATE) as template:
        columns, real = template[1].columns, template[1].data
        header = template[0].header.copy()
        rows: dict[str, list[object]] = {c.name: [] for c in columns}
        for spec in scans:
            for integration in range(spec.integrations):
                for plnum in range(npol):
                    values = {
                        "SCAN": spec.scan, "TIMESTAMP": spec.timestamp, "PLNUM": plnum, "FDNUM": 0, "IFNUM": 0,
                        "CRVAL1": crval1_hz + 1000.0 * integration, "CDELT1": cdelt1_hz, "CRPIX1": nchan / 2 + 1,
                        "CRVAL4": -5 - plnum, "OBJECT": "W3OH", "TDIM7": f"({nchan},1,1,1)",
                        "DATA": counts_for(spec, integration, plnum, nchan).astype(np.float32),
                    }  # fmt: skip
                    for column in columns:
                        rows[column.name].append(values.get(column.name, real[column.name][0]))
        new_columns = []
        for column in columns:
            fmt = f"{nchan}E" if column.name == "DATA" else column.format
            new_columns.append(fits.Column(name=column.name, format=fmt, unit=column.unit,
                                           array=np.array(rows[column.name])))
        table = fits.BinTableHDU.from_columns(new_columns, name="SINGLE DISH")
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.HDUList([fits.PrimaryHDU(header=header), table]).writeto(path, overwrite=True)
    return path


def expected_mean(spec: ScanSpec, plnum: int, nchan: int) -> np.ndarray:
    """The mean spectrum a quick look must show for ``spec`` and ``plnum`` (float32 rounding included)."""
    rows = [counts_for(spec, i, plnum, nchan).astype(np.float32) for i in range(spec.integrations)]
    return np.mean(np.array(rows, dtype=np.float64), axis=0)
