"""Quick-look spectra: the right rows, the right frequency axis, a real image; real GBT files too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from obsflow.errors import InputError
from obsflow.web.quicklook import quicklook_path, quicklook_png, scan_spectra
from tests.web.sdfits_files import ScanSpec, expected_mean, write_bank

REAL_23 = "testdata/AGBT22A_325_23/AGBT22A_325_23.raw.vegas"

# Scan 2 appears twice (the scan counter restarted): the timestamp tells them apart.
SCANS = [
    ScanSpec(1, "2026_05_01_01:00:00", 4, 10.0),
    ScanSpec(2, "2026_05_01_01:01:00", 3, 20.0),
    ScanSpec(3, "2026_05_01_01:02:00", 5, 30.0),
    ScanSpec(2, "2026_05_01_03:00:00", 2, 70.0),
]


@pytest.fixture
def banks(tmp_path: Path, samples: Path) -> list[Path]:
    return [write_bank(samples, tmp_path / f"P.raw.vegas.{b}.fits", SCANS, nchan=512) for b in "AB"]


def assert_png_image(path: Path, min_bytes: int = 5000) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > min_bytes, len(data)
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert float(pixels[..., :3].std()) > 0.05  # drawn, not a blank canvas
    return pixels


def test_mean_spectrum_uses_only_the_rows_of_that_scan(banks: list[Path]) -> None:
    spectra = scan_spectra(banks, 3, "2026_05_01_01:02:00")
    assert [(s.bank, s.plnum, s.polarization) for s in spectra] == [("A", 0, "XX"), ("A", 1, "YY"),
                                                                   ("B", 0, "XX"), ("B", 1, "YY")]
    for spectrum in spectra:
        assert spectrum.integrations == 5
        np.testing.assert_allclose(spectrum.counts, expected_mean(SCANS[2], spectrum.plnum, 512), rtol=1e-6)


def test_a_repeated_scan_number_is_told_apart_by_timestamp(banks: list[Path]) -> None:
    early = scan_spectra(banks, 2, "2026_05_01_01:01:00")[0]
    newest = scan_spectra(banks, 2, None)[0]
    assert (early.integrations, newest.integrations) == (3, 2)
    np.testing.assert_allclose(early.counts, expected_mean(SCANS[1], 0, 512), rtol=1e-6)
    np.testing.assert_allclose(newest.counts, expected_mean(SCANS[3], 0, 512), rtol=1e-6)
    assert newest.timestamp == "2026_05_01_03:00:00"


def test_frequency_axis_is_the_sky_frequency_from_crval1_cdelt1_crpix1(banks: list[Path]) -> None:
    spectrum = scan_spectra(banks, 1, None)[0]
    # write_bank: CRVAL1 = 1.42 GHz + 1 kHz per integration (mean over 4: +1.5 kHz) at CRPIX1 = 257
    crval1 = 1.42e9 + 1500.0
    assert spectrum.freq_ghz[256] == pytest.approx(crval1 / 1e9, abs=1e-12)
    assert spectrum.freq_ghz[0] == pytest.approx((crval1 - 256 * 12_207.03125) / 1e9, abs=1e-12)
    assert np.all(np.diff(spectrum.freq_ghz) > 0)
    line_channel = int(np.argmax(spectrum.counts - np.median(spectrum.counts)))
    assert line_channel == 384  # the injected line sits at 3/4 of the band


def test_quicklook_png_is_written_where_the_page_looks(tmp_path: Path, banks: list[Path]) -> None:
    out = quicklook_path(tmp_path / "sdfits", "AGBT26A_001_01", 3)
    assert out == tmp_path / "sdfits" / ".obsflow" / "quicklook" / "AGBT26A_001_01" / "scan_3.png"
    assert quicklook_png(banks, 3, None, out) == out
    assert_png_image(out)
    assert [p.name for p in out.parent.iterdir()] == ["scan_3.png"]  # no temp file left behind


def test_real_gbt_filler_output_eight_banks(tmp_path: Path, samples: Path) -> None:
    banks = sorted((samples / REAL_23).glob("*.fits"))
    assert len(banks) == 8
    spectra = scan_spectra(banks, 46, None)
    assert {s.bank for s in spectra} == set("ABCDEFGH")
    first = spectra[0]
    assert (first.fdnum, first.integrations, first.object) == (8, 6, "1-250922")
    assert 111.0 < first.freq_ghz.mean() < 112.5  # the 3 mm receiver's band
    assert np.isfinite(first.counts).all() and first.counts.std() > 0
    assert_png_image(quicklook_png(banks, 46, "2025_03_11_10:16:17", tmp_path / "scan_46.png"))


def test_missing_scan_or_bad_file_is_an_input_error(tmp_path: Path, banks: list[Path], samples: Path) -> None:
    with pytest.raises(InputError, match="scan 9 .* none of the SDFITS files"):
        scan_spectra(banks, 9, None)
    scan_log = next((samples / "raw_gbtcal").glob("*/ScanLog.fits"))  # a FITS table, not SDFITS
    with pytest.raises(InputError, match="not an SDFITS file"):
        scan_spectra([scan_log], 1, None)
    with pytest.raises(InputError, match="cannot read SDFITS"):
        scan_spectra([samples / "testdata/AGBT20B_014_03.raw.vegas/AGBT20B_014_03.raw.vegas.A6.index"], 1, None)
    with pytest.raises(InputError):
        quicklook_path(tmp_path, "../etc", 1)
    assert not (tmp_path / "scan_9.png").exists()
