"""The raw GBT reader against the real gbtcal samples, old-style logs, and bad input."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from obsflow.errors import InputError
from obsflow.online import raw
from obsflow.simulate.gbt_files import write_receiver

PROJECT_17A = "AGBT17A_996_01:1:Rcvr2_3"


@pytest.fixture(scope="module")
def project_17a(samples: Path) -> Path:
    return samples / "raw_gbtcal" / PROJECT_17A


@pytest.fixture(scope="module")
def project_17b(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("raw") / "AGBT17B_151_02"
    folder.mkdir()
    shutil.copy(samples / "raw_gbtcal" / "AGBT17B_151_02_ScanLog.fits", folder / "ScanLog.fits")
    return folder


def test_real_scanlog_17a_scans_times_and_files(project_17a: Path) -> None:
    scans = raw.read_project(project_17a)
    assert [s.number for s in scans] == list(range(1, 10))
    first = scans[0]
    assert first.project == "AGBT17A_996_01"
    assert first.timestamp == "2017_03_08_21:41:02"
    assert first.date_obs == "2017-03-08T21:41:02"
    assert first.state == "finished" and first.is_finished
    assert first.started_at == datetime(2017, 3, 8, 21, 41, 1, tzinfo=UTC)
    assert first.finished_at == datetime(2017, 3, 8, 21, 41, 38, tzinfo=UTC)
    assert list(first.devices) == ["Antenna", "LO1A", "DCR", "Rcvr2_3", "IF", "GO"]
    assert first.devices["GO"] == (project_17a / "GO" / "2017_03_08_21:41:02.fits",)
    assert first.devices["Rcvr2_3"] == (project_17a / "Rcvr2_3" / "2008_08_01_00:00:00.fits",)
    assert first.backends == ("DCR",) and first.banks == () and first.receiver == "Rcvr2_3"
    assert scans[1].timestamp == "2017_03_08_21:41:47"
    assert scans[1].finished_at == datetime(2017, 3, 8, 21, 42, 22, tzinfo=UTC)


def test_go_metadata_of_real_scan(project_17a: Path) -> None:
    first = raw.read_project(project_17a)[0]
    assert first.go["PROCNAME"] == "Peak" and first.go["PROCSIZE"] == 4 and first.go["PROCSEQN"] == 1
    assert first.go["OBJECT"] == "0423-0120" and first.go["SWTCHSIG"] == "TPWCAL"
    go = raw.read_go(first.device_file("GO"))
    assert [(w.bank, w.port, w.ifnum, w.pol) for w in go.windows] == [("A", 1, 0, "XX"), ("A", 3, 0, "YY")]
    assert raw.read_project(project_17a)[1].go == {}  # its GO file is not in the sample


def test_real_device_files(project_17a: Path) -> None:
    scan = raw.read_project(project_17a, with_go=False)[0]
    antenna = raw.read_antenna(scan.device_file("Antenna"))
    assert antenna.dmjd.size == 301 and antenna.header["LSTSTART"] == pytest.approx(12527.99033564693)
    at = antenna.at(antenna.dmjd[:1])
    assert (at["az"][0], at["el"][0]) == (pytest.approx(antenna.az_deg[0]), pytest.approx(antenna.el_deg[0]))
    assert antenna.beam_offsets == {"1": (0.0, 0.0), "C": (0.0, 0.0)}
    paths = raw.read_if(scan.device_file("IF"))
    assert (paths[0].backend, paths[0].bank, paths[0].port, paths[0].receptor) == ("DCR", "A", 1, "XL")
    assert paths[0].sky_hz(6.0e9, 8.0e9) == pytest.approx(2.0e9)  # sky = -IF + LO1
    receiver = raw.read_receiver(scan.device_file("Rcvr2_3"))
    assert len(receiver.tables) == 4
    assert receiver.tcal("XL", "X", 1.73e9) == pytest.approx(1.33667, abs=1e-4)  # newest (2008) X table
    assert receiver.tcal("YR", "Y", 1.72e9, high=True) == pytest.approx(6.13333, abs=1e-4)
    dcr = raw.read_dcr(scan.device_file("DCR"))
    assert dcr.data.shape == (289, 2, 2) and dcr.cal == (0, 1) and dcr.channel_ids == (0, 2)


def test_missing_file_named_by_scanlog_is_one_line_input_error(project_17a: Path) -> None:
    scan = raw.read_project(project_17a)[0]
    with pytest.raises(InputError) as err:
        raw.require_files(scan)
    assert "LO1A/2017_03_08_21:41:02.fits" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="missing"):
        raw.read_lo1(scan.device_file("LO1A"))


def test_real_vegas_scanlog_17b(project_17b: Path) -> None:
    scans = raw.read_project(project_17b)
    assert len(scans) == 384 and all(s.is_finished for s in scans)
    first = scans[0]
    assert first.project == "AGBT17B_151_02" and first.timestamp == "2017_10_17_03:00:24"
    assert first.started_at == datetime(2017, 10, 17, 3, 0, 23, tzinfo=UTC)  # space-padded hour ' 3:00:23'
    assert first.banks == tuple("ABCDEFGH") and first.backends == ("VEGAS",)
    receivers = [p.name for p in first.devices["RcvrArray75_115"]]
    assert receivers == ["2016_01_26_00:00:00.fits", "2017_10_17_03:00:24.fits"]
    assert raw.bank_file(first, "C") == project_17b / "VEGAS" / "2017_10_17_03:00:24C.fits"
    assert (scans[2].number, scans[2].backends, scans[2].banks) == (3, ("DCR",), ())
    assert (scans[-1].number, scans[-1].timestamp) == (384, "2017_10_17_11:54:47")


def _write_log(path: Path, columns: list[fits.Column]) -> None:
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="ScanLog")])
    hdus[0].header["PROJID"] = "TOLD_01"
    hdus.writeto(path)


def test_old_dmjd_style_log_and_repeated_scan_numbers(tmp_path: Path) -> None:
    project = tmp_path / "TOLD_01"
    project.mkdir()
    t0 = 57000.5
    rows = [
        (t0, 5, "./TOLD_01/GO/2014_12_09_12:00:00.fits"), (t0, 5, "./TOLD_01/DCR/2014_12_09_12:00:00.fits"),
        (t0, 5, "SCAN STARTING"), (t0 + 30 / 86400, 5, "SCAN FINISHED"),
        (t0 + 60 / 86400, 5, "./TOLD_01/GO/2014_12_09_12:01:00.fits"), (t0 + 60 / 86400, 5, "SCAN STARTING"),
    ]  # fmt: skip
    _write_log(project / "ScanLog.fits", [
        fits.Column(name="DMJD", format="D", array=np.array([r[0] for r in rows])),
        fits.Column(name="SCAN", format="J", array=np.array([r[1] for r in rows])),
        fits.Column(name="FILEPATH", format="64A", array=np.array([r[2] for r in rows])),
    ])  # fmt: skip
    scans = raw.read_project(project)
    assert [(s.number, s.timestamp, s.state) for s in scans] == [
        (5, "2014_12_09_12:00:00", "finished"), (5, "2014_12_09_12:01:00", "started")]
    assert scans[0].finished_at == datetime(2014, 12, 9, 12, 0, 30, tzinfo=UTC)
    assert scans[0].backends == ("DCR",) and raw.require_backend(scans[0]) == ("DCR",)
    with pytest.raises(InputError, match="no backend data"):
        raw.require_backend(scans[1])


def test_truncated_scanlog_is_input_error(project_17a: Path, tmp_path: Path) -> None:
    project = tmp_path / "P"
    project.mkdir()
    payload = (project_17a / "ScanLog.fits").read_bytes()
    for cut in (len(payload) - 2880, len(payload) - 100, 2880, 0):
        (project / "ScanLog.fits").write_bytes(payload[:cut])
        with pytest.raises(InputError) as err:
            raw.read_project(project)
        assert "ScanLog.fits" in str(err.value) and "\n" not in str(err.value)


def test_malformed_fits_and_bad_directories(tmp_path: Path) -> None:
    project = tmp_path / "P"
    project.mkdir()
    (project / "ScanLog.fits").write_bytes(b"not a FITS file at all " * 2880)
    with pytest.raises(InputError, match="malformed FITS"):
        raw.read_project(project)
    with pytest.raises(InputError, match="no ScanLog"):
        raw.read_project(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        raw.read_project(project / "ScanLog.fits")
    with pytest.raises(InputError, match="not found"):
        raw.read_project(tmp_path / "absent")


def _astropy_values(hdu: Any) -> dict[str, Any]:
    return {key: hdu.header[key] for key in hdu.header if key not in ("", "COMMENT", "HISTORY")}


def _assert_reads_like_astropy(path: Path) -> int:
    """Every header value (type and order too) and every table column of ``path`` as astropy reads them."""
    ours = raw.open_fits(path)
    compared = 0
    with fits.open(path) as theirs:
        assert [hdu.name for hdu in ours] == [hdu.name for hdu in theirs]
        for mine, ref in zip(ours, theirs, strict=True):
            expected = _astropy_values(ref)
            assert list(mine.header.items()) == list(expected.items())
            assert [type(v) for v in mine.header.values()] == [type(v) for v in expected.values()]
            if not isinstance(ref, fits.BinTableHDU):
                continue
            assert mine.table is not None and mine.table.names == tuple(ref.columns.names)
            for name in ref.columns.names:
                want, got = np.asarray(ref.data[name]), mine.table.column(name)
                if want.dtype.kind == "U":
                    want = np.char.rstrip(want)  # astropy strips trailing blanks on element access
                assert (got.shape, got.dtype) == (want.shape, want.dtype), name
                if want.dtype == object:  # variable-length arrays
                    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), name
                else:
                    assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), name
                compared += 1
    return compared


def test_fits_reader_gives_astropys_values_for_every_real_sample(samples: Path) -> None:
    files = sorted(samples.rglob("*.fits"))
    assert len(files) >= 15
    assert sum(_assert_reads_like_astropy(path) for path in files) > 900


def test_fits_reader_hands_odd_cards_and_columns_to_astropy(tmp_path: Path) -> None:
    n = 3
    columns = [
        fits.Column(name="U16", format="I", bzero=32768, array=np.array([0, 40000, 65535], dtype=np.uint16)),
        fits.Column(name="SCALED", format="E", bscale=2.0, array=np.array([1.0, 2.0, 3.0])),
        fits.Column(name="BITS", format="12X", array=np.eye(n, 12, dtype=bool)),
        fits.Column(name="VLA", format="PE()", array=np.array([np.arange(k + 1, dtype="f4") for k in range(n)],
                                                               dtype=object)),
        fits.Column(name="FLAGS", format="2L", array=np.array([[True, False]] * n)),
        fits.Column(name="CPLX", format="C", array=np.full(n, 1 + 2j, dtype="c8")),
        fits.Column(name="WORDS", format="6A", dim="(3,2)", array=np.array([["ab", "cd"]] * n)),
        fits.Column(name="cube", format="6D", dim="(3,2)", array=np.arange(18.0).reshape(n, 2, 3)),
        fits.Column(name="BIG", format="K", array=np.array([1, -2, 2**40])),
    ]  # fmt: skip
    primary = fits.PrimaryHDU()
    primary.header["LONGSTR"] = "x" * 100  # CONTINUE cards
    primary.header["HIERARCH ESO DET"] = 3
    primary.header["QUOTED"] = "it's  "
    primary.header["SMALL"] = 1.5e-30
    primary.header["FLAG"] = False
    path = tmp_path / "odd.fits"
    fits.HDUList([primary, fits.BinTableHDU.from_columns(columns, name="odd")]).writeto(path)
    assert _assert_reads_like_astropy(path) == len(columns)
    assert raw.open_fits(path).find("ODD") is not None  # names match case-insensitively, as in astropy


def test_truncated_or_padded_device_file_is_input_error(project_17a: Path, tmp_path: Path) -> None:
    payload = (project_17a / "Antenna" / "2017_03_08_21:41:02.fits").read_bytes()
    path = tmp_path / "Antenna.fits"
    path.write_bytes(payload[:-2880])  # a whole number of blocks, but the table runs past the end
    with pytest.raises(InputError, match="truncated FITS file") as err:
        raw.read_antenna(path)
    assert "Antenna.fits" in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(payload + bytes(2880))
    with pytest.raises(InputError, match="extra padding"):
        raw.read_antenna(path)
    path.write_bytes(payload + b" " * 2880)
    with pytest.raises(InputError, match="malformed FITS file"):
        raw.read_antenna(path)


def test_receiver_cache_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Rcvr1_2" / "2020_01_01_00:00:00.fits"
    freq_hz = np.linspace(1.0e9, 2.0e9, 9)
    write_receiver(path, "Rcvr1_2", [("R1", 1, "X")], freq_hz, tcal_k=1.5)
    first = raw.read_receiver(path)
    assert raw.read_receiver(path) is first  # unchanged: not read again
    assert first.tcal("R1", "X", 1.5e9) == pytest.approx(1.5)
    assert not first.tables[0].low_cal_k.flags.writeable  # shared values cannot be changed by a caller

    write_receiver(path, "Rcvr1_2", [("R1", 1, "X")], np.linspace(1.0e9, 2.0e9, 50), tcal_k=2.0)  # a new size
    assert raw.read_receiver(path).tcal("R1", "X", 1.5e9) == pytest.approx(2.0)

    # the same size rewritten in place (same inode), a later modification time
    scratch = tmp_path / "scratch.fits"
    write_receiver(scratch, "Rcvr1_2", [("R1", 1, "X")], np.linspace(1.0e9, 2.0e9, 50), tcal_k=3.0)
    before = path.stat()
    path.write_bytes(scratch.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == before.st_size and path.stat().st_ino == before.st_ino
    assert raw.read_receiver(path).tcal("R1", "X", 1.5e9) == pytest.approx(3.0)

    path.unlink()
    with pytest.raises(InputError, match="missing"):
        raw.read_receiver(path)
