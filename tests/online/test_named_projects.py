"""Projects named to follow (``--projects``, ``[filler] projects``) that are not in the raw root: said, and shown.

Found by review: the daemon said nothing of a named project that is not there, so an operator
could not tell a typo from a quiet telescope.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec
from obsflow.web.pages import filler_section
from obsflow.web.status import filler_status

PROJECT = "AGBT26A_300_01"
LATER = "AGBT26A_300_02"  # named before its first scan


def _observe(raw: Path, project: str, scans: int = 1) -> None:
    spec = TelescopeSpec(project=project, scans=scans, procedure="Track", banks=1, channels=1024, integrations=2,
                         start=datetime(2026, 11, 21, 4, tzinfo=UTC))  # fmt: skip
    sim = TelescopeSimulator(spec, raw)
    for plan in sim.plans:
        sim.start_scan(plan)
        sim.finish_scan(plan)


def _step_for(daemon, seconds: float) -> None:
    """Poll as the daemon does, many times."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        daemon.step()
        time.sleep(0.01)


def _said(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


def _status_lines(out: Path, capsys) -> list[str]:
    assert main(["online", "status", "--out-root", str(out)]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if "NOT PRESENT" in line]


@pytest.fixture
def roots(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    return raw, out


def test_a_named_project_not_in_the_raw_root_is_said_once_shown_and_followed_when_it_comes(roots, caplog, capsys):
    raw, out = roots
    _observe(raw, PROJECT)
    daemon = build_daemon(raw, out, projects=[PROJECT, LATER], poll_s=0.01, quicklook=False)
    daemon.start()
    with caplog.at_level(logging.WARNING, logger="obsflow.online.daemon"):
        _step_for(daemon, 0.3)  # dozens of polls: said once, not at each
    assert _said(caplog, "not present") == [
        f"{LATER} is named to follow but not present in {raw} (a typo, or no scan started yet?): waiting for it"]
    (entry,) = read_status(OutputLayout(out))["not_present"]
    assert (entry["project"], entry["state"]) == (LATER, f"not present in {raw}")
    assert time.time() - 60 < entry["since"] <= time.time()
    (line,) = _status_lines(out, capsys)
    assert line.startswith(f"  NOT PRESENT: {LATER} is named to follow but not present in {raw} ")
    config = raw.parent / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    page = filler_status(load_config(config))
    assert [(p["project"], p["state"]) for p in page["not_present"]] == [(LATER, f"not present in {raw}")]
    assert f'<p class="warn">{LATER} is named to follow but not present in {raw} (' in filler_section(page, time.time())

    caplog.clear()
    _observe(raw, LATER)  # its first scan
    with caplog.at_level(logging.WARNING, logger="obsflow.online.daemon"):
        _step_for(daemon, 0.3)
    daemon.close()
    assert _said(caplog, "present") == [f"{LATER} now present in {raw}: following it"]
    assert read_status(OutputLayout(out))["not_present"] == []
    assert _status_lines(out, capsys) == []
    assert [k.scan for k in daemon.engine.project(LATER).filled] == [1]


def test_named_projects_are_not_said_missing_while_the_raw_root_is_unavailable(roots, caplog):
    """An NFS blip is one "raw root unavailable" line, not one line per project gone and come back."""
    raw, out = roots
    _observe(raw, PROJECT)
    daemon = build_daemon(raw, out, projects=[PROJECT], poll_s=0.01, quicklook=False)
    daemon.start()
    with caplog.at_level(logging.WARNING, logger="obsflow.online.daemon"):
        daemon.step()
        raw.rename(raw.parent / "elsewhere")
        daemon.step()
        (raw.parent / "elsewhere").rename(raw)
        daemon.step()
    daemon.close()
    assert _said(caplog, "present") == []
    assert read_status(OutputLayout(out))["not_present"] == []


def test_the_daemon_says_once_that_a_project_of_its_config_is_not_there(roots):
    raw, out = roots
    config = raw.parent / "filler.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\nprojects = ["AGBT26A_03_01"]\n')
    result = subprocess.run([sys.executable, "-m", "obsflow", "online", "-c", str(config), "--poll", "0.05",
                             "--max-seconds", "1"], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "not present" in line]
    assert len(said) == 1 and f"AGBT26A_03_01 is named to follow but not present in {raw}" in said[0]


def test_a_name_that_is_no_project_folder_is_not_present(roots, caplog):
    """A name is one folder of the raw root, as the daemon follows it: ``../raw`` names the raw root itself."""
    raw, out = roots
    (raw / "notes.txt").write_text("not a project\n")
    daemon = build_daemon(raw, out, projects=["../raw", "notes.txt", "."], poll_s=0.01, quicklook=False)
    daemon.start()
    daemon.step()
    daemon.close()
    assert [e["project"] for e in read_status(OutputLayout(out))["not_present"]] == ["../raw", "notes.txt", "."]
