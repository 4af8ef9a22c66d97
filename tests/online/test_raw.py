"""The raw GBT reader against the real gbtcal samples, old-style logs, and bad input."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from obsflow.errors import InputError
from obsflow.online import raw

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
