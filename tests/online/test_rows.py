"""Raw scan -> SDFITS row values: shape, order, and values computed from a simulated raw scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from dysh.spectra.core import mean_tsys

from obsflow.errors import InputError
from obsflow.online import raw
from obsflow.online.rows import COLUMN_NAMES, scan_header, scan_rows
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

LINE_HZ = 1420.405752e6 + 2.0e6
SPEC = TelescopeSpec(project="TROWS_01", scans=2, procedure="OffOn", banks=2, pols=2, feeds=2, channels=1024,
                     integrations=8, bandwidth_hz=11.71875e6, tsys_k=22.0, tcal_k=1.3, line_peak_k=4.0,
                     line_fwhm_kms=30.0, line_freq_hz=LINE_HZ, centre_freq_hz=1420.405752e6, seed=11)  # fmt: skip


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[raw.Scan]:
    out = tmp_path_factory.mktemp("rows")
    simulate_project(SPEC, out)
    return raw.read_project(out / SPEC.project)


def test_columns_match_the_real_filler_file(samples: Path, scans: list[raw.Scan]) -> None:
    with fits.open(samples / "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A.fits") as real:
        assert tuple(real[1].columns.names) == COLUMN_NAMES
    rows = scan_rows(scans[0], "A")
    assert tuple(rows) == COLUMN_NAMES
    nrows = 8 * 4 * 2  # integrations x samplers (2 feeds x 2 pols) x cal states
    assert all(len(values) == nrows for values in rows.values())
    assert rows["DATA"].shape == (nrows, 1024) and rows["DATA"].dtype == np.dtype(">f4")
    assert rows["OBJECT"].dtype.kind == "U" and rows["SCAN"].dtype == np.int32


def test_row_order_and_switching_columns(scans: list[raw.Scan]) -> None:
    rows = scan_rows(scans[0], "A")
    assert list(rows["SAMPLER"][:8]) == ["A1_0", "A1_0", "A2_0", "A2_0", "A3_0", "A3_0", "A4_0", "A4_0"]
    assert list(zip(rows["SIG"][:4], rows["CAL"][:4], strict=True)) == [("T", "F"), ("T", "T")] * 2
    assert list(rows["FEED"][:8:2]) == [1, 1, 2, 2] and list(rows["FDNUM"][:8:2]) == [0, 0, 1, 1]
    assert list(rows["PLNUM"][:8:2]) == [0, 1, 0, 1] and list(rows["CRVAL4"][:8:2]) == [-5, -6, -5, -6]
    assert set(rows["IFNUM"]) == {0} and set(scan_rows(scans[0], "B")["IFNUM"]) == {1}
    dates = rows["DATE-OBS"][::8]
    assert list(dates[:3]) == ["2026-01-15T03:00:00.00", "2026-01-15T03:00:01.00", "2026-01-15T03:00:02.00"]
    assert set(rows["TIMESTAMP"]) == {"2026_01_15_03:00:00"}
    assert set(rows["OBSMODE"]) == {"OffOn:PSWITCHOFF:TPWCAL"}
    assert set(scan_rows(scans[1], "A")["OBSMODE"]) == {"OffOn:PSWITCHON:TPWCAL"}
    procedure = (rows["PROCSEQN"][0], rows["PROCSIZE"][0], rows["PROCSCAN"][0], rows["PROCTYPE"][0])
    assert procedure == (1, 2, "OFF", "SIMPLE")
    assert rows["EXPOSURE"][0] == pytest.approx(0.49) and rows["DURATION"][0] == pytest.approx(0.5)


def test_frequency_pointing_and_calibration_values(scans: list[raw.Scan]) -> None:
    rows = scan_rows(scans[0], "A")
    cdelt = SPEC.bandwidth_hz / SPEC.channels
    assert rows["CRVAL1"] == pytest.approx(np.full(64, 1420.405752e6)) and set(rows["CDELT1"]) == {cdelt}
    assert set(rows["CRPIX1"]) == {513.0} and set(rows["OBSFREQ"]) == set(rows["CRVAL1"])
    assert set(rows["BANDWID"]) == {SPEC.bandwidth_hz} and set(rows["TCAL"]) == {np.float32(SPEC.tcal_k)}
    assert (rows["VSPRVAL"][0], rows["VSPRPIX"][0], rows["VSPDELT"][0]) == (16.0, 513.0, 3.0e9 / 64 / cdelt)
    labels = (rows["CTYPE2"][0], rows["CTYPE3"][0], rows["VELDEF"][0], rows["FRONTEND"][0])
    assert labels == ("RA", "DEC", "RADI-OBS", "Rcvr1_2")
    assert np.all((rows["ELEVATIO"] > 0) & (rows["ELEVATIO"] < 90)) and np.all(rows["LST"] >= 0)
    assert rows["FEEDXOFF"][4] == 0.05 and rows["FEEDXOFF"][0] == 0.0
    assert rows["TRGTLONG"][0] == SPEC.source_ra_deg and rows["CRVAL2"][0] != SPEC.source_ra_deg  # OFF scan points away
    assert scan_rows(scans[1], "A")["CRVAL2"][0] == pytest.approx(SPEC.source_ra_deg)
    header = scan_header(scans[0], "A")
    assert (header["PROJID"], header["BACKEND"], header["TELESCOP"]) == ("TROWS_01", "VEGAS", "NRAO_GBT")
    assert header["SITELONG"] == pytest.approx(-79.8398, abs=1e-3)


def _azel(ra_deg: np.ndarray, dec_deg: np.ndarray, lst_s: np.ndarray, lat_deg: float) -> tuple[np.ndarray, np.ndarray]:
    ha, dec, lat = np.radians(lst_s / 240.0 - ra_deg), np.radians(dec_deg), np.radians(lat_deg)
    el = np.arcsin(np.sin(dec) * np.sin(lat) + np.cos(dec) * np.cos(lat) * np.cos(ha))
    az = np.arctan2(-np.sin(ha) * np.cos(dec), np.sin(dec) * np.cos(lat) - np.cos(dec) * np.sin(lat) * np.cos(ha))
    return np.degrees(az), np.degrees(el)


def test_every_feed_has_its_own_ra_dec(scans: list[raw.Scan]) -> None:
    # Found by review: CRVAL2/CRVAL3 (RA/DEC) were the tracking beam's for every feed, though the header says
    # "Feed offsets ARE included in the CRVAL2 and CRVAL3 columns": a multi-beam map put all beams on one spot.
    rows = scan_rows(scans[1], "A")
    az, el = _azel(rows["CRVAL2"], rows["CRVAL3"], rows["LST"], scan_header(scans[1], "A")["SITELAT"])
    az_off, el_off = np.radians(az - rows["AZIMUTH"]), np.radians(el - rows["ELEVATIO"])
    cos_el = np.cos(np.radians(el)) * np.cos(np.radians(rows["ELEVATIO"]))
    haversine = np.sin(el_off / 2) ** 2 + cos_el * np.sin(az_off / 2) ** 2
    assert np.degrees(2 * np.arcsin(np.sqrt(haversine))).max() * 3600 < 2.0  # arcsec, the feed's own AZIMUTH/ELEVATIO
    feed2 = rows["FEED"] == 2
    assert rows["CRVAL2"][~feed2] == pytest.approx(np.full((~feed2).sum(), SPEC.source_ra_deg))  # on the source
    assert np.abs(rows["CRVAL2"][feed2] - SPEC.source_ra_deg).min() * 3600 > 60  # feed 2 is 3 arcmin away


def test_position_switched_calibration_recovers_tsys_and_line(scans: list[raw.Scan]) -> None:
    off, on = (scan_rows(s, "A") for s in scans)  # OffOn: the first scan is the reference
    pick = (on["FDNUM"] == 0) & (on["PLNUM"] == 0)
    calon, caloff = (off["DATA"][pick & (off["CAL"] == c)].astype(float) for c in ("T", "F"))
    sig = 0.5 * (on["DATA"][pick & (on["CAL"] == "T")] + on["DATA"][pick & (on["CAL"] == "F")])
    ref = 0.5 * (calon + caloff)
    tcal = float(off["TCAL"][pick][0])
    tsys = np.array([mean_tsys(calon[i], caloff[i], tcal) for i in range(8)])
    assert tsys.mean() == pytest.approx(SPEC.tsys_k, rel=0.02)
    ta = (tsys[:, None] * (sig - ref) / ref).mean(axis=0)
    freq = on["CRVAL1"][0] + (np.arange(1024) + 1 - on["CRPIX1"][0]) * on["CDELT1"][0]
    assert abs(freq[int(np.argmax(ta))] - LINE_HZ) <= 2 * on["CDELT1"][0]
    near = np.abs(freq - LINE_HZ) < SPEC.line.fwhm_hz / 4
    assert ta[near].mean() == pytest.approx(SPEC.line_peak_k * 0.96, rel=0.05)


def test_bad_scans_are_input_errors(scans: list[raw.Scan], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no VEGAS bank C"):
        scan_rows(scans[0], "C")
    vegas = raw.bank_file(scans[0], "A")
    payload = vegas.read_bytes()
    try:
        vegas.write_bytes(payload[: len(payload) // 2])
        with pytest.raises(InputError, match="truncated") as err:
            scan_rows(scans[0], "A")
        assert vegas.name in str(err.value)
    finally:
        vegas.write_bytes(payload)


def test_device_file_changed_after_a_fill_is_read_again(scans: list[raw.Scan]) -> None:
    assert len(scan_rows(scans[0], "A")["DATA"]) == 64  # Antenna, GO, LO1, IF and receiver now remembered
    antenna = scans[0].device_file("Antenna")
    payload = antenna.read_bytes()
    try:
        antenna.write_bytes(payload[:-2880])
        with pytest.raises(InputError, match="truncated") as err:
            scan_rows(scans[0], "B")
        assert antenna.name in str(err.value)
    finally:
        antenna.write_bytes(payload)
    assert len(scan_rows(scans[0], "B")["DATA"]) == 64
