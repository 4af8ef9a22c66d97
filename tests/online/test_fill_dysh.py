"""End to end: simulated raw scans -> obsflow fill -> the real dysh calibrates them.

dysh (from PyPI) opens our products as a directory, as a single file, with and
without our index, with flags; ``gettp`` (Track) and ``getps`` (OnOff) must give
back the line and the system temperature the simulator injected, within 5 %; ``getnod`` (Nod, two feeds)
must find the two nodding beams and give back the line.
"""

from __future__ import annotations

import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import curve_fit

from obsflow.cli import main
from obsflow.online.layout import OutputLayout
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

pytest.importorskip("fitsio")  # dysh reads .index files only with fitsio: it is a test dependency
from dysh.fits.gbtfitsload import GBTFITSLoad  # noqa: E402

TSYS, TCAL, PEAK, FWHM_HZ = 22.0, 1.8, 3.0, 120e3
LINE_HZ = 1420.405752e6 + 0.8e6  # off the band centre, so the centre is really measured


def _spec(procedure: str, scans: int, project: str, seed: int, feeds: int = 1) -> TelescopeSpec:
    return TelescopeSpec(
        project=project, scans=scans, procedure=procedure, banks=2, pols=2, feeds=feeds, channels=4096,
        integrations=30, tsys_k=TSYS, tcal_k=TCAL, line_peak_k=PEAK, line_freq_hz=LINE_HZ, line_fwhm_hz=FWHM_HZ,
        line_fwhm_kms=None, seed=seed, start=datetime(2026, 11, 20, 2, 0, 0, tzinfo=UTC),
    )  # fmt: skip


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """Two projects filled with obsflow: OnOff pairs and Track scans."""
    raw_root = tmp_path_factory.mktemp("raw")
    out = tmp_path_factory.mktemp("sdfits")
    simulate_project(_spec("OnOff", 2, "AGBT26A_100_01", seed=3), raw_root)
    simulate_project(_spec("Track", 1, "AGBT26A_200_01", seed=4), raw_root)
    for project in ("AGBT26A_100_01", "AGBT26A_200_01"):
        assert main(["fill", str(raw_root / project), str(out)]) == 0
    return raw_root, out


def _gauss(x, peak, centre, sigma, offset):
    return peak * np.exp(-0.5 * ((x - centre) / sigma) ** 2) + offset


def _fit_line(freq_hz: np.ndarray, temp_k: np.ndarray) -> tuple[float, float, float]:
    """(peak K, centre Hz, FWHM Hz) of the strongest line, by a Gaussian fit."""
    good = np.isfinite(temp_k)
    freq_hz, temp_k = freq_hz[good], temp_k[good]
    guess = (temp_k.max(), freq_hz[np.argmax(temp_k)], FWHM_HZ / 2.355, float(np.median(temp_k)))
    window = np.abs(freq_hz - guess[1]) < 10 * FWHM_HZ
    params, _ = curve_fit(_gauss, freq_hz[window], temp_k[window], p0=guess)
    peak, centre, sigma, _ = params
    return float(peak), float(centre), float(abs(sigma) * 2.3548)


def _load(path: Path, **kwargs) -> GBTFITSLoad:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GBTFITSLoad(str(path), **kwargs)


def test_dysh_summary_lists_every_scan_dir_file_and_without_index(filled, tmp_path):
    _, out = filled
    layout = OutputLayout(out)
    product = layout.product_dir("AGBT26A_100_01")
    assert sorted(p.name for p in product.glob("*.fits")) == [
        "AGBT26A_100_01.raw.vegas.A.fits", "AGBT26A_100_01.raw.vegas.B.fits"]  # fmt: skip
    scans = set(_load(product).get_summary()["SCAN"])
    assert scans == {1, 2}
    single = _load(layout.bank_fits("AGBT26A_100_01", "A"))
    assert set(single.get_summary()["SCAN"]) == {1, 2}
    # Without our index dysh reads the FITS file itself: the same scans.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(layout.bank_fits("AGBT26A_100_01", "A"), bare)
    assert set(_load(bare / "AGBT26A_100_01.raw.vegas.A.fits").get_summary()["SCAN"]) == {1, 2}
    with_flags = _load(product, skipflags=False)
    assert set(with_flags.get_summary()["SCAN"]) == {1, 2}


@pytest.mark.parametrize("plnum", [0, 1])
def test_getps_recovers_injected_line_and_tsys(filled, plnum):
    _, out = filled
    sdf = _load(OutputLayout(out).product_dir("AGBT26A_100_01"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = sdf.getps(scan=1, ifnum=0, plnum=plnum, fdnum=0).timeaverage()
    assert ta.meta["TSYS"] == pytest.approx(TSYS, rel=0.05)
    freq = ta.spectral_axis.to("Hz").value
    peak, centre, fwhm = _fit_line(freq, ta.flux.to("K").value)
    assert peak == pytest.approx(PEAK, rel=0.05)
    assert abs(centre - LINE_HZ) < 0.05 * FWHM_HZ
    assert fwhm == pytest.approx(FWHM_HZ, rel=0.05)


def test_gettp_track_recovers_tsys_and_line(filled):
    _, out = filled
    sdf = _load(OutputLayout(out).product_dir("AGBT26A_200_01"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp = sdf.gettp(scan=1, ifnum=0, plnum=0, fdnum=0).timeaverage()
    tsys = tp.meta["TSYS"]
    assert tsys == pytest.approx(TSYS, rel=0.05)
    counts = tp.flux.value
    freq = tp.spectral_axis.to("Hz").value
    # Total power in counts: the line is the fractional excess over the continuum times Tsys.
    off_line = np.abs(freq - LINE_HZ) > 5 * FWHM_HZ
    baseline = np.polyval(np.polyfit(freq[off_line], counts[off_line], 3), freq)
    peak, centre, fwhm = _fit_line(freq, tsys * (counts / baseline - 1.0))
    assert peak == pytest.approx(PEAK, rel=0.05)
    assert abs(centre - LINE_HZ) < 0.05 * FWHM_HZ
    assert fwhm == pytest.approx(FWHM_HZ, rel=0.05)


def test_getnod_finds_both_nodding_beams_and_recovers_the_line(tmp_path):
    # Found by review: FEEDXOFF/FEEDEOFF were each beam's offset in the receiver, not from the beam the
    # antenna tracked with, so in the second scan of a Nod (beam 2 on the source) beam 1 still had offset 0:
    # dysh's get_nod_beams said [0, 0] and getnod calibrated beam 1 against itself.
    raw_root, out = tmp_path / "raw", tmp_path / "sdfits"
    simulate_project(_spec("Nod", 2, "AGBT26A_300_01", seed=5, feeds=2), raw_root)
    assert main(["fill", str(raw_root / "AGBT26A_300_01"), str(out)]) == 0
    sdf = _load(OutputLayout(out).product_dir("AGBT26A_300_01"))
    offsets = {(int(scan), int(fdnum)): (float(x), float(e)) for scan, fdnum, x, e
               in zip(sdf["SCAN"], sdf["FDNUM"], sdf["FEEDXOFF"], sdf["FEEDEOFF"], strict=True)}  # fmt: skip
    assert offsets[(1, 0)] == offsets[(2, 1)] == (0.0, 0.0)  # the tracking beam of each scan
    assert offsets[(1, 1)] == pytest.approx((0.05, 0.0)) and offsets[(2, 0)] == pytest.approx((-0.05, 0.0))
    assert sdf.get_nod_beams(1) == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = sdf.getnod(scan=1, ifnum=0, plnum=0).timeaverage()
    peak, centre, fwhm = _fit_line(ta.spectral_axis.to("Hz").value, ta.flux.to("K").value)
    assert peak == pytest.approx(PEAK, rel=0.05)
    assert abs(centre - LINE_HZ) < 0.05 * FWHM_HZ
    assert fwhm == pytest.approx(FWHM_HZ, rel=0.05)


def test_user_flag_row_is_honoured_by_dysh(filled, tmp_path):
    _, out = filled
    project_copy = tmp_path / "p"
    shutil.copytree(OutputLayout(out).product_dir("AGBT26A_100_01"), project_copy, symlinks=False)
    flag_file = project_copy / "AGBT26A_100_01.raw.vegas.A.flag"
    assert flag_file.read_text().rstrip("\n").endswith("IDSTRING") or "|" in flag_file.read_text()
    with open(flag_file, "a") as handle:
        handle.write("*|1|*|*|0|0|1000|1200|user_rfi\n")
    sdf = _load(project_copy, skipflags=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = sdf.getps(scan=1, ifnum=0, plnum=0, fdnum=0, apply_flags=True).timeaverage()
    mask = np.ma.getmaskarray(ta.flux) if np.ma.isMaskedArray(ta.flux) else ta.mask
    assert mask[1000:1201].all()
    assert not mask[1300:1400].any()
