"""The online daemon against a simulated telescope writing scans in real time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.errors import IntegrityError
from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import index
from obsflow.sdfits import index_fits
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec

OBSFLOW = [sys.executable, "-m", "obsflow"]
PROJECT = "AGBT26A_300_01"


def _spec(scans: int, **kw) -> TelescopeSpec:
    base = dict(project=PROJECT, scans=scans, procedure="Track", banks=2, pols=2, channels=2048,
                integrations=8, seed=7, start=datetime(2026, 11, 21, 4, 0, 0, tzinfo=UTC))  # fmt: skip
    base.update(kw)
    return TelescopeSpec(**base)


def _index_rows(out: Path) -> int:
    """Rows in the combined index; -1 while the daemon is in the middle of appending them."""
    combined = OutputLayout(out).combined_index(PROJECT)
    try:
        return index.next_index(combined) if combined.exists() else 0
    except IntegrityError:  # a poll that lands inside the append's write: look again
        return -1


def _wait_for(predicate, timeout: float = 30.0, step: float = 0.005) -> float:
    """Seconds until predicate() is true (fails the test after ``timeout``)."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            pytest.fail("timed out waiting for the daemon")
        time.sleep(step)
    return time.perf_counter() - start


def _start_daemon(raw: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*OBSFLOW, "online", "--raw-root", str(raw), "--out-root", str(out), "--poll", "0.05", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_daemon_fills_each_scan_seconds_after_it_ends(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    sim = TelescopeSimulator(_spec(4), raw)
    daemon = _start_daemon(raw, out)
    try:
        rows_per_scan = None
        delays = []
        for plan in sim.plans:
            sim.start_scan(plan)
            time.sleep(0.2)
            before = _index_rows(out)
            sim.finish_scan(plan)  # writes VEGAS files, then SCAN FINISHED
            delays.append(_wait_for(lambda b=before: _index_rows(out) > b))
            rows_per_scan = rows_per_scan or _index_rows(out)
            _wait_for(lambda n=plan: _index_rows(out) >= rows_per_scan * (sim.plans.index(n) + 1))
        assert _index_rows(out) == 4 * rows_per_scan
        # Every delay from SCAN FINISHED to the index row on disk is seconds at most.
        assert max(delays) < 10.0, delays
        _wait_for(lambda: read_status(OutputLayout(out))["projects"].get(PROJECT, {}).get("last_scan") == 4)
        result = subprocess.run([*OBSFLOW, "online", "status", "--out-root", str(out)], capture_output=True, text=True)
        assert "running" in result.stdout and f"{PROJECT}: last scan 4" in result.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0, daemon.stderr.read()
    for fits_path in OutputLayout(out).bank_files(PROJECT):
        assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None
    log = OutputLayout(out).fill_log(PROJECT).read_text().splitlines()
    assert len(log) == 4 and all("rows=" in line for line in log)
    # A quick-look plot per filled scan, for the status page.
    plots = sorted((out / ".obsflow" / "quicklook" / PROJECT).glob("scan_*.png"))
    assert [p.name for p in plots] == [f"scan_{n}.png" for n in (1, 2, 3, 4)]
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 10_000 for p in plots)


def test_second_daemon_on_same_root_refuses(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    first = _start_daemon(raw, out)
    try:
        _wait_for(lambda: (OutputLayout(out).locks_dir / "obsflow-online.lock").exists())
        second = subprocess.run([*OBSFLOW, "online", "--raw-root", str(raw), "--out-root", str(out)],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another obsflow online daemon" in lines[0] and f"pid {first.pid}" in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_catches_up_after_restart_in_order_never_twice(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    sim = TelescopeSimulator(_spec(5), raw)
    for plan in sim.plans[:2]:
        sim.start_scan(plan)
        sim.finish_scan(plan)
    daemon = build_daemon(raw, out, poll_s=0.01)
    daemon.run(until_idle=True)
    assert daemon.engine.project(PROJECT).last_filled.scan == 2
    # The daemon is down while three more scans are taken; a new one catches up alone.
    for plan in sim.plans[2:]:
        sim.start_scan(plan)
        sim.finish_scan(plan)
    daemon = build_daemon(raw, out, poll_s=0.01)
    daemon.run(until_idle=True)
    filled = [r["scan"] for r in reversed(daemon.status.recent)]
    assert filled == [1, 2, 3, 4, 5]
    layout = OutputLayout(out)
    for fits_path in layout.bank_files(PROJECT):
        table = index_fits.read_sdfits_tables(fits_path)[0]
        scans = list(dict.fromkeys(int(s) for s in table.columns["SCAN"]))
        assert scans == [1, 2, 3, 4, 5]


def test_after_a_project_change_each_projects_scans_go_into_its_own_files(tmp_path):
    """The telescope went on with another project while the daemon was down: the catch-up fills
    the first project's scans into its files and the new project's into new files of its own
    (not into the files of the project that is active now)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    other = "AGBT26A_301_01"
    first = TelescopeSimulator(_spec(2), raw)
    second = TelescopeSimulator(_spec(2, project=other, seed=8, start=datetime(2026, 11, 21, 6, tzinfo=UTC)), raw)
    for sim in (first, second):
        for plan in sim.plans:
            sim.start_scan(plan)
            sim.finish_scan(plan)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(max_seconds=30, until_idle=True)  # bounded: a daemon filling into the wrong project never idles
    assert daemon.engine.active_project == other
    layout = OutputLayout(out)
    for project in (PROJECT, other):
        banks = layout.bank_files(project)
        assert [p.name for p in banks] == [f"{project}.raw.vegas.{bank}.fits" for bank in "AB"]
        for fits_path in banks:
            table = index_fits.read_sdfits_tables(fits_path)[0]
            assert table.projid == project
            assert list(dict.fromkeys(int(s) for s in table.columns["SCAN"])) == [1, 2]
            assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None


def test_incomplete_scan_is_retried_then_skipped_not_fatal(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    sim = TelescopeSimulator(_spec(3), raw)
    for plan in sim.plans:
        sim.start_scan(plan)
        sim.finish_scan(plan)
    bank_b = next((raw / PROJECT / "VEGAS").glob(f"{sim.plans[1].timestamp}B.fits"))
    good = bank_b.read_bytes()
    bank_b.write_bytes(good[: len(good) // 2])  # the backend file of scan 2 is cut short
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=3, backoff_s=0.05)
    daemon.run(until_idle=True)
    state = daemon.engine.project(PROJECT)
    assert {k.scan for k in state.filled} == {1, 3}
    failure = state.failures[next(k for k in state.failures if k.scan == 2)]
    assert failure.given_up and failure.attempts == 3 and "truncated" in failure.last_error.lower()
    # Fixed later (the file arrives whole): a fresh daemon run fills it.
    bank_b.write_bytes(good)
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=3)
    daemon.engine  # failures are remembered across restarts ...
    daemon.run(until_idle=True)
    status = read_status(OutputLayout(out))
    assert any(f["scan"] == 2 and f["given_up"] for f in status["failures"])
    # ... so it stays skipped until an operator fills it by hand:
    assert main(["fill", str(raw / PROJECT), str(out), "--scans", "2"]) == 0
    for fits_path in OutputLayout(out).bank_files(PROJECT):
        assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None


def test_the_daemon_takes_its_settings_from_the_configs_filler_table(tmp_path, monkeypatch, capsys):
    # Relative folders start at the config's folder; options on the command line win.
    sim = TelescopeSimulator(_spec(2, project="AGBT26A_301_01"), tmp_path / "raw")
    other = TelescopeSimulator(_spec(1), tmp_path / "raw")
    for simulator in (sim, other):
        for plan in simulator.plans:
            simulator.start_scan(plan)
            simulator.finish_scan(plan)
    config = tmp_path / "obsflow.toml"
    config.write_text('[filler]\nraw_root = "raw"\nout_root = "sdfits"\nprojects = ["AGBT26A_301_01"]\n'
                      'poll_seconds = 0.01\n')  # fmt: skip
    monkeypatch.chdir("/")
    assert main(["online", "--config", str(config), "--until-idle"]) == 0
    layout = OutputLayout(tmp_path / "sdfits")
    assert index.next_index(layout.combined_index("AGBT26A_301_01")) > 0
    assert not layout.combined_index(PROJECT).exists()  # not in [filler] projects
    assert main(["online", "--config", str(config), "--projects", PROJECT, "--until-idle"]) == 0
    assert index.next_index(layout.combined_index(PROJECT)) > 0
    assert main(["online", "status", "--config", str(config)]) == 2  # status takes the group's options
    capsys.readouterr()
    assert main(["online", "--config", str(config), "status", "--json"]) == 0
    assert '"out_root": "' + str(tmp_path / "sdfits") in capsys.readouterr().out

    config.write_text("[filler]\nretry_limit = 0\n")
    assert main(["online", "--config", str(config), "--until-idle"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"obsflow: error: config: filler.retry_limit: must be at least 1 (line 2) ({config})")
