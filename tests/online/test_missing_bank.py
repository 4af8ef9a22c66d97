"""A VEGAS bank file that never came: the banks that did are filled, the missing one can follow late.

The raw data come from the simulator with one bank file moved aside (``bank_file_never_came``);
what was written is read back with astropy and checked against the indexes.  The daemon fills a
late file by itself.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from astropy.io import fits

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.errors import InputError
from obsflow.online import raw as rawmod
from obsflow.online.daemon import PROJECTS_KEPT_S, fill_lag_s, read_status
from obsflow.online.fill import fill_scan
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import index, index_fits
from obsflow.web.status import filler_status
from tests.fixtures.raw_projects import bank_file_never_came

PROJECT = "AGBT26A_502_01"


def _scans_per_bank(layout: OutputLayout) -> dict[str, list[int]]:
    """Bank letter -> SCAN of each row of its SDFITS file, read with astropy."""
    out = {}
    for path in layout.bank_files(PROJECT):
        with fits.open(path) as hdul:
            out[path.name.split(".")[-2]] = [int(s) for s in hdul[1].data["SCAN"]]
    return out


def _raw_rows(bank_path: Path) -> int:
    """Rows a raw VEGAS bank file makes: integrations x samplers x switching states."""
    with fits.open(bank_path) as hdul:
        nint, nsamp, nstate = len(hdul["DATA"].data), len(hdul["SAMPLER"].data), len(hdul["STATE"].data)
    return nint * nsamp * nstate


def _assert_indexes_agree(layout: OutputLayout) -> None:
    banks = layout.bank_files(PROJECT)
    for path in banks:
        with fits.open(path) as hdul:
            assert len(index.read_index(index_fits.index_path_for(path)).rows) == hdul[1].header["NAXIS2"]
        assert index_fits.index_mismatch(index_fits.index_path_for(path), path) is None
    combined = layout.combined_index(PROJECT)
    assert len(index.read_index(combined).rows) == sum(fits.getheader(p, 1)["NAXIS2"] for p in banks)
    assert index_fits.index_mismatch(combined, *banks) is None


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}


def test_a_missing_bank_file_fails_the_scan_unless_the_fill_may_leave_it_out(tmp_path):
    project, aside = bank_file_never_came(tmp_path / "raw")
    scan = rawmod.read_project(project)[0]
    layout = OutputLayout(tmp_path / "out")
    with pytest.raises(InputError, match="missing") as caught:
        fill_scan(scan, layout, project=PROJECT)  # the daemon's tries before it gives up: nothing written
    assert caught.value.where == str(project / "VEGAS" / aside.name)
    assert not layout.product_dir(PROJECT).exists()

    result = fill_scan(scan, layout, project=PROJECT, missing_banks_ok=True)

    assert [b.bank for b in result.banks] == ["A", "C"]
    assert [(m.bank, m.raw_path) for m in result.missing_banks] == [("B", project / "VEGAS" / aside.name)]
    rows_a = _raw_rows(rawmod.bank_file(scan, "A"))
    assert _scans_per_bank(layout) == {"A": [1] * rows_a, "C": [1] * _raw_rows(rawmod.bank_file(scan, "C"))}
    assert result.rows == 2 * rows_a
    _assert_indexes_agree(layout)


def test_a_bank_file_that_comes_late_is_filled_later_once(tmp_path):
    project, aside = bank_file_never_came(tmp_path / "raw")
    scan1, scan2 = rawmod.read_project(project)
    layout = OutputLayout(tmp_path / "out")
    fill_scan(scan1, layout, project=PROJECT, missing_banks_ok=True)
    fill_scan(scan2, layout, project=PROJECT)  # bank B's file starts with scan 2
    before = {name: scans for name, scans in _scans_per_bank(layout).items()}
    a_and_c = {p: p.read_bytes() for p in layout.bank_files(PROJECT) if not p.name.endswith(".B.fits")}
    aside.rename(project / "VEGAS" / aside.name)  # the late file arrives

    late = fill_scan(rawmod.read_project(project)[0], layout, project=PROJECT)

    assert [(b.bank, b.skipped) for b in late.banks] == [("A", True), ("B", False), ("C", True)]
    assert late.missing_banks == ()
    scans = _scans_per_bank(layout)
    assert scans["B"] == before["B"] + [1] * late.rows  # appended after scan 2's rows
    assert {p: p.read_bytes() for p in a_and_c} == a_and_c  # the banks already holding scan 1 are untouched
    _assert_indexes_agree(layout)

    everything = _snapshot(layout.root)
    again = fill_scan(rawmod.read_project(project)[0], layout, project=PROJECT)
    assert again.skipped and _snapshot(layout.root) == everything  # never twice, in any bank or index


def test_a_truncated_bank_file_is_still_an_error_when_another_is_missing(tmp_path):
    project, _ = bank_file_never_came(tmp_path / "raw")
    scan = rawmod.read_project(project)[0]
    bank_c = rawmod.bank_file(scan, "C")
    bank_c.write_bytes(bank_c.read_bytes()[:5000])
    layout = OutputLayout(tmp_path / "out")
    with pytest.raises(InputError) as caught:
        fill_scan(scan, layout, project=PROJECT, missing_banks_ok=True)
    assert caught.value.where == str(bank_c)
    assert not layout.product_dir(PROJECT).exists()  # bank A, which is whole, was not filled either


def test_a_scan_without_any_bank_file_is_still_an_error(tmp_path):
    project, aside = bank_file_never_came(tmp_path / "raw", banks=1, bank="A")
    scan = rawmod.read_project(project)[0]
    layout = OutputLayout(tmp_path / "out")
    with pytest.raises(InputError, match="file named in the scan log is missing") as caught:
        fill_scan(scan, layout, project=PROJECT, missing_banks_ok=True)
    assert caught.value.where == str(project / "VEGAS" / aside.name)
    assert not layout.product_dir(PROJECT).exists()


def test_another_missing_device_file_is_still_an_error(tmp_path):
    project, _ = bank_file_never_came(tmp_path / "raw")
    scan = rawmod.read_project(project)[0]
    scan.device_file("Antenna").unlink()
    layout = OutputLayout(tmp_path / "out")
    with pytest.raises(InputError, match="missing") as caught:
        fill_scan(scan, layout, project=PROJECT, missing_banks_ok=True)
    assert "Antenna" in str(caught.value.where)
    assert not layout.product_dir(PROJECT).exists()


def _daemon_filled_without_bank_b(raw: Path, out: Path, scan: int = 1):
    """A running daemon (one try per scan) that filled ``scan`` without bank B, whose raw file is kept aside."""
    project, aside = bank_file_never_came(raw, scan=scan)
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False)
    daemon.start()
    while daemon.step():
        pass
    daemon.step()
    assert [(e["scan"], e["banks"]) for e in read_status(OutputLayout(out))["missing_banks"]] == [(scan, ["B"])]
    return daemon, project, aside


def test_the_daemon_fills_a_bank_file_that_comes_late_by_itself(tmp_path, caplog):
    daemon, project, aside = _daemon_filled_without_bank_b(tmp_path / "raw", tmp_path / "out")
    layout = OutputLayout(tmp_path / "out")
    before = _scans_per_bank(layout)
    a_and_c = {p: p.read_bytes() for p in layout.bank_files(PROJECT) if not p.name.endswith(".B.fits")}
    arrived = project / "VEGAS" / aside.name
    whole = aside.read_bytes()

    arrived.write_bytes(whole[:5000])  # a slow copy from the backend, under way
    for _ in range(3):
        daemon.step()
    arrived.write_bytes(whole[:5760])  # ... a whole number of FITS blocks, but cut: the fill refuses it
    for _ in range(3):
        daemon.step()
    assert _scans_per_bank(layout)["B"] == before["B"]  # not filled from part of a file
    assert [e["scan"] for e in read_status(layout)["missing_banks"]] == [1]
    arrived.write_bytes(whole)
    for _ in range(3):
        daemon.step()

    rows_b = _raw_rows(arrived)
    assert _scans_per_bank(layout)["B"] == before["B"] + [1] * rows_b  # after scan 2's rows, once
    assert {p: p.read_bytes() for p in a_and_c} == a_and_c  # the banks already holding scan 1 are untouched
    _assert_indexes_agree(layout)
    assert read_status(layout)["missing_banks"] == []
    refused = [r for r in caplog.records if "cannot fill VEGAS bank B, whose raw file came late" in r.getMessage()]
    assert len(refused) == 1  # said once, not at every poll
    late = [line for line in layout.fill_log(PROJECT).read_text().splitlines() if "late" in line]
    assert len(late) == 1 and " scan=1 " in late[0] and f"rows={rows_b}" in late[0]
    daemon.close()


def test_a_late_bank_fill_is_among_the_recent_fills(tmp_path, capsys):
    """Found by review: the daemon's fill of a late bank went to the fill log only, not to the status's recent
    fills (``online status --json``, the status page).  The last scan's: its project's line keeps its own lag."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    daemon, project, aside = _daemon_filled_without_bank_b(raw, out, scan=2)
    arrived = project / "VEGAS" / aside.name
    arrived.write_bytes(aside.read_bytes())
    for _ in range(3):
        daemon.step()
    daemon.close()

    late, own = read_status(OutputLayout(out))["recent"][:2]
    assert (late["scan"], late["banks"], late["rows"], late["skipped"]) == (2, ["B"], _raw_rows(arrived), False)
    assert (late["note"], late["missing_banks"]) == ("VEGAS bank B came late", [])
    assert fill_lag_s(late) is None  # the backend's copy came late, not the daemon: no lag of the daemon's
    assert (own["scan"], own["banks"], own["missing_banks"]) == (2, ["A", "C"], ["B"])
    (logged,) = [line for line in OutputLayout(out).fill_log(PROJECT).read_text().splitlines() if "came late" in line]
    assert " banks=B " in logged  # the bank this fill wrote, not those that held the scan already

    assert main(["online", "status", "--out-root", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recent"][0] == late
    assert main(["online", "status", "--out-root", str(out)]) == 0
    assert f"lag after scan end: last {fill_lag_s(own):.2f} s" in capsys.readouterr().out
    config = tmp_path / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    page = filler_status(load_config(config))
    assert [(r["scan"], r["banks"], r["latency_s"]) for r in page["recent"][:2]] == [
        (2, ["B"], None),
        (2, ["A", "C"], round(fill_lag_s(own), 3)),
    ]
    assert [(p["last_scan"], p["latency_s"]) for p in page["projects"]] == [(2, round(fill_lag_s(own), 3))]


# -- a damaged status: the missing banks are rebuilt from the fill logs ------------------------------------------------

CUT_STATUS = b'{"pid": 4242, "missing_banks": [{"proj'
NONE_RECOVERED = "recovered 0 scans filled without some banks from the fill logs (the status was damaged)"


def _service_events(out: Path, event: str) -> list[dict]:
    lines = (OutputLayout(out).logs_dir / "online.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


def _start_again(raw: Path, out: Path, caplog):
    """A daemon started on ``out`` (its previous status as the test left it) that polled once; its INFO lines in caplog."""
    caplog.clear()
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False)
    with caplog.at_level("INFO", logger="obsflow.online.daemon"):
        daemon.start()
        daemon.step()
    return daemon


def _recovered_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "from the fill logs" in r.getMessage()]


def _fill_late(daemon, project: Path, aside: Path) -> Path:
    """The raw file kept aside arrives; the daemon fills it within a few polls."""
    arrived = project / "VEGAS" / aside.name
    aside.rename(arrived)
    for _ in range(3):
        daemon.step()
    return arrived


def test_a_daemon_finding_its_status_damaged_rebuilds_the_missing_banks_and_fills_the_late_file(tmp_path, caplog,
                                                                                                 capsys):
    """Found by review: the list of scans filled without a bank lived only in the status; a damaged status was set
    aside with it, and a bank file that came later was never filled, nor said missing any more."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    daemon, project, aside = _daemon_filled_without_bank_b(raw, out)
    daemon.close()
    layout = OutputLayout(out)
    lost = read_status(layout)["missing_banks"]
    layout.status_path.write_bytes(CUT_STATUS)
    before = _scans_per_bank(layout)

    daemon = _start_again(raw, out, caplog)

    status = read_status(layout)
    assert status["missing_banks"] == lost  # files, note and all: as the lost status had it
    assert status["projects"][PROJECT]["last_scan"] == 2  # its line: an entry is kept while its project has one
    assert _recovered_lines(caplog) == [NONE_RECOVERED.replace("0 scans", "1 scan")]
    assert [e["count"] for e in _service_events(out, "missing_banks_recovered")] == [1]
    assert main(["online", "status", "--out-root", str(out)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "BANK MISSING" in line]
    assert f"{PROJECT} scan 1" in line and aside.name in line

    arrived = _fill_late(daemon, project, aside)

    assert _scans_per_bank(layout)["B"] == before["B"] + [1] * _raw_rows(arrived)
    _assert_indexes_agree(layout)
    assert read_status(layout)["missing_banks"] == []
    daemon.close()


def test_a_raw_path_with_commas_and_spaces_is_rebuilt_from_the_fill_log_whole(tmp_path, caplog):
    """Found by review: the rebuild took the missing raw file's path from the note's text, split at ", ": a
    raw root such as "night 2, copy" lost the file to watch.  The fill log names the files in a field of their own."""
    raw, out = tmp_path / "raw, night 2 (copy)", tmp_path / "out"
    daemon, project, aside = _daemon_filled_without_bank_b(raw, out)
    daemon.close()
    layout = OutputLayout(out)
    (lost,) = read_status(layout)["missing_banks"]
    assert lost["files"] == [str(project / "VEGAS" / aside.name)]
    (logged,) = [r for r in layout.read_fill_logs() if r.get("missing_banks")]
    assert (logged["missing_banks"], logged["missing_files"]) == ("B", lost["files"])
    layout.status_path.write_bytes(CUT_STATUS)

    daemon = _start_again(raw, out, caplog)

    assert read_status(layout)["missing_banks"] == [lost]
    _fill_late(daemon, project, aside)
    assert read_status(layout)["missing_banks"] == []
    daemon.close()


def test_a_scan_still_missing_a_bank_after_another_came_late_is_rebuilt_as_it_was(tmp_path, caplog):
    """Banks B and C of scan 1 never came; B came late and the daemon filled it: C is missing, as the lost
    status said (its note names C alone, and A and B as filled)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    project, aside_b = bank_file_never_came(raw)
    first_c = min((project / "VEGAS").glob("*C.fits"))  # scan 1's: timestamps sort as the scans ran
    aside_c = first_c.rename(aside_b.parent / first_c.name)
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False)
    daemon.start()
    while daemon.step():
        pass
    _fill_late(daemon, project, aside_b)
    daemon.close()
    layout = OutputLayout(out)
    (lost,) = read_status(layout)["missing_banks"]
    assert (lost["banks"], lost["note"].split(":")[0]) == (["C"], "VEGAS bank C not filled (A,B were)")
    layout.status_path.write_bytes(CUT_STATUS)

    daemon = _start_again(raw, out, caplog)

    assert read_status(layout)["missing_banks"] == [lost]
    arrived = _fill_late(daemon, project, aside_c)
    assert _scans_per_bank(layout)["C"].count(1) == _raw_rows(arrived)
    _assert_indexes_agree(layout)
    assert read_status(layout)["missing_banks"] == []
    daemon.close()


@pytest.mark.parametrize("filled_by", ["the daemon", "hand"])
def test_a_bank_filled_before_the_status_was_damaged_is_not_rebuilt(tmp_path, caplog, filled_by):
    """The daemon's late fill is in the fill log; one by hand (obsflow fill) only in the bank files."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    daemon, project, aside = _daemon_filled_without_bank_b(raw, out)
    if filled_by == "the daemon":
        _fill_late(daemon, project, aside)
    daemon.close()
    if filled_by == "hand":
        aside.rename(project / "VEGAS" / aside.name)
        assert main(["fill", str(project), str(out), "--scans", "1"]) == 0
    layout = OutputLayout(out)
    layout.status_path.write_bytes(CUT_STATUS)
    log_before = layout.fill_log(PROJECT).read_text()

    daemon = _start_again(raw, out, caplog)
    daemon.close()

    assert read_status(layout)["missing_banks"] == []
    assert _recovered_lines(caplog) == [NONE_RECOVERED]
    assert not [r for r in caplog.records if "filled since" in r.getMessage()]  # not news: filled before the damage
    assert layout.fill_log(PROJECT).read_text() == log_before  # nothing filled again


def test_a_project_not_filled_for_as_long_as_the_status_keeps_one_is_not_rebuilt(tmp_path, caplog):
    """The status keeps a project's missing banks while it keeps the project (PROJECTS_KEPT_S since its last fill)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    daemon, _, _ = _daemon_filled_without_bank_b(raw, out)
    daemon.close()
    layout = OutputLayout(out)
    layout.status_path.write_bytes(CUT_STATUS)
    long_ago = time.time() - PROJECTS_KEPT_S - 86400
    fill_log = layout.fill_log(PROJECT)
    fill_log.write_text(re.sub(r"filled_at=\S+", f"filled_at={long_ago}", fill_log.read_text()))

    _start_again(raw, out, caplog).close()

    assert read_status(layout)["missing_banks"] == []
    assert _recovered_lines(caplog) == [NONE_RECOVERED]


def test_a_first_start_without_a_status_rebuilds_nothing_from_the_fill_logs(tmp_path, caplog):
    """No status is no damage: a new daemon (or a status removed on purpose) does not read the fill logs."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    daemon, _, _ = _daemon_filled_without_bank_b(raw, out)
    daemon.close()
    layout = OutputLayout(out)
    layout.status_path.unlink()

    _start_again(raw, out, caplog).close()

    assert read_status(layout)["missing_banks"] == []
    assert _recovered_lines(caplog) == []
    assert _service_events(out, "missing_banks_recovered") == []
