"""The daemon's own lock is held for weeks, on whichever host runs it (found by review)."""

from __future__ import annotations

import json
import time

import pytest

from obsflow.cli import main
from obsflow.errors import LockError
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon


@pytest.fixture
def daemon_elsewhere(tmp_path):
    """A daemon on host filler1, up for 7 h, sharing this output root."""
    out = tmp_path / "out"
    layout = OutputLayout(out)
    layout.locks_dir.mkdir(parents=True)
    layout.state_dir.mkdir(parents=True)
    started = time.time() - 7 * 3600
    (layout.locks_dir / "obsflow-online.lock").write_text(json.dumps(
        {"pid": 4242, "host": "filler1", "user": "sdfits", "started": started, "purpose": "online daemon"}))
    layout.status_path.write_text(json.dumps(
        {"pid": 4242, "host": "filler1", "started": started, "raw_root": "/home/gbtdata", "out_root": str(out),
         "activity": "idle", "active_project": None, "last_poll": time.time(), "projects": {}, "recent": [],
         "failures": []}))  # fmt: skip
    return tmp_path, out


def test_a_daemon_on_another_host_keeps_its_lock_however_old(daemon_elsewhere):
    tmp_path, out = daemon_elsewhere
    (tmp_path / "raw").mkdir()
    with pytest.raises(LockError, match="another obsflow online daemon"):
        build_daemon(tmp_path / "raw", out, quicklook=False).start()
    assert (OutputLayout(out).locks_dir / "obsflow-online.lock").exists()


def test_status_says_where_the_daemon_runs_when_it_cannot_check(daemon_elsewhere, capsys):
    _, out = daemon_elsewhere
    assert main(["online", "status", "--out-root", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("daemon: running on host filler1 (cannot check from here)")
    assert main(["online", "status", "--out-root", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is True and data["checked"] is False


def test_a_daemon_lock_no_one_can_read_frees_it_for_status_and_page_alike(daemon_elsewhere, capsys):
    """Found by structure review: `online status` and the status page judged "running" by two rules;
    a lock file that is not JSON (not ours, or cut) read as a daemon on host "?" for ever in one,
    and as stopped after a minute in the other.  One rule now: stopped after a minute."""
    import os

    from obsflow.online.daemon import daemon_running, read_status

    _, out = daemon_elsewhere
    layout = OutputLayout(out)
    lock = layout.locks_dir / "obsflow-online.lock"
    lock.write_text("not json")
    assert daemon_running(layout, read_status(layout)) == (True, False)  # just written: may be a lock being made
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert daemon_running(layout, read_status(layout)) == (False, True)
    assert main(["online", "status", "--out-root", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False
