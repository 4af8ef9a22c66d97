"""The SDFITS layout table against the real GBT filler file, card by card and byte by byte."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits

from obsflow import __version__
from obsflow.errors import InputError
from obsflow.online import rows
from obsflow.sdfits import columns
from obsflow.sdfits.columns import (
    BLOCK,
    COLUMNS,
    card,
    extension_header,
    header_keywords,
    primary_header,
    row_dtype,
    tforms,
)

REAL = "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A.fits"


@pytest.fixture(scope="module")
def real(samples):
    path = samples / REAL
    with fits.open(path) as hdus:
        primary, table = hdus[0].header.copy(), hdus[1].header.copy()
        cols = hdus[1].columns
        names, formats, units = list(cols.names), list(cols.formats), [c.unit for c in cols]
    return path.read_bytes(), primary, table, names, formats, units


def _real_keywords(primary, table) -> dict[str, object]:
    names = ("PROJID", "BACKEND", "TELESCOP", "SITELONG", "SITELAT", "SITEELEV", "CTYPE4")
    values: dict[str, object] = {k: table[k] for k in names}
    values.update({k: primary[k] for k in ("DATE", "ORIGIN", "INSTRUME", "SDFITVER", "FITSVER")})
    return values


def test_columns_are_the_real_files_names_formats_and_units(real):
    _, _, table, names, formats, units = real
    assert [c.name for c in COLUMNS] == names
    assert len(COLUMNS) == 74 and names.index("DATA") == 6  # DATA is field 7, TDIM7 a column after it
    assert list(tforms(1024)) == formats
    # A column without a TUNIT card has no unit in astropy either.
    assert [c.unit or None for c in COLUMNS] == [u or None for u in units]
    assert "TDIM7" not in table  # a column, never a keyword


def test_column_names_agree_with_the_row_builder():
    assert columns.COLUMN_NAMES == rows.COLUMN_NAMES


def test_row_width_is_the_real_naxis1_and_follows_nchan(real):
    _, _, table, *_ = real
    assert row_dtype(1024).itemsize == table["NAXIS1"]
    assert row_dtype(32768).itemsize == table["NAXIS1"] + 4 * (32768 - 1024)
    assert row_dtype(1024)["DATA"].base.str == ">f4" and row_dtype(1024)["SCAN"].str == ">i4"


def test_headers_reproduce_the_real_filler_bytes(real):
    raw, primary, table, *_ = real
    values = header_keywords(_real_keywords(primary, table))
    ours = primary_header(values) + extension_header(1024, table["NAXIS2"], values)
    assert len(ours) % BLOCK == 0
    assert ours == raw[: len(ours)]


def test_extension_header_for_another_width_parses_with_astropy():
    values = header_keywords({"PROJID": "AGBT26A_001_01", "BACKEND": "VEGAS", "TELESCOP": "NRAO_GBT",
                              "SITELONG": -79.8398333, "SITELAT": 38.4331194, "SITEELEV": 824.595})  # fmt: skip
    header = fits.Header.fromstring(extension_header(32768, 5, values).decode("ascii"))
    assert header["TFORM7"] == "32768E" and header["NAXIS2"] == 5
    assert header["NAXIS1"] == row_dtype(32768).itemsize
    assert header["PROJID"] == "AGBT26A_001_01" and header["CTYPE4"] == "STOKES"
    assert header.cards["SITELONG"].image.startswith("SITELONG=        -7.983983E+01 /")


def test_defaults_name_obsflow_and_the_backend():
    values = header_keywords({"PROJID": "P", "BACKEND": "VEGAS", "TELESCOP": "NRAO_GBT",
                              "SITELONG": 1.0, "SITELAT": 2.0, "SITEELEV": 3.0})  # fmt: skip
    assert values["SDFITVER"] == f"obsflow {__version__}"
    assert values["INSTRUME"] == "VEGAS" and values["ORIGIN"] == "NRAO Green Bank"
    assert len(str(values["DATE"])) == 19 and values["FITSVER"] == "1.9"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"BACKEND": "VEGAS"}, "missing: PROJID, TELESCOP, SITELONG"),
        ({"PROJID": "P", "BACKEND": "V", "TELESCOP": "T", "SITELONG": 1.0, "SITELAT": 2.0, "SITEELEV": 3.0,
          "OBSERVER": "x"}, "unknown SDFITS header keyword(s): OBSERVER"),
    ],
)  # fmt: skip
def test_bad_keyword_sets_are_one_line_input_errors(values, message):
    with pytest.raises(InputError, match=re.escape(message)) as err:
        header_keywords(values)
    assert "\n" not in str(err.value)


def test_cards_refuse_values_that_do_not_fit_or_are_not_ascii():
    assert card("PROJID", "AGBT22A_325_15", "project identifier").decode().startswith("PROJID  = 'AGBT22A_325_15' ")
    with pytest.raises(InputError, match="too long"):
        card("PROJID", "x" * 80, "project identifier")
    with pytest.raises(InputError, match="printable ASCII"):
        card("PROJID", "Ångström", "project identifier")


def test_row_dtype_refuses_an_empty_spectrum():
    with pytest.raises(InputError, match="at least one channel"):
        row_dtype(0)


def test_string_quotes_are_doubled_as_fits_requires():
    image = card("OBSID", "it's", None).decode()
    assert fits.Card.fromstring(image).value == "it's"
    assert np.dtype(row_dtype(4)).names[:7] == tuple(c.name for c in COLUMNS[:7])
