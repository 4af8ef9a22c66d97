"""The SDFITS layout of the GBT filler, as data: 74 columns and every header card, in file order.

Taken card by card from the real filler output ``AGBT22A_325_15.raw.vegas.A.fits``
(GBT_FORMATS.md §3): the ``SINGLE DISH`` extension header interleaves the column
definitions with COMMENT group markers and a few non-column keywords (TELESCOP,
CTYPE4, PROJID, BACKEND, SITE*).  Only the DATA width (``TFORM7 = '<nchan>E'``)
and the row count change from file to file; ``TDIM7`` is a *column*.

This module renders headers and the numpy row layout from that table; it does no
I/O.  Invariant: given the same keyword values, :func:`primary_header` and
:func:`extension_header` reproduce the real filler's header blocks byte for byte.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from obsflow import __version__
from obsflow.errors import InputError

__all__ = [
    "BLOCK",
    "CARD",
    "COLUMNS",
    "COLUMN_NAMES",
    "EXTENSION_LAYOUT",
    "EXTNAME",
    "FILE_KEYWORDS",
    "IDENTITY_KEYWORDS",
    "Column",
    "Comment",
    "Keyword",
    "card",
    "extension_header",
    "header_keywords",
    "naxis2_card",
    "padded",
    "primary_header",
    "row_dtype",
    "tforms",
]

BLOCK = 2880  # FITS block size: every header and data unit is padded to a multiple of it
CARD = 80
EXTNAME = "SINGLE DISH"


@dataclass(frozen=True)
class Column:
    """One binary-table column: TTYPE/TFORM/TUNIT cards (``unit=None``: the filler writes no TUNIT card)."""

    name: str
    tform: str  # DATA's is ``{nchan}E``: its width follows the spectrum
    unit: str | None
    comment: str | None  # of the TTYPE card
    unit_comment: str | None = None  # only TUNIT62 carries one (an empty ``/``)

    def tform_for(self, nchan: int) -> str:
        return self.tform.format(nchan=nchan)


@dataclass(frozen=True)
class Keyword:
    """A non-column keyword card; its value comes from the file's keyword values."""

    name: str
    comment: str


@dataclass(frozen=True)
class Comment:
    """A COMMENT card (text as written after ``COMMENT ``)."""

    text: str


#: the extension header between TFIELDS and EXTNAME, exactly as the filler orders it
EXTENSION_LAYOUT: tuple[Column | Keyword | Comment, ...] = (
    Comment("Start of SDFITS CORE keywords/columns."),
    Column("OBJECT", "32A", "", "name of source observed"),
    Keyword("TELESCOP", "the telescope used"),
    Column("BANDWID", "1D", "Hz", "bandwidth"),
    Column("DATE-OBS", "22A", "", "date and time of observation start"),
    Column("DURATION", "1D", "s", "total integration duration in seconds"),
    Column("EXPOSURE", "1D", "s", "effective int time (excludes blanking) in secs"),
    Column("TSYS", "1D", "K", "system temperature in Kelvin"),
    Comment("End of SDFITS CORE keywords/columns."),
    Comment("Start of SDFITS DATA column and descriptive axes."),
    Column("DATA", "{nchan}E", "", "actual data"),
    Column("TDIM7", "16A", "", "data dimensions of the array"),
    Column("TUNIT7", "6A", "", None),
    Column("CTYPE1", "8A", "Hz", "first data axis is frequency-like"),
    Column("CRVAL1", "1D", "Hz", None),
    Column("CRPIX1", "1D", "", None),
    Column("CDELT1", "1D", "Hz", None),
    Column("CTYPE2", "4A", "", "second axis is longitude-like"),
    Column("CRVAL2", "1D", "deg", None),
    Column("CTYPE3", "4A", "", "third axis is latitude-like"),
    Column("CRVAL3", "1D", "deg", None),
    Keyword("CTYPE4", "fourth axis is Stokes"),
    Column("CRVAL4", "1I", "", None),
    Comment("End of SDFITS DATA column and descriptive axes."),
    Comment("Start of SDFITS SHARED keywords/columns."),
    Column("OBSERVER", "32A", "", "name of observer(s)"),
    Column("OBSID", "32A", "", "observation description"),
    Keyword("PROJID", "project identifier"),
    Column("SCAN", "1J", "", "scan number"),
    Column("OBSMODE", "32A", "", "observing mode"),
    Column("FRONTEND", "16A", "", "frontend device"),
    Keyword("BACKEND", "backend device"),
    Column("TCAL", "1E", "K", "calibration temperature"),
    Column("VELDEF", "8A", "", "velocity definition and frame"),
    Column("VFRAME", "1D", "m/s", "radial velocity of the reference frame"),
    Column("RVSYS", "1D", "m/s", "radial velocity, Vsource - Vtelescope"),
    Column("OBSFREQ", "1D", "Hz", "observed center frequency"),
    Column("LST", "1D", "s", "LST at midpoint of integration/scan"),
    Column("AZIMUTH", "1D", "deg", "azimuth"),
    Column("ELEVATIO", "1D", "deg", "elevation"),
    Column("TAMBIENT", "1D", "K", "ambient temperature"),
    Column("PRESSURE", "1D", "mmHg", "ambient pressure"),
    Column("HUMIDITY", "1D", "", "relative humidity"),
    Keyword("SITELONG", "E. longitude of intersection of the az/el axes"),
    Keyword("SITELAT", "N. latitude of intersection of the az/el axes"),
    Keyword("SITEELEV", "height of the intersection of az/el axes"),
    Column("RESTFREQ", "1D", "Hz", "rest frequency at band center"),
    Column("FREQRES", "1D", "Hz", "frequency resolution"),
    Comment("End of SDFITS SHARED keywords/columns."),
    Comment("Start of GBT-specific keywords/columns."),
    Column("EQUINOX", "1D", "", "equinox of selected coordinate reference frame"),
    Column("RADESYS", "8A", None, "Equitorial coordinate system name"),  # sic, as the filler spells it
    Column("TRGTLONG", "1D", "deg", "target longitude in coord. ref. frame"),
    Column("TRGTLAT", "1D", "deg", "target latitude in coord. ref. frame"),
    Column("SAMPLER", "12A", "", 'sampler description (e.g., "A1" or "A1xA3"'),  # cut at 80 by the filler
    Column("FEED", "1I", "", "(signal) feed number"),
    Column("SRFEED", "1I", "", "reference feed number"),
    Comment("Feed offsets ARE included in the CRVAL2 and CRVAL3 columns"),
    Column("FEEDXOFF", "1D", "deg", "feed XEL offset"),
    Column("FEEDEOFF", "1D", "deg", "feed EL offset"),
    Column("SUBREF_STATE", "1I", "", "subreflector state (1,0,-1) - 0=moving"),
    Column("SIDEBAND", "1A", "", "resulting sideband ('U'pper or 'L'ower)"),
    Column("PROCSEQN", "1I", "", "scan sequence number"),
    Column("PROCSIZE", "1I", "", "number of scans in procedure"),
    Column("PROCSCAN", "16A", "", "scan's role in the procedure"),
    Column("PROCTYPE", "16A", "", "type of the procedure"),
    Column("LASTON", "1J", "", "last 'on' for position switching"),
    Column("LASTOFF", "1J", "", "last 'off' for position switching"),
    Column("TIMESTAMP", "22A", "UTC", "date and time of scan start"),
    Column("QD_XEL", "1D", "deg", "QuadrantDetector cross-elevation offset"),
    Column("QD_EL", "1D", "deg", "QuadrantDetector elevation offset"),
    Column("QD_BAD", "1I", "", "QuadrantDetector flag: 0=good,1=bad"),
    Column("QD_METHOD", "1A", "", "Quad. Det. method A,B,C. Blank indicates none."),
    Column("VELOCITY", "1D", "m/s", "line velocity in rest frame"),
    Column("ZEROCHAN", "1E", "", "zero channel"),
    Column("DOPFREQ", "1D", "Hz", "Doppler tracked frequency"),
    Column("ADCSAMPF", "1D", "", "VEGAS ADC sampler frequency", unit_comment=""),
    Comment("Columns describing VEGAS spur locations"),
    Comment("  SPUR_CHANNEL = (J-VSPRVAL)*VSPDELT+VSPRPIX"),
    Comment("  0 <= J <= 32"),
    Comment("  spur channels are along the frequency axis"),
    Column("VSPDELT", "1D", "", "channel increment between adjacent VEGAS spurs"),
    Column("VSPRVAL", "1D", "", "VEGAS spur number at VSPRPIX"),
    Column("VSPRPIX", "1D", "", "channel number of VEGAS spur VSPRVAL"),
    Column("SIG", "1A", "", "signal is true, reference is false"),
    Column("CAL", "1A", "", "cal ON is true, cal OFF is false"),
    Column("CALTYPE", "8A", None, "LOW or HIGH, may eventually be other types"),
    Column("TWARM", "1E", "K", "4mm RX ambient load temp (K)"),
    Column("TCOLD", "1E", "K", "4mm RX cold load temp (K)"),
    Column("CALPOSITION", "16A", None, "4mm RX table position"),
    Column("IFNUM", "1I", None, "Spectral window (IF) number"),
    Column("PLNUM", "1I", None, "Polarization number"),
    Column("FDNUM", "1I", None, "Feed number"),
    Comment("End of GBT-specific keywords/columns."),
)

COLUMNS: tuple[Column, ...] = tuple(item for item in EXTENSION_LAYOUT if isinstance(item, Column))
COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in COLUMNS)

#: primary-header keywords after the mandatory ones and the two standard COMMENTs
PRIMARY_KEYWORDS: tuple[Keyword, ...] = (
    Keyword("DATE", "date and time this HDU was created"),
    Keyword("ORIGIN", "origin of observation"),
    Keyword("TELESCOP", "the telescope used"),
    Keyword("INSTRUME", "backend"),
    Keyword("SDFITVER", "this file was created by sdfits"),
    Keyword("FITSVER", "FITS definition version"),
)
_FITS_COMMENTS = (
    "  FITS (Flexible Image Transport System) format is defined in 'Astronomy",
    "  and Astrophysics', volume 376, page 359; bibcode: 2001A&A...376..359H",
)

#: every keyword a file carries: the value set :func:`header_keywords` completes
FILE_KEYWORDS: tuple[str, ...] = tuple(
    dict.fromkeys([k.name for k in PRIMARY_KEYWORDS] + [i.name for i in EXTENSION_LAYOUT if isinstance(i, Keyword)])
)
#: keywords that say which file rows belong in: an append must agree with the file on them
IDENTITY_KEYWORDS: tuple[str, ...] = ("PROJID", "BACKEND", "TELESCOP")
_REQUIRED = ("PROJID", "BACKEND", "TELESCOP", "SITELONG", "SITELAT", "SITEELEV")
_FLOAT_KEYWORDS = frozenset({"SITELONG", "SITELAT", "SITEELEV"})

_TFORM_DTYPES = {"A": "S", "D": ">f8", "E": ">f4", "I": ">i2", "J": ">i4", "K": ">i8", "B": "u1"}


def tforms(nchan: int) -> tuple[str, ...]:
    """TFORMn of every column for spectra of ``nchan`` channels."""
    return tuple(column.tform_for(nchan) for column in COLUMNS)


@functools.lru_cache(maxsize=16)  # a few channel counts per project; a dtype cannot change
def row_dtype(nchan: int) -> np.dtype:
    """The numpy structured dtype of one table row: big-endian, packed, fields in column order."""
    if nchan < 1:
        raise InputError(f"a spectrum needs at least one channel, not {nchan}")
    fields: list[tuple[str, str] | tuple[str, str, tuple[int, ...]]] = []
    for column in COLUMNS:
        tform = column.tform_for(nchan)
        repeat, code = int(tform[:-1] or 1), tform[-1]
        if code == "A":
            fields.append((column.name, f"S{repeat}"))
        elif repeat == 1:
            fields.append((column.name, _TFORM_DTYPES[code]))
        else:
            fields.append((column.name, _TFORM_DTYPES[code], (repeat,)))
    return np.dtype(fields)


def padded(size: int) -> int:
    """``size`` rounded up to whole FITS blocks."""
    return -(-size // BLOCK) * BLOCK


def header_keywords(values: Mapping[str, object], now: datetime | None = None) -> dict[str, object]:
    """The complete keyword values of a new file: ``values`` plus defaults for what the caller may omit.

    Defaults: DATE (now, UTC), ORIGIN, INSTRUME (= BACKEND), SDFITVER (``obsflow <version>``),
    FITSVER, CTYPE4.  PROJID, BACKEND, TELESCOP and SITELONG/SITELAT/SITEELEV are required.
    """
    unknown = sorted(set(values) - set(FILE_KEYWORDS))
    if unknown:
        raise InputError(f"unknown SDFITS header keyword(s): {', '.join(unknown)}")
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        raise InputError(f"SDFITS header keyword(s) missing: {', '.join(missing)}")
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    defaults: dict[str, object] = {
        "DATE": stamp, "ORIGIN": "NRAO Green Bank", "INSTRUME": values["BACKEND"],
        "SDFITVER": f"obsflow {__version__}", "FITSVER": "1.9", "CTYPE4": "STOKES",
    }  # fmt: skip
    return {name: values.get(name, defaults.get(name)) for name in FILE_KEYWORDS}


def card(name: str, value: object = None, comment: str | None = None) -> bytes:
    """One 80-byte header card in FITS fixed format, as the filler (cfitsio) writes it; a long comment is cut."""
    if name == "COMMENT":
        head, tail = f"COMMENT {value}", ""
    else:
        field = _value_field(name, value)
        head = f"{name:<8}= " + (f"{field:<20}" if isinstance(value, str) else f"{field:>20}")
        tail = "" if comment is None else f" / {comment}"
    if len(head) > CARD:
        raise InputError(f"header value too long for one FITS card: {name} = {value!r}")
    text = (head + tail)[:CARD].ljust(CARD)
    if not text.isascii() or not text.isprintable():
        raise InputError(f"header card must be printable ASCII: {name} = {value!r}")
    return text.encode("ascii")


def _value_field(name: str, value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "T" if value else "F"
    if isinstance(value, str):
        return "'" + value.replace("'", "''").ljust(8) + "'"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and np.isfinite(value):
        return f"{float(value):.6E}" if name in _FLOAT_KEYWORDS else repr(float(value)).upper()
    raise InputError(f"cannot write {name} = {value!r} ({type(value).__name__}) as a FITS keyword")


def primary_header(keywords: Mapping[str, object]) -> bytes:
    """The primary HDU (header only, no data) of a new file, padded to whole blocks."""
    cards = [
        card("SIMPLE", True, "file does conform to FITS standard"),
        card("BITPIX", 8, "number of bits per data pixel"),
        card("NAXIS", 0, "number of data axes"),
        card("EXTEND", True, "FITS dataset may contain extensions"),
        *(card("COMMENT", text) for text in _FITS_COMMENTS),
        *(card(k.name, _keyword_value(keywords, k.name), k.comment) for k in PRIMARY_KEYWORDS),
    ]
    return _block(cards)


def naxis2_card(nrows: int) -> bytes:
    """The NAXIS2 card of the table; appends rewrite only this card in place."""
    return card("NAXIS2", nrows, "number of rows in table")


def extension_header(nchan: int, nrows: int, keywords: Mapping[str, object]) -> bytes:
    """The ``SINGLE DISH`` BINTABLE header for ``nrows`` rows of ``nchan`` channels, padded to whole blocks."""
    cards = [
        card("XTENSION", "BINTABLE", "binary table extension"),
        card("BITPIX", 8, "8-bit bytes"),
        card("NAXIS", 2, "2-dimensional binary table"),
        card("NAXIS1", row_dtype(nchan).itemsize, "width of table in bytes"),
        naxis2_card(nrows),
        card("PCOUNT", 0, "size of special data area"),
        card("GCOUNT", 1, "one data group (required keyword)"),
        card("TFIELDS", len(COLUMNS), "number of fields in each row"),
    ]
    number = 0
    for item in EXTENSION_LAYOUT:
        if isinstance(item, Comment):
            cards.append(card("COMMENT", item.text))
        elif isinstance(item, Keyword):
            cards.append(card(item.name, _keyword_value(keywords, item.name), item.comment))
        else:
            number += 1
            cards.append(card(f"TTYPE{number}", item.name, item.comment))
            cards.append(card(f"TFORM{number}", item.tform_for(nchan)))
            if item.unit is not None:
                cards.append(card(f"TUNIT{number}", item.unit, item.unit_comment))
    cards.append(card("EXTNAME", EXTNAME, "name of this binary table extension"))
    return _block(cards)


def _keyword_value(keywords: Mapping[str, object], name: str) -> object:
    value = keywords.get(name)
    if value is None:
        raise InputError(f"SDFITS header keyword missing: {name}")
    return value


def _block(cards: list[bytes]) -> bytes:
    text = b"".join(cards) + b"END".ljust(CARD)
    return text.ljust(padded(len(text)), b" ")
