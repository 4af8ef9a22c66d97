"""The daemon keeps going through bad scans, busy locks, full disks and a vanishing raw root (found by review)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from astropy.io import fits

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.lock import release_lock, take_lock
from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import ScansSkipped, build_daemon, run_daemon
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec
from obsflow.web.status import filler_status
from tests.fixtures.raw_projects import bank_file_never_came, filled_without_bank_b, never_finished_first_scan

PROJECT = "AGBT26A_300_01"


def _telescope(raw: Path, scans: int, project: str = PROJECT, **kw) -> TelescopeSimulator:
    spec = {"project": project, "scans": scans, "procedure": "Track", "banks": 1, "channels": 1024,
            "integrations": 2, "start": datetime(2026, 11, 21, 4, tzinfo=UTC), **kw}
    return TelescopeSimulator(TelescopeSpec(**spec), raw)


def _observe(sim: TelescopeSimulator, plans=None) -> None:
    for plan in sim.plans if plans is None else plans:
        sim.start_scan(plan)
        sim.finish_scan(plan)


@pytest.fixture
def roots(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    return raw, out


def _filled(daemon, project: str = PROJECT) -> list[int]:
    return sorted(k.scan for k in daemon.engine.project(project).filled)


def test_a_header_holding_text_for_a_number_fails_that_scan_only(roots):
    raw, out = roots
    sim = _telescope(raw, 3)
    _observe(sim)
    fits.setval(raw / PROJECT / "Antenna" / f"{sim.plans[1].timestamp}.fits", "AMBPRESS", value="n/a")
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=2, backoff_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 3]
    (failure,) = read_status(OutputLayout(out))["failures"]
    assert failure["scan"] == 2 and failure["given_up"] and failure["attempts"] == 2
    assert "AMBPRESS" in failure["last_error"] or "n/a" in failure["last_error"]


def test_a_truncated_go_file_fails_that_scan_only(roots):
    # Found by review: every scan's GO header was read to find one scan, so one cut GO file failed them all.
    raw, out = roots
    sim = _telescope(raw, 3)
    _observe(sim)
    go = raw / PROJECT / "GO" / f"{sim.plans[0].timestamp}.fits"
    go.write_bytes(go.read_bytes()[:1000])
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert _filled(daemon) == [2, 3]
    (failure,) = read_status(OutputLayout(out))["failures"]
    assert failure["scan"] == 1 and go.name in failure["last_error"]


def test_a_failing_quicklook_does_not_stop_the_daemon(roots):
    raw, out = roots
    _observe(_telescope(raw, 2))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.after_fill = lambda action, outcome: 1 / 0
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 2]


def _step_for(daemon, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.step()
        time.sleep(0.02)


def test_a_busy_project_lock_is_waited_out_never_given_up(roots):
    raw, out = roots
    sim = _telescope(raw, 2)
    _observe(sim, sim.plans[:1])
    daemon = build_daemon(raw, out, poll_s=0.01, lock_timeout_s=0.05, backoff_s=0.01, retry_limit=2, quicklook=False)
    daemon.start()
    daemon.step()
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")  # an offline fill, a while
    _observe(sim, sim.plans[1:])
    _step_for(daemon, 1.0)
    (failure,) = daemon.status.failures
    assert failure["attempts"] > 2 and not failure["given_up"] and "lock held" in failure["last_error"]
    release_lock(lock)
    # The next try comes at the daemon's own back-off time (doubling after each busy try: up to
    # ~0.6 s away after a second of tries, so a fixed half second missed it once under load).
    _step_for(daemon, max(0.0, failure["retry_at"] - time.time()) + 0.5)
    daemon.close()
    assert _filled(daemon) == [1, 2]


@pytest.fixture
def small_disk(tmp_path):
    """A real, tiny filesystem (tmpfs of 3 MiB) that fills up, and can be grown."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                            capture_output=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the full-disk test: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_waited_out_never_given_up(tmp_path, small_disk):
    raw, out = tmp_path / "raw", small_disk / "out"
    _observe(_telescope(raw, 6, banks=2, channels=4096, integrations=8))
    daemon = build_daemon(raw, out, poll_s=0.01, backoff_s=0.01, retry_limit=2, quicklook=False)
    daemon.start()
    _step_for(daemon, 1.5)  # the disk fills up: status and logs cannot be written either
    state = daemon.engine.project(PROJECT)
    assert state.failures and not any(f.given_up for f in state.failures.values())
    assert max(f.attempts for f in state.failures.values()) > 2
    daemon.close()
    subprocess.run(["mount", "-o", "remount,size=40m", str(small_disk)], check=True)  # space freed
    daemon = build_daemon(raw, out, poll_s=0.01, backoff_s=0.01, retry_limit=2, quicklook=False)
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 2, 3, 4, 5, 6]
    assert read_status(OutputLayout(out))["failures"] == []


def _two_scans_the_second_cut_short(raw: Path) -> tuple[Path, bytes]:
    """Two scans observed; scan 2's VEGAS bank file cut to half: (that file, its good bytes)."""
    sim = _telescope(raw, 2)
    _observe(sim)
    bank = raw / PROJECT / "VEGAS" / f"{sim.plans[1].timestamp}A.fits"
    good = bank.read_bytes()
    bank.write_bytes(good[: len(good) // 2])
    return bank, good


def test_a_scan_filled_on_retry_leaves_no_failure_behind(roots):
    raw, out = roots
    bank, good = _two_scans_the_second_cut_short(raw)
    daemon = build_daemon(raw, out, poll_s=5, backoff_s=0.05, quicklook=False)  # each step fills all it can
    daemon.start()
    daemon.step()
    assert [f["scan"] for f in read_status(OutputLayout(out))["failures"]] == [2]
    bank.write_bytes(good)
    time.sleep(0.1)
    daemon.step()
    daemon.close()
    assert _filled(daemon) == [1, 2]
    assert read_status(OutputLayout(out))["failures"] == []
    again = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    started = time.monotonic()
    again.run(until_idle=True)  # nothing left to wait for: ends at once
    assert time.monotonic() - started < 5.0


def test_a_skipped_scan_filled_by_hand_is_no_longer_reported(roots):
    raw, out = roots
    bank, good = _two_scans_the_second_cut_short(raw)
    build_daemon(raw, out, poll_s=0.01, retry_limit=1, quicklook=False).run(until_idle=True)
    assert [(f["scan"], f["given_up"]) for f in read_status(OutputLayout(out))["failures"]] == [(2, True)]
    bank.write_bytes(good)
    assert main(["fill", str(raw / PROJECT), str(out), "--scans", "2"]) == 0  # the operator fills it
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert daemon.engine.project(PROJECT).failures == {}
    assert read_status(OutputLayout(out))["failures"] == []


def test_a_missing_or_vanishing_raw_root_is_waited_for(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"  # raw not mounted yet
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.start()
    assert daemon.step() is False
    assert "raw root unavailable" in read_status(OutputLayout(out))["activity"]
    raw.mkdir()
    sim = _telescope(raw, 2)
    _observe(sim, sim.plans[:1])
    daemon.step()
    assert _filled(daemon) == [1]
    raw.rename(tmp_path / "elsewhere")  # an NFS blip
    daemon.step()
    assert "raw root unavailable" in read_status(OutputLayout(out))["activity"]
    (tmp_path / "elsewhere").rename(raw)
    _observe(sim, sim.plans[1:])
    daemon.step()
    daemon.close()
    assert _filled(daemon) == [1, 2]


def test_the_cli_daemon_keeps_running_without_its_raw_root(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "obsflow", "online", "--raw-root", str(tmp_path / "raw"),
                             "--out-root", str(out), "--poll", "0.05", "--max-seconds", "1"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "raw root unavailable" in result.stderr


def test_no_fill_is_attempted_while_the_filled_scans_cannot_be_read(roots):
    raw, out = roots
    sim = _telescope(raw, 3)
    _observe(sim, sim.plans[:1])
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(until_idle=True)
    _observe(sim, sim.plans[1:])
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")
    daemon = build_daemon(raw, out, poll_s=0.01, lock_timeout_s=0.2, backoff_s=0.01, retry_limit=2, quicklook=False)
    daemon.start()
    started = time.monotonic()
    daemon.step()  # 7 events of one project: one lookup, which honours --lock-timeout
    assert time.monotonic() - started < 1.0
    _step_for(daemon, 0.5)
    assert daemon.status.recent == [] or daemon.status.recent[0]["scan"] == 1  # the first run's only
    assert daemon.status.failures == []
    release_lock(lock)
    _step_for(daemon, 0.3)
    daemon.close()
    assert [r["scan"] for r in daemon.status.recent] == [3, 2, 1]
    assert not any(r["skipped"] for r in daemon.status.recent)


def test_sigterm_ends_a_wait_for_a_busy_project_lock(roots):
    raw, out = roots
    sim = _telescope(raw, 1)
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")
    daemon = subprocess.Popen([sys.executable, "-m", "obsflow", "online", "--raw-root", str(raw), "--out-root",
                               str(out), "--poll", "0.05", "--lock-timeout", "30"], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        _observe(sim)
        time.sleep(1.5)  # the daemon now waits for the project's lock
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        assert time.monotonic() - sent < 5.0
        assert daemon.returncode == 0, daemon.stderr.read()
    finally:
        daemon.kill()
        release_lock(lock)


def test_dcr_only_scans_of_a_real_project_are_skipped_not_failed(samples, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(samples / "raw_gbtcal" / "AGBT17A_996_01:1:Rcvr2_3", raw / "AGBT17A_996_01:1:Rcvr2_3")
    daemon = build_daemon(raw, out, poll_s=0.01, backoff_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert daemon.status.failures == []
    assert daemon.status.recent and all(r["skipped"] and r["note"] == "no VEGAS data" for r in daemon.status.recent)


def _age(raw: Path, project: str, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(raw / project / "ScanLog.fits", (then, then))


ARCHIVED = "AGBT24B_100_07"


def test_only_projects_observed_lately_are_followed_by_default(roots):
    raw, out = roots
    _observe(_telescope(raw, 2, project=ARCHIVED))
    _age(raw, ARCHIVED, 24 * 400)  # more than a year ago
    _observe(_telescope(raw, 1))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert set(daemon.engine.projects) == {PROJECT}
    named = build_daemon(raw, out, poll_s=0.01, quicklook=False, projects=[ARCHIVED])  # named: always followed
    named.run(until_idle=True)
    assert _filled(named, ARCHIVED) == [1, 2]


def test_old_projects_are_looked_at_only_when_a_project_folder_comes_or_at_each_full_listing(roots):
    """A raw root holds years of projects: each poll looks at the followed ones, not the archive."""
    raw, out = roots
    old, older = _telescope(raw, 2, project=ARCHIVED), _telescope(raw, 2, project="AGBT24A_050_03")
    for sim in (old, older):
        _observe(sim, sim.plans[:1])
        _age(raw, sim.spec.project, 24 * 400)
    os.utime(raw, (time.time() - 3600,) * 2)  # no project folder came lately
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.source.full_listing_s = 3600
    daemon.start()
    daemon.step()
    assert daemon.source.followed == set()

    _observe(old, old.plans[1:])  # an archived project observes again: its log is new
    for _ in range(3):
        daemon.step()
    assert daemon.source.followed == set()  # not looked at before the next full listing
    daemon.source.full_listing_s = 0
    while daemon.step():
        pass
    assert daemon.source.followed == {ARCHIVED} and _filled(daemon, ARCHIVED) == [1, 2]

    daemon.source.full_listing_s = 3600
    os.utime(raw, (time.time() - 3600,) * 2)
    daemon.step()
    _observe(older, older.plans[1:])
    daemon.step()
    assert daemon.source.followed == {ARCHIVED}
    _observe(_telescope(raw, 1))  # a new project's folder: the raw root changed, every project is looked at
    while daemon.step():
        pass
    assert daemon.source.followed == {ARCHIVED, "AGBT24A_050_03", PROJECT}
    assert _filled(daemon, "AGBT24A_050_03") == [1, 2] and _filled(daemon, PROJECT) == [1]
    daemon.close()


def test_a_live_scan_is_filled_between_the_scans_of_a_backlog(roots):
    raw, out = roots
    _observe(_telescope(raw, 6, project=ARCHIVED, banks=2, channels=4096))
    daemon = build_daemon(raw, out, poll_s=0.01, follow_hours=0, quicklook=False)  # 0: every project
    daemon.start()
    daemon.step()  # a poll interval's worth of the backlog, then back to polling
    assert 0 < len(_filled(daemon, ARCHIVED)) < 6
    _observe(_telescope(raw, 1))
    daemon.step()
    daemon.close()
    assert daemon.status.recent[-1]["project"] == ARCHIVED
    assert PROJECT in [r["project"] for r in daemon.status.recent[:2]]
    assert len(_filled(daemon, ARCHIVED)) < 6


def test_follow_hours_from_the_config_and_the_command_line(roots, tmp_path):
    raw, out = roots
    _observe(_telescope(raw, 1, project=ARCHIVED))
    _age(raw, ARCHIVED, 48)
    config = tmp_path / "filler.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\npoll_seconds = 0.01\nfollow_hours = 72\n')
    assert main(["online", "--config", str(config), "--follow-hours", "1", "--until-idle"]) == 0
    assert not OutputLayout(out).combined_index(ARCHIVED).exists()  # the option wins
    assert main(["online", "--config", str(config), "--until-idle"]) == 0
    assert OutputLayout(out).combined_index(ARCHIVED).exists()


def test_the_lag_counts_from_when_the_scan_ended(roots, capsys):
    raw, out = roots
    _observe(_telescope(raw, 1, start=datetime.now(UTC) - timedelta(seconds=90)))  # ended a minute ago
    build_daemon(raw, out, poll_s=0.01, quicklook=False).run(until_idle=True)  # a daemon that was down
    (record,) = read_status(OutputLayout(out))["recent"]
    assert 60 < record["filled_at"] - record["finished_at"] < 120
    assert main(["online", "status", "--out-root", str(out)]) == 0
    lag = float(capsys.readouterr().out.split("lag after scan end: last ")[1].split(" s")[0])
    assert 60 < lag < 120


def test_status_warns_when_a_read_only_output_disk_keeps_it_from_being_saved(tmp_path, small_disk, capsys):
    # Found by review: with the output remounted read-only, 'online status' went on showing the last saved
    # status, "running, idle, 0 pending", while the daemon could write nothing and a new scan waited.
    raw, out = tmp_path / "raw", small_disk / "out"
    raw.mkdir()
    sim = _telescope(raw, 2)
    daemon = subprocess.Popen([sys.executable, "-m", "obsflow", "online", "--raw-root", str(raw), "--out-root",
                               str(out), "--poll", "0.05"], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _observe(sim, sim.plans[:1])
        time.sleep(2.0)
        assert main(["online", "status", "--out-root", str(out)]) == 0
        assert "WARNING" not in capsys.readouterr().out
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        _observe(sim, sim.plans[1:])
        time.sleep(3.0)
        assert main(["online", "status", "--out-root", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("daemon: running") and "WARNING: status not saved for" in lines[1]
        assert str(out) in lines[1]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_a_read_only_output_disk_is_logged_once_not_at_every_poll(tmp_path, small_disk, caplog):
    # Found by review: on a read-only output the daemon logged "cannot write the status" at every
    # poll (431 lines in 3 minutes at a 0.3 s poll). Once, then once more when it can write again.
    raw, out = tmp_path / "raw", small_disk / "out"
    sim = _telescope(raw, 2)
    _observe(sim, sim.plans[:1])
    daemon = build_daemon(raw, out, poll_s=0.01, backoff_s=0.01, retry_limit=2, quicklook=False)
    daemon.start()
    _step_for(daemon, 0.3)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with caplog.at_level("WARNING", logger="obsflow.online.daemon"):
            _step_for(daemon, 0.5)  # dozens of polls
            said = [r.getMessage() for r in caplog.records if "cannot write the status" in r.getMessage()]
            assert len(said) == 1 and "Read-only file system" in said[0]
            caplog.clear()
            subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
            _step_for(daemon, 0.3)
            assert [r.getMessage() for r in caplog.records] == ["the status can be written again"]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=False)
        daemon.close()
    assert read_status(OutputLayout(out))["last_poll"] > time.time() - 5


def test_a_scan_the_log_never_finished_is_reported_not_silently_left(roots, caplog, capsys):
    # Found by review: scan 1 started and never finished (M&C crashed), scan 2 ran: the daemon said
    # nothing, `online status` showed 0 pending and a catch-up run exited 0; scan 1 was never filled.
    raw, out = roots
    sim = _telescope(raw, 3)
    sim.start_scan(sim.plans[0])  # no SCAN FINISHED ever comes for it
    _observe(sim, sim.plans[1:2])
    with caplog.at_level("WARNING", logger="obsflow.online.daemon"):
        daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
        daemon.start()
        _step_for(daemon, 0.3)
        sim.start_scan(sim.plans[2])  # in progress: not reported
        _step_for(daemon, 0.2)
        daemon.close()
    told = [r.getMessage() for r in caplog.records if "SCAN FINISHED" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith(f"{PROJECT} scan 1 (") and "scan 2 started after it" in told[0]
    assert _filled(daemon) == [2]
    assert main(["online", "status", "--out-root", str(out)]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if "NEVER FINISHED" in line]
    assert len(shown) == 1 and f"{PROJECT} scan 1 " in shown[0] and "scan 2 started after it" in shown[0]
    config = raw.parent / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    (page,) = filler_status(load_config(config))["failures"]  # the status page's list
    assert (page["scan"], page["given_up"]) == (1, True) and "never finished" in page["last_error"]
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 1
    err = capsys.readouterr().err
    assert "1 scan never finished" in err and f"{PROJECT} scan 1:" in err and "scan 3" not in err


def test_status_does_not_warn_while_the_daemon_waits_for_an_offline_fill_to_read_a_project(roots, capsys):
    # Found by review: a new project whose lock an offline `obsflow fill` held kept the daemon reading which
    # of its scans are filled for the lock timeout (60 s) with the status "idle" and unsaved, and `online
    # status` said "WARNING: status not saved ...: the daemon cannot write ... (read-only or full disk?)".
    raw, out = roots
    sim = _telescope(raw, 1)
    OutputLayout(out).locks_dir.mkdir(parents=True)
    lock = take_lock(OutputLayout(out).locks_dir, PROJECT, purpose="offline fill")
    daemon = subprocess.Popen([sys.executable, "-m", "obsflow", "online", "--raw-root", str(raw), "--out-root",
                               str(out), "--poll", "0.05"], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(1.0)
        _observe(sim)
        time.sleep(3.5)  # past the 2 s after which an idle daemon's status counts as unsaved
        assert main(["online", "status", "--out-root", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert f"reading which scans of {PROJECT} are filled" in lines[0] and "WARNING" not in lines[1], lines
    finally:
        release_lock(lock)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_a_scan_left_unfinished_when_the_telescope_went_on_with_another_project_is_reported(roots, capsys):
    # Found by review: the check looked within one project only. Scan 1 of one project started and never
    # finished, then the next project observed: nothing said, `--until-idle` exited 0, scan 1 never filled.
    raw, out = roots
    first, other = _telescope(raw, 1), _telescope(raw, 2, project="AGBT26A_301_01",
                                                  start=datetime(2026, 11, 21, 6, tzinfo=UTC))  # fmt: skip
    first.start_scan(first.plans[0])  # no SCAN FINISHED ever comes for it
    _observe(other, other.plans[:1])
    other.start_scan(other.plans[1])  # in progress: not reported, though the other log is read first below
    os.utime(raw / PROJECT / "ScanLog.fits")  # the newest log: read last at a restart
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 1
    err = capsys.readouterr().err
    assert f"1 scan never finished: {PROJECT} scan 1:" in err and "AGBT26A_301_01 scan" not in err
    assert main(["online", "status", "--out-root", str(out)]) == 0
    (shown,) = [line for line in capsys.readouterr().out.splitlines() if "NEVER FINISHED" in line]
    assert f"{PROJECT} scan 1 " in shown and " of AGBT26A_301_01 started after it)" in shown


def test_a_fill_log_that_cannot_be_written_is_said_once_per_project(roots, caplog):
    # Found by review: the once-only rule was kept per kind ("fill log"), so a second project's
    # unwritable log was never said, and a writable one in between made the first be said again.
    raw, out = roots
    other = "AGBT26A_400_01"
    first, second = _telescope(raw, 3), _telescope(raw, 3, project=other)
    logs = OutputLayout(out).logs_dir
    for project in (PROJECT, other):
        (logs / f"{project}.fill.log").mkdir(parents=True)  # in the way: the log cannot be opened
    with caplog.at_level("WARNING", logger="obsflow.online.daemon"):
        daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, projects=[PROJECT, other])
        daemon.start()
        for plan_a, plan_b in zip(first.plans, second.plans, strict=True):  # the projects take turns
            _observe(first, [plan_a])
            _observe(second, [plan_b])
            _step_for(daemon, 0.2)
        daemon.close()
    said = [r.getMessage() for r in caplog.records if "fill log" in r.getMessage()]
    assert len(said) == 2 and any(PROJECT in m for m in said) and any(other in m for m in said), said
    assert _filled(daemon) == [1, 2, 3] and _filled(daemon, other) == [1, 2, 3]


def test_a_never_finished_scan_filled_by_hand_while_the_daemon_runs_is_no_longer_reported(roots, capsys):
    # Found by the regression review: the daemon read a project's files once, so after the operator did
    # what `online status` advises (fill it by hand), NEVER FINISHED stayed until the daemon restarted.
    raw, out = roots
    project = never_finished_first_scan(raw)  # scan 1 never finished, scan 2 did
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.start()
    _step_for(daemon, 0.3)
    assert [e["scan"] for e in daemon.status.never_finished] == [1] and _filled(daemon, project.name) == [2]
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 0
    _step_for(daemon, 0.3)
    daemon.close()
    assert daemon.status.never_finished == [] and _filled(daemon, project.name) == [1, 2]
    assert main(["online", "status", "--out-root", str(out)]) == 0
    assert "NEVER FINISHED" not in capsys.readouterr().out


def test_status_pending_counts_only_scans_still_to_fill(roots, capsys):
    # Found by the night stress run: `online status` said "2 pending" beside two SKIPPED scans, and
    # after a scan failed for good; the count was only updated when a scan was filled.
    raw, out = roots
    sim = _telescope(raw, 3)
    _observe(sim)
    (raw / PROJECT / "VEGAS" / f"{sim.plans[2].timestamp}A.fits").unlink()  # scan 3's bank file never comes
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=2, backoff_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 2]
    assert read_status(OutputLayout(out))["projects"][PROJECT]["pending"] == 0
    assert main(["online", "status", "--out-root", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "0 pending" in shown and "SKIPPED" in shown


def test_a_missing_raw_file_is_named_once_per_line(roots, capsys):
    # Found by the night stress run: "SKIPPED: P scan 3: scan 3: file named in the scan log is missing".
    raw, out = roots
    sim = _telescope(raw, 1)
    _observe(sim)
    (raw / PROJECT / "VEGAS" / f"{sim.plans[0].timestamp}A.fits").unlink()
    build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False).run(until_idle=True)
    assert main(["online", "status", "--out-root", str(out)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "SKIPPED" in line]
    assert line.count("scan 1") == 1 and "file named in the scan log is missing" in line


def _fill_log_lines(out: Path, project: str) -> list[str]:
    return OutputLayout(out).fill_log(project).read_text().splitlines()


def test_a_bank_file_that_never_comes_is_waited_for_then_the_other_banks_are_filled(roots, capsys, caplog):
    raw, out = roots
    project, aside = bank_file_never_came(raw)
    name = project.name
    with pytest.raises(ScansSkipped, match=rf"{name} scan 1: VEGAS bank B not filled") as caught:
        run_daemon(until_idle=True, raw_root=raw, out_root=out, poll_s=0.01, retry_limit=3, backoff_s=0.01,
                   quicklook=False)  # fmt: skip
    assert caught.value.exit_code == 1 and aside.name in str(caught.value)
    layout = OutputLayout(out)
    # Waited as for any late file: the tries before the last failed on the missing file, then banks A and C
    # were filled (bank B's SDFITS file starts with scan 2).
    scan1 = [line for line in _fill_log_lines(out, name) if " scan=1 " in line]
    assert len(scan1) == 3 and all("error=" in line and "missing" in line for line in scan1[:2])
    assert "missing_banks=B" in scan1[2] and "error=" not in scan1[2] and aside.name in scan1[2]
    for bank, scans in (("A", {1, 2}), ("B", {2}), ("C", {1, 2})):
        with fits.open(layout.bank_fits(name, bank)) as hdul:
            assert set(hdul[1].data["SCAN"].tolist()) == scans
    status = read_status(layout)
    assert status["failures"] == [] and status["unfinished"] == [] and status["projects"][name]["pending"] == 0
    (entry,) = status["missing_banks"]
    assert (entry["project"], entry["scan"], entry["banks"]) == (name, 1, ["B"])
    assert entry["files"] == [str(project / "VEGAS" / aside.name)]
    assert any(f"{name} scan 1 filled, but VEGAS bank B not filled" in r.getMessage() for r in caplog.records)
    assert main(["online", "status", "--out-root", str(out)]) == 0
    shown = capsys.readouterr().out
    (line,) = [line for line in shown.splitlines() if "BANK MISSING" in line]
    assert f"{name} scan 1" in line and "bank B" in line and aside.name in line and "SKIPPED" not in shown
    config = raw.parent / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    (page,) = filler_status(load_config(config))["failures"]  # the status page's list
    assert page["scan"] == 1 and page["bank_missing"] and "VEGAS bank B not filled" in page["last_error"]


def test_a_scan_filled_without_a_bank_is_not_filled_again_after_a_restart(roots):
    raw, out = roots
    project, _ = filled_without_bank_b(raw, out)
    log = _fill_log_lines(out, project.name)
    run_daemon(until_idle=True, raw_root=raw, out_root=out, poll_s=0.01, retry_limit=1, quicklook=False)  # exit 0
    assert _fill_log_lines(out, project.name) == log
    status = read_status(OutputLayout(out))
    assert status["unfinished"] == [] and [e["scan"] for e in status["missing_banks"]] == [1]  # still said


def _bank_missing_lines(out: Path, capsys) -> list[str]:
    assert main(["online", "status", "--out-root", str(out)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if "BANK MISSING" in line]


def _counting_reads(daemon) -> list[str]:
    """The projects whose bank files the daemon reads (which scans each holds), in order."""
    read: list[str] = []
    per_bank = daemon.filled_scans
    daemon.filled_scans = lambda project: read.append(project) or per_bank(project)
    return read


def test_a_bank_filled_by_hand_leaves_the_status_of_the_running_daemon(roots, capsys):
    raw, out = roots
    project, aside = bank_file_never_came(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=1, backoff_s=0.01, quicklook=False)
    read = _counting_reads(daemon)
    daemon.start()
    while daemon.step():
        pass
    assert [e["scan"] for e in read_status(OutputLayout(out))["missing_banks"]] == [1]
    daemon.step()
    # Read once, before the first fill: the daemon's own fills (scan 2 after scan 1's entry) are no fills by hand.
    assert read == [project.name]
    aside.rename(project / "VEGAS" / aside.name)  # the late file arrives, and is filled by hand

    assert main(["fill", str(project), str(out), "--scans", "1"]) == 0

    daemon.step()
    assert read_status(OutputLayout(out))["missing_banks"] == []
    assert read == [project.name] * 2
    assert _bank_missing_lines(out, capsys) == []
    config = raw.parent / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    assert filler_status(load_config(config))["failures"] == []  # the status page's list
    daemon.close()


def test_a_bank_filled_by_hand_while_no_daemon_ran_is_not_inherited(roots, capsys):
    raw, out = roots
    project, aside = filled_without_bank_b(raw, out)
    aside.rename(project / "VEGAS" / aside.name)
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 0

    run_daemon(until_idle=True, raw_root=raw, out_root=out, poll_s=0.01, retry_limit=1, quicklook=False)

    assert read_status(OutputLayout(out))["missing_banks"] == []
    assert _bank_missing_lines(out, capsys) == []


def test_a_bank_still_missing_stays_in_the_status_when_the_files_change(roots, capsys):
    raw, out = roots
    project, aside = filled_without_bank_b(raw, out)
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 1  # still no file: bank B not filled
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    read = _counting_reads(daemon)
    daemon.start()  # the inherited entry is checked against the files: bank B lacks scan 1
    assert read == [project.name]
    bank_a = OutputLayout(out).bank_fits(project.name, "A")
    os.utime(bank_a, ns=(bank_a.stat().st_atime_ns, bank_a.stat().st_mtime_ns + 10**9))  # changed by someone else
    daemon.step()
    daemon.step()

    assert read == [project.name] * 2
    daemon.close()
    (entry,) = read_status(OutputLayout(out))["missing_banks"]
    assert (entry["scan"], entry["banks"]) == (1, ["B"])
    (line,) = _bank_missing_lines(out, capsys)
    assert f"{project.name} scan 1" in line and aside.name in line
