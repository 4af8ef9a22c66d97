"""The simulated telescope: layout, timing steps, determinism, and the physics measured from the raw files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dysh.spectra.core import mean_tsys

from obsflow.errors import InputError, UsageError
from obsflow.online import raw
from obsflow.online.rows import scan_rows
from obsflow.simulate.telescope import SimEvent, TelescopeSimulator, TelescopeSpec, plan_scans, simulate_project

SPEC = TelescopeSpec(project="TSIM_01", scans=2, procedure="OnOff", banks=1, pols=2, channels=2048,
                     integrations=12, tsys_k=25.0, tcal_k=1.7, line_peak_k=3.0, line_fwhm_kms=25.0,
                     line_freq_hz=1420.405752e6 + 1.5e6, centre_freq_hz=1420.405752e6, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate_project(SPEC, out)
    return out / SPEC.project


def test_layout_reads_back_through_the_raw_reader(project: Path) -> None:
    scans = raw.read_project(project)
    assert [(s.number, s.state, s.go["PROCSEQN"], s.go["PROCSCAN"]) for s in scans] == [
        (1, "finished", 1, "ON"), (2, "finished", 2, "OFF")]
    first = scans[0]
    assert first.timestamp == "2026_01_15_03:00:00" and scans[1].timestamp == "2026_01_15_03:00:17"
    assert list(first.devices) == ["Antenna", "LO1A", "Rcvr1_2", "VEGAS", "IF", "GO"]
    assert first.banks == ("A",) and first.backends == ("VEGAS",)
    assert (first.go["PROCNAME"], first.go["SWSTATE"], first.go["SWTCHSIG"], first.go["PROCSIZE"]) == (
        "OnOff", "PSWITCHON", "TPWCAL", 2)
    assert scans[1].go["SWSTATE"] == "PSWITCHOFF" and scans[1].go["LASTON"] == 1 and scans[1].go["LASTOFF"] == 2
    assert first.started_at is not None and first.finished_at is not None
    assert (first.finished_at - first.started_at).total_seconds() == 13  # 12 s of data, logged 1 s before
    raw.require_files(first)
    assert not [p for p in project.rglob("*.tmp")]


def test_measured_tsys_tcal_and_line_from_raw_files(project: Path) -> None:
    on_scan, off_scan = raw.read_project(project)
    on = raw.read_vegas_bank(raw.bank_file(on_scan, "A"))
    off = raw.read_vegas_bank(raw.bank_file(off_scan, "A"))
    assert on.data.shape == (12, 2, 2, 2048) and on.cal == (0, 1) and on.sigref == (0, 0)
    receiver = raw.read_receiver(on_scan.device_file("Rcvr1_2"))
    tcal = receiver.tcal("XL", "X", SPEC.line_freq_hz)
    assert tcal == pytest.approx(SPEC.tcal_k)
    for sampler in range(2):
        tsys = [mean_tsys(off.data[i, sampler, 1], off.data[i, sampler, 0], tcal) for i in range(12)]
        assert np.mean(tsys) == pytest.approx(SPEC.tsys_k, rel=0.01)
    sig = on.data[:, :, :, :].mean(axis=(0, 2))
    ref = off.data[:, :, :, :].mean(axis=(0, 2))
    ta = (SPEC.tsys_k * (sig - ref) / ref).mean(axis=0)
    if_path = raw.read_if(on_scan.device_file("IF"))[0]
    lo1 = raw.read_lo1(on_scan.device_file("LO1A")).lo1freq_hz[0]
    sampler = on.samplers[0]
    freq = if_path.sky_hz(sampler.crval1_hz + (np.arange(2048) + 1 - on.crpix1) * sampler.cdelt1_hz, lo1)
    peak = int(np.argmax(ta))
    assert abs(freq[peak] - SPEC.line_freq_hz) <= 2 * sampler.cdelt1_hz
    window = np.abs(freq - SPEC.line_freq_hz) < SPEC.line.fwhm_hz / 4
    assert ta[window].mean() == pytest.approx(SPEC.line_peak_k * 0.96, rel=0.05)  # mean of a Gaussian's top
    assert abs(ta[np.abs(freq - SPEC.line_freq_hz) > 3 * SPEC.line.fwhm_hz].mean()) < 0.02
    no_line = (off.data.mean(axis=(0, 2)) / off.data.mean(axis=(0, 2, 3))[:, None]).mean(axis=0)
    assert no_line[peak] == pytest.approx(no_line[peak - 40], rel=0.01)  # the OFF position has no line


def test_scan_by_scan_control_and_events(tmp_path: Path) -> None:
    spec = TelescopeSpec(project="TSTEP_01", scans=1, procedure="Track", channels=1024, integrations=2, pols=1)
    simulator = TelescopeSimulator(spec, tmp_path)
    plan = simulator.plans[0]
    started = simulator.start_scan(plan)
    assert started == SimEvent("started", "TSTEP_01", 1, plan.timestamp, started.files)
    (scan,) = raw.read_project(tmp_path / "TSTEP_01")
    assert scan.state == "started" and scan.finished_at is None
    with pytest.raises(InputError):
        scan_rows(scan, "A")
    with pytest.raises(InputError, match="missing"):
        raw.require_files(scan)  # the VEGAS and Antenna files come at the end of the scan
    simulator.finish_scan(plan)
    (scan,) = raw.read_project(tmp_path / "TSTEP_01")
    assert scan.state == "finished" and scan.go["SWSTATE"] == "NONE" and scan.go["PROCSIZE"] == 1
    assert scan_rows(scan, "A")["DATA"].shape == (4, 1024)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    spec = TelescopeSpec(project="TSEED_01", scans=1, procedure="Track", channels=1024, integrations=2, pols=1)
    events: list[SimEvent] = []
    simulate_project(spec, tmp_path / "a", on_event=events.append)
    simulate_project(spec, tmp_path / "b")
    simulate_project(TelescopeSpec(**{**spec.__dict__, "seed": 99}), tmp_path / "c")
    assert [e.kind for e in events] == ["started", "finished"]
    name = Path("TSEED_01/VEGAS/2026_01_15_03:00:00A.fits")
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_plans_and_bad_specs() -> None:
    plans = plan_scans(TelescopeSpec(scans=4, procedure="OffOn"))
    assert [(p.procseqn, p.is_on_source, p.swstate) for p in plans] == [
        (1, False, "PSWITCHOFF"), (2, True, "PSWITCHON"), (1, False, "PSWITCHOFF"), (2, True, "PSWITCHON")]
    for bad in ({"scans": 3}, {"banks": 9}, {"channels": 512}, {"pols": 3}, {"tcal_k": 0.0}):
        with pytest.raises(UsageError):
            plan_scans(TelescopeSpec(**bad))  # type: ignore[arg-type]
