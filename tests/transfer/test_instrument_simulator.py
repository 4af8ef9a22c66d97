"""The SAAO instrument simulator writes valid FITS frames into dated folders."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from astropy.io import fits

from obsflow.cli import main
from obsflow.simulate.instrument import simulate_instruments


def test_frames_are_valid_fits_in_dated_folders(tmp_path: Path) -> None:
    sim = simulate_instruments(tmp_path, ["sha", "spupnic"], nights=2, end_date=date(2016, 9, 7), frames=2, seed=1)
    names = sorted(str(p.relative_to(tmp_path)) for p in sim.files)
    assert names == [
        "sha/2016/0906/SHA_20160906.0001.fits", "sha/2016/0906/SHA_20160906.0002.fits",
        "sha/2016/0907/SHA_20160907.0001.fits", "sha/2016/0907/SHA_20160907.0002.fits",
        "spupnic/2016/0906/a_20160906.0001.fits", "spupnic/2016/0906/a_20160906.0002.fits",
        "spupnic/2016/0907/a_20160907.0001.fits", "spupnic/2016/0907/a_20160907.0002.fits",
    ]  # fmt: skip
    with fits.open(sim.files[0], checksum=False) as hdul:
        hdul.verify("exception")
        header = hdul[0].header
        assert header["INSTRUME"] == "SHOC" and header["DATE-OBS"].startswith("2016-09-06T18:30")
        assert header["EXPTIME"] > 0 and header["OBJECT"]
        assert hdul[0].data.shape == (32, 32) and hdul[0].data.min() >= 0
    assert sim.files[0].stat().st_mtime < time.time() - 86400  # settled long ago


def test_growing_frame_is_incomplete_until_finished(tmp_path: Path) -> None:
    sim = simulate_instruments(tmp_path, ["shd"], nights=1, end_date=date(2016, 9, 7), frames=3, growing=True)
    assert sim.growing is not None and sim.growing.path == sim.files[-1]
    assert sim.growing.path.stat().st_size < len(sim.growing.content)
    assert time.time() - sim.growing.path.stat().st_mtime < 60
    sim.growing.finish(mtime=0)
    with fits.open(sim.growing.path) as hdul:
        assert hdul[0].header["INSTRUME"] == "SHOC"
    assert sim.growing.path.stat().st_mtime == 0


def test_cli_writes_the_same_tree(tmp_path: Path, capsys) -> None:
    code = main(["simulate-instruments", str(tmp_path), "--instruments", "sha,shd,spupnic", "--nights", "3",
                 "--end-date", "2016-09-07", "--frames", "2", "--seed", "3"])  # fmt: skip
    assert code == 0
    assert "wrote 18 frames" in capsys.readouterr().out
    assert len(list(tmp_path.rglob("*.fits"))) == 18
