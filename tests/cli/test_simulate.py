"""``obsflow simulate``: writes a raw project, JSON summary, bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.online import raw

ARGS = ["--project", "TCLI_01", "--channels", "1024", "--integrations", "2", "--start", "2026-02-01T10:00:00"]


def test_simulate_writes_a_readable_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path), "--scans", "4", "--banks", "3", "--json", *ARGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["project_dir"] == str(tmp_path / "TCLI_01") and len(summary["scans"]) == 4
    scans = raw.read_project(tmp_path / "TCLI_01")
    assert [s.number for s in scans] == [1, 2, 3, 4] and scans[0].timestamp == "2026_02_01_10:00:00"
    assert scans[0].banks == ("A", "B", "C") and all(s.is_finished for s in scans)


def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["simulate", str(out), "--scans", "3", "--procedure", "OnOff", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("obsflow: error: ") and "pairs" in err and "\n" not in err
    assert main(["simulate", str(out), "--start", "yesterday"]) == 2
    assert not out.exists()


def test_existing_project_refused_and_dry_run_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(tmp_path), *ARGS]) == 0
    before = sorted(p.name for p in (tmp_path / "TCLI_01").rglob("*"))
    assert main(["simulate", str(tmp_path), *ARGS]) == 2
    assert "already has a ScanLog.fits" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "TCLI_01").rglob("*")) == before
    assert main(["simulate", str(tmp_path / "dry"), "--dry-run", *ARGS]) == 0
    assert "would write scan 1" in capsys.readouterr().out and not (tmp_path / "dry").exists()


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--help"]) == 0
    assert "obsflow simulate raw/ --scans 4" in capsys.readouterr().out
