"""A second review of the daemon: stalls that were silent or endless (found by review)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.errors import LockError
from obsflow.lock import release_lock, take_lock
from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import writer
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec

PROJECT = "AGBT26A_300_01"


def _observe(raw: Path, scans: int = 3, plans=slice(None), project: str = PROJECT) -> TelescopeSimulator:
    spec = TelescopeSpec(project=project, scans=scans, procedure="Track", banks=2, channels=1024, integrations=2,
                         start=datetime(2026, 11, 21, 4, tzinfo=UTC))  # fmt: skip
    sim = TelescopeSimulator(spec, raw)
    for plan in sim.plans[plans]:
        sim.start_scan(plan)
        sim.finish_scan(plan)
    return sim


def _damaged_output(out: Path) -> Path:
    folder = out / PROJECT / f"{PROJECT}.raw.vegas"
    folder.mkdir(parents=True)
    bad = folder / f"{PROJECT}.raw.vegas.B.fits"
    bad.write_bytes(os.urandom(5760))
    return bad


def test_a_damaged_output_file_is_said_once_backed_off_and_shown(tmp_path, caplog):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw)
    _damaged_output(out)
    daemon = build_daemon(raw, out, poll_s=0.01, backoff_s=0.05, quicklook=False)
    tries = []
    learn = daemon.filled_scans
    daemon.filled_scans = lambda project: (tries.append(1), learn(project))[1]
    daemon.start()
    with caplog.at_level(logging.ERROR):
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            daemon.step()
            time.sleep(0.01)
    lines = [r for r in caplog.records if "are filled" in r.getMessage()]
    assert len(lines) == 1 and "not a FITS file" in lines[0].getMessage()
    assert 1 < len(tries) <= 6  # backed off (0.05, 0.1, 0.2, 0.4, 0.8 s), not once a poll
    status = read_status(OutputLayout(out))
    (problem,) = status["project_failures"]
    assert problem["project"] == PROJECT and problem["pending"] == 3 and "not a FITS file" in problem["last_error"]
    assert "cannot read which scans" in status["activity"] and "3 scans pending" in status["activity"]
    shown = subprocess.run([sys.executable, "-m", "obsflow", "online", "status", "--out-root", str(out)],
                           check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert f"  STALLED: {PROJECT}, 3 scan(s) waiting: cannot read which scans" in shown
    daemon.close()


def test_a_catch_up_run_fills_the_other_projects_then_stops_on_a_damaged_output_file(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw)
    _observe(raw, 4, project="AGBT26A_400_01")  # healthy: filled whole before the run gives up on the other
    _damaged_output(out)
    result = subprocess.run([sys.executable, "-m", "obsflow", "online", "--raw-root", str(raw), "--out-root",
                             str(out), "--until-idle", "--poll", "0.05", "--retries", "2"],
                            check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    healthy = OutputLayout(out).bank_fits("AGBT26A_400_01", "A")
    assert {int(scan) for scan, _ in writer.scans_in_file(healthy)} == {1, 2, 3, 4}
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("obsflow: error: cannot read which scans of AGBT26A_300_01 are filled")
    assert "not a FITS file" in last


def test_a_catch_up_run_stops_when_only_retried_failures_remain(tmp_path):
    # The project's output folder cannot be written (as another account's): never given up, retried for ever.
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw, 2)
    (out / PROJECT).mkdir(parents=True)
    (out / PROJECT).chmod(0o555)
    dropped = "-dac_override,-dac_read_search"
    result = subprocess.run(["setpriv", f"--bounding-set={dropped}", f"--inh-caps={dropped}", sys.executable, "-m",
                             "obsflow", "online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle",
                             "--poll", "0.01", "--retries", "2"],
                            check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("obsflow: error:")]
    assert "still failing after 2 tries" in line
    named = line.split("(a lock or the output): ", 1)[1].split("; ")
    assert len(named) == 2 and all(n.startswith(f"{PROJECT} scan") and "ermission denied" in n for n in named), line


def test_a_catch_up_run_that_skipped_a_scan_exits_1(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sim = _observe(raw, 3)
    bank = raw / PROJECT / "VEGAS" / f"{sim.plans[1].timestamp}A.fits"
    bank.write_bytes(bank.read_bytes()[:10000])
    rc = main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle", "--poll", "0.01",
               "--retries", "1"])
    assert rc == 1
    assert f"{PROJECT} scan 2" in capsys.readouterr().err


def _age(raw: Path, days: float = 3) -> None:
    then = time.time() - days * 86400
    os.utime(raw / PROJECT / "ScanLog.fits", (then, then))


def _two_filled_two_more_ended(raw: Path, out: Path) -> None:
    """Scans 1 and 2 observed and filled by a daemon that then stopped; scans 3 and 4 observed after."""
    sim = _observe(raw, 4, slice(0, 2))
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(until_idle=True)
    for plan in sim.plans[2:]:
        sim.start_scan(plan)
        sim.finish_scan(plan)


def test_a_project_being_filled_is_followed_after_a_long_downtime(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _two_filled_two_more_ended(raw, out)
    _age(raw)
    status = read_status(OutputLayout(out))
    status_path = OutputLayout(out).status_path
    status_path.write_text(status_path.read_text().replace(str(status["last_poll"]), str(time.time() - 4 * 86400)))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert sorted(k.scan for k in daemon.engine.project(PROJECT).filled) == [1, 2, 3, 4]


def test_projects_filled_to_the_end_are_not_read_again_at_start(tmp_path):
    """Every project ever filled has an output folder: a restart must not read them all before the live one."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw, 2)
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(until_idle=True)
    _age(raw)  # finished and filled 3 days ago; the daemon polled since
    live = "AGBT26A_301_01"
    _observe(raw, 1, project=live)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    read: list[str] = []
    filled_scans = daemon.filled_scans
    daemon.filled_scans = lambda project: read.append(project) or filled_scans(project)
    daemon.run(until_idle=True)
    assert [k.scan for k in daemon.engine.project(live).filled] == [1]
    assert read == [live]


def test_a_project_left_with_scans_to_fill_is_followed_after_a_long_downtime(tmp_path):
    """The previous daemon saw scans 3 and 4 end but could not fill them (a busy lock) before it stopped."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _two_filled_two_more_ended(raw, out)
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")
    try:
        build_daemon(raw, out, poll_s=0.01, lock_timeout_s=0.05, quicklook=False).run(max_seconds=0.5)
    finally:
        release_lock(lock)
    _age(raw)  # then down for 3 days: the log is older than --follow-hours and than that daemon's last poll
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert sorted(k.scan for k in daemon.engine.project(PROJECT).filled) == [1, 2, 3, 4]


def test_a_log_written_since_the_last_poll_is_followed(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "other").mkdir(parents=True)
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(until_idle=True)  # the daemon ran 4 days ago
    status_path = OutputLayout(out).status_path
    last_poll = read_status(OutputLayout(out))["last_poll"]
    status_path.write_text(status_path.read_text().replace(str(last_poll), str(time.time() - 4 * 86400)))
    _observe(raw, 2)
    _age(raw)  # observed 3 days ago, while the daemon was down
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert sorted(k.scan for k in daemon.engine.project(PROJECT).filled) == [1, 2]


def test_projects_not_followed_are_said_once(tmp_path, caplog):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw, 2)
    _age(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    with caplog.at_level(logging.INFO):
        daemon.run(until_idle=True)
    said = [r.getMessage() for r in caplog.records if "not following" in r.getMessage()]
    assert said == [f"not following 1 project whose logs are older than 24 h (name them with --projects): {PROJECT}"]
    assert not daemon.engine.project(PROJECT).filled


def test_a_busy_lock_says_how_long_it_was_waited_for(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw, 1)
    daemon = build_daemon(raw, out, poll_s=0.01, lock_timeout_s=1.2, quicklook=False)
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")
    try:
        with pytest.raises(LockError, match=r"lock held by .*offline fill.*; gave up after 1\.[2-9] s"):
            daemon.filled_scans(PROJECT)
    finally:
        release_lock(lock)


def test_the_status_keeps_only_the_projects_filled_lately(tmp_path):
    """Saved at every poll and listed whole by `online status` and the status page: not every project ever filled."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _observe(raw, 1)
    layout = OutputLayout(out)
    layout.state_dir.mkdir(parents=True)
    now = time.time()
    old = {f"AGBT24A_{n:03d}_01": {"last_scan": 9, "last_timestamp": "2024_10_01_00:00:00",
                                    "last_filled_at": now - 60 * 86400, "pending": 0} for n in range(300)}
    lately = {"AGBT26A_299_01": {"last_scan": 3, "last_timestamp": "2026_11_30_00:00:00",
                                 "last_filled_at": now - 2 * 86400, "pending": 0}}
    layout.status_path.write_text(json.dumps({"projects": {**old, **lately}, "last_poll": now - 60}))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert sorted(read_status(layout)["projects"]) == ["AGBT26A_299_01", PROJECT]


@pytest.mark.parametrize("saved_by", ["this version", "an older version"])
def test_projects_left_to_fill_stay_followed_by_a_daemon_that_never_polled(tmp_path, saved_by):
    """The previous daemon stopped with scans 3 and 4 of the project still to fill; the next one starts
    while the raw root is unmounted (it polls on) and is stopped again before it comes back.  Its status
    must still say which projects to follow: the one after it fills scans 3 and 4."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _two_filled_two_more_ended(raw, out)
    _age(raw)  # observed 3 days ago; the daemon that saw scans 3 and 4 end was stopped (SIGTERM) in its backlog
    layout = OutputLayout(out)
    status = read_status(layout)
    status["last_poll"] = time.time() - 60
    if saved_by == "this version":
        status["unfinished"] = [PROJECT]
    else:
        del status["unfinished"]
    layout.status_path.write_text(json.dumps(status))
    away = tmp_path / "raw.unmounted"
    raw.rename(away)
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(max_seconds=0.2)  # the raw root cannot be read
    away.rename(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert sorted(k.scan for k in daemon.engine.project(PROJECT).filled) == [1, 2, 3, 4]


def test_the_status_keeps_a_project_not_filled_lately_while_it_has_scans_to_fill(tmp_path):
    """A project last filled 40 days ago whose scan keeps failing (an output it cannot write) still has
    scans to fill: `online status` and the status page go on showing its line and its pending count."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    layout = OutputLayout(out)
    layout.state_dir.mkdir(parents=True)
    now = time.time()
    stuck = "AGBT26A_200_01"
    failure = {"project": stuck, "scan": 4, "timestamp": "2026_10_20_00:00:00", "attempts": 40,
               "last_error": "cannot write: Permission denied", "retry_at": now, "given_up": False, "counted": 0}
    layout.status_path.write_text(json.dumps({
        "projects": {stuck: {"last_scan": 3, "last_timestamp": "2026_10_19_00:00:00",
                             "last_filled_at": now - 40 * 86400, "pending": 1}},
        "failures": [failure], "unfinished": [stuck], "last_poll": now - 60,
    }))  # fmt: skip
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(max_seconds=0.1)
    status = read_status(layout)
    assert status["unfinished"] == [stuck] and [f["scan"] for f in status["failures"]] == [4]
    assert list(status["projects"]) == [stuck]
