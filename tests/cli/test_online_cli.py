"""``obsflow online status`` from the command line: what it prints for an output root."""

from __future__ import annotations

import json
from pathlib import Path

from obsflow.cli import main


def test_status_of_a_missing_output_root_is_an_error_not_a_quiet_root(tmp_path: Path, capsys) -> None:
    """A typo in --out-root used to read "no online daemon has run on ..." with exit 0."""
    missing = tmp_path / "sdfit"
    assert main(["online", "status", "--out-root", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"obsflow: error: output root not found ({missing})"]
    assert main(["online", "status", "--out-root", str(missing), "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == {"error": f"output root not found ({missing})", "exit_code": 2}
    assert not missing.exists()


def test_status_of_a_root_no_daemon_ran_on_still_exits_0(tmp_path: Path, capsys) -> None:
    assert main(["online", "status", "--out-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no online daemon has run on {tmp_path}\n"


def test_status_without_an_active_project_says_none_not_python_none(tmp_path: Path, capsys) -> None:
    """A catch-up run that found nothing to fill leaves no active project: not "active project: None"."""
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 0
    capsys.readouterr()
    assert main(["online", "status", "--out-root", str(out)]) == 0
    text = capsys.readouterr().out
    assert "; no active project\n" in text and "None" not in text
