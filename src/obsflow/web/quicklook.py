"""Quick-look plot of one filled scan: the mean spectrum per bank and polarisation, as GBTIDL's online display.

The filler calls :func:`quicklook_png` after each fill; the status page shows the image from
:func:`quicklook_path`.  Reading touches only the scan's rows: the FITS files are memory-mapped,
the ``SCAN`` column selects the rows and only those rows of ``DATA`` are copied.  The PNG is
written atomically, so the page never serves half an image.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from obsflow.atomic import write_atomic
from obsflow.errors import InputError, OutputError

__all__ = ["Spectrum", "quicklook_path", "quicklook_png", "scan_spectra"]

log = logging.getLogger(__name__)

#: SDFITS CRVAL4 codes (FITS Stokes convention) -> polarisation name
POLARIZATION_NAMES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
                      -5: "XX", -6: "YY", -7: "XY", -8: "YX"}  # fmt: skip
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BANK = re.compile(r"\.([A-Za-z0-9]+)\.fits$")
_COLUMNS = ("SCAN", "TIMESTAMP", "PLNUM", "FDNUM", "CRVAL1", "CDELT1", "CRPIX1", "CRVAL4", "OBJECT", "DATA")
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")
_WIDTHS = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_DTYPES = {"L": "S1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16"}


@dataclass(frozen=True)
class Spectrum:
    """The mean spectrum of one scan in one bank, polarisation and feed."""

    bank: str
    plnum: int
    fdnum: int
    polarization: str  # from CRVAL4, e.g. "XX"
    object: str
    timestamp: str  # the scan's TIMESTAMP
    freq_ghz: np.ndarray  # sky frequency of each channel
    counts: np.ndarray  # mean over the scan's integrations (and switching states)
    integrations: int  # rows averaged

    @property
    def label(self) -> str:
        return f"{self.polarization} (PL{self.plnum} FD{self.fdnum})"


def quicklook_path(out_root: Path, project: str, scan: int) -> Path:
    """``<out_root>/.obsflow/quicklook/<PROJ>/scan_<N>.png``: where the page looks for a scan's plot."""
    if not _PROJECT.match(project):
        raise InputError(f"not a project name: {project!r}", out_root)
    return Path(out_root) / ".obsflow" / "quicklook" / project / f"scan_{int(scan)}.png"


def bank_name(fits_path: Path) -> str:
    """The VEGAS bank of ``<PROJ>.raw.vegas.<BANK>.fits`` (the file stem if it does not follow that form)."""
    match = _BANK.search(fits_path.name)
    return match.group(1) if match else fits_path.stem


def scan_spectra(fits_paths: Sequence[Path], scan: int, timestamp: str | None = None) -> list[Spectrum]:
    """The mean spectrum of ``scan`` per bank, polarisation and feed, in file order then PLNUM, FDNUM.

    ``timestamp`` (the ``TIMESTAMP`` column, ``YYYY_MM_DD_HH:MM:SS``) tells apart scans that reuse a
    number; without it the newest scan of that number is taken.  A file without the scan contributes
    nothing; InputError if no file holds it or a file is not SDFITS.
    """
    spectra: list[Spectrum] = []
    for path in fits_paths:
        spectra += _bank_spectra(Path(path), scan, timestamp)
    if not spectra:
        when = f" ({timestamp})" if timestamp else ""
        raise InputError(f"scan {scan}{when} is in none of the SDFITS files", ", ".join(map(str, fits_paths)))
    return spectra


def _bank_spectra(path: Path, scan: int, timestamp: str | None) -> list[Spectrum]:
    table = _table(path, _COLUMNS)
    rows = _scan_rows(table, scan, timestamp)
    if rows.size == 0:
        return []
    picked = table[rows]  # copies only the scan's rows out of the memory map
    data = picked["DATA"].astype(np.float64).reshape(rows.size, -1)
    columns = {name: picked[name] for name in ("PLNUM", "FDNUM", "CRVAL1", "CDELT1", "CRPIX1", "CRVAL4")}
    objects = np.char.decode(picked["OBJECT"], "ascii", "replace")
    stamp = np.char.strip(np.char.decode(picked["TIMESTAMP"][:1], "ascii", "replace"))[0]
    return _group_means(bank_name(path), str(stamp), data, columns, objects)


def _table(path: Path, wanted: tuple[str, ...]) -> np.ndarray:
    """A read-only memory map of the first binary table, with only the ``wanted`` columns as fields.

    astropy reads the header; the rows are mapped with numpy directly, because building astropy's
    table object for the 74 SDFITS columns costs more than the whole quick look may take.  The
    row count is NAXIS2, so rows a running fill has written but not yet committed are never read.
    Scaled columns (TSCALn/TZEROn; the GBT filler writes none) are refused, not misread.
    """
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[1]
            header, data_offset = hdu.header, int(hdu.fileinfo()["datLoc"])
    except (OSError, IndexError, KeyError, ValueError) as err:
        raise InputError(f"cannot read SDFITS: {err}", path) from err
    if header.get("XTENSION") != "BINTABLE":
        raise InputError("not an SDFITS file (HDU 1 is not a binary table)", path)
    names, formats, offsets, position = [], [], [], 0
    for number in range(1, int(header.get("TFIELDS", 0)) + 1):
        name = str(header.get(f"TTYPE{number}", "")).strip().upper()
        match = _TFORM.match(str(header.get(f"TFORM{number}", "")))
        if match is None:
            raise InputError(f"unsupported TFORM{number} {header.get(f'TFORM{number}')!r}", path)
        repeat, code = int(match[1] or 1), match[2]
        if name in wanted:
            if code in "XPQ" or f"TSCAL{number}" in header or f"TZERO{number}" in header:
                raise InputError(f"column {name} has an unsupported format or scaling", path)
            base = f"S{repeat}" if code == "A" else _DTYPES[code]
            names.append(name)
            formats.append((base, (repeat,)) if code != "A" and repeat != 1 else base)
            offsets.append(position)
        position += (repeat + 7) // 8 if code == "X" else repeat * _WIDTHS[code]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InputError(f"not an SDFITS file (no {', '.join(missing)} column)", path)
    row_bytes, nrows = int(header["NAXIS1"]), int(header["NAXIS2"])
    if position != row_bytes:
        raise InputError(f"columns add up to {position} bytes, NAXIS1 says {row_bytes}", path)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": row_bytes})
    if nrows == 0:
        return np.zeros(0, dtype=dtype)
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=data_offset, shape=(nrows,))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot map SDFITS rows: {err}", path) from err


def _scan_rows(table: np.ndarray, scan: int, timestamp: str | None) -> np.ndarray:
    """Row numbers of the scan: SCAN selects, TIMESTAMP (read only for those rows) decides between repeats."""
    rows = np.flatnonzero(table["SCAN"] == scan)
    if rows.size == 0:
        return rows
    stamps = np.char.strip(np.char.decode(table["TIMESTAMP"][rows], "ascii", "replace"))
    wanted = timestamp if timestamp is not None else max(stamps)
    return rows[stamps == wanted]


def _group_means(
    bank: str, timestamp: str, data: np.ndarray, columns: dict[str, np.ndarray], objects: np.ndarray
) -> list[Spectrum]:
    """One mean spectrum per (PLNUM, FDNUM) of the scan's rows in one bank."""
    spectra = []
    nchan = data.shape[1]
    pairs = sorted({(int(p), int(f)) for p, f in zip(columns["PLNUM"], columns["FDNUM"], strict=True)})
    for plnum, fdnum in pairs:
        mask = (columns["PLNUM"] == plnum) & (columns["FDNUM"] == fdnum)
        first = int(np.flatnonzero(mask)[0])
        # Doppler tracking moves CRVAL1 a little between integrations; the mean is what the average saw.
        crval1 = float(np.mean(columns["CRVAL1"][mask]))
        channel = np.arange(1, nchan + 1, dtype=np.float64)  # FITS pixels count from 1
        freq_hz = crval1 + (channel - float(columns["CRPIX1"][first])) * float(columns["CDELT1"][first])
        spectra.append(
            Spectrum(
                bank=bank,
                plnum=plnum,
                fdnum=fdnum,
                polarization=POLARIZATION_NAMES.get(int(columns["CRVAL4"][first]), str(columns["CRVAL4"][first])),
                object=str(objects[first]).strip(),
                timestamp=timestamp,
                freq_ghz=freq_hz / 1e9,
                counts=np.nanmean(data[mask], axis=0),
                integrations=int(mask.sum()),
            )
        )
    return spectra


def quicklook_png(fits_paths: list[Path], scan: int, timestamp: str | None, out_png: Path) -> Path:
    """Plot ``scan``'s mean spectrum per bank and polarisation (counts vs sky frequency) into ``out_png``.

    Parameters
    ----------
    fits_paths
        The project's bank files (``<PROJ>.raw.vegas.<BANK>.fits``), in bank order.
    scan, timestamp
        The scan to show; ``timestamp`` may be None (newest scan with that number).
    out_png
        Written atomically; its folder is created.

    Returns the path written.  InputError if no file holds the scan, OutputError if it cannot be written.
    """
    spectra = scan_spectra(fits_paths, scan, timestamp)
    png = render_spectra(spectra, title=_title(fits_paths, scan, timestamp, spectra))
    out_png = Path(out_png)
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create folder: {err.strerror}", out_png.parent) from err
    write_atomic(out_png, png)
    log.debug("quick look of scan %d: %s", scan, out_png)
    return out_png


def _title(fits_paths: Sequence[Path], scan: int, timestamp: str | None, spectra: list[Spectrum]) -> str:
    project = Path(fits_paths[0]).name.split(".raw.")[0] if fits_paths else ""
    objects = ", ".join(dict.fromkeys(s.object for s in spectra if s.object))
    parts = [project, f"scan {scan}", objects, timestamp or spectra[0].timestamp]
    return "   ".join(p for p in parts if p)


def render_spectra(spectra: list[Spectrum], title: str) -> bytes:
    """The PNG bytes: one panel per bank, one line per polarisation and feed."""
    banks = list(dict.fromkeys(s.bank for s in spectra))
    ncols = 1 if len(banks) == 1 else 2
    nrows = -(-len(banks) // ncols)
    height_in = 0.9 + 2.4 * nrows
    figure = Figure(figsize=(11, height_in), dpi=80)
    FigureCanvasAgg(figure)
    # Fixed margins: constrained layout would double the time to draw.
    axes = figure.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": 0.07, "right": 0.98, "bottom": 0.55 / height_in, "top": 1 - 0.55 / height_in,
        "hspace": 0.75 / 2.4 * 1.6, "wspace": 0.18})  # fmt: skip
    for ax, bank in zip(axes.flat, banks, strict=False):
        for spectrum in (s for s in spectra if s.bank == bank):
            ax.plot(spectrum.freq_ghz, spectrum.counts, linewidth=0.8, label=spectrum.label)
        ax.set_title(f"bank {bank}", fontsize=10, loc="left", y=1.0)  # a fixed y skips title placement
        ax.set_xlabel("sky frequency (GHz)", fontsize=9)
        ax.set_ylabel("counts", fontsize=9)
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.flat[len(banks) :]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
