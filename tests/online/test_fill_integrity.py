"""A fill refuses output files that disagree with each other, before it changes any of them.

Each case damages a real filled project the way the review found (a bank FITS file removed, the
combined index cut or lost, one bank index copied over another) and runs ``obsflow fill`` again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.online.layout import OutputLayout
from obsflow.sdfits import index, index_fits, status
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

PROJECT = "AGBT26A_510_01"
ROW_BYTES = index.ROW_WIDTH + 1


@pytest.fixture(scope="module")
def raw_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    spec = TelescopeSpec(project=PROJECT, scans=4, procedure="OnOff", banks=2, pols=1, channels=1024,
                         integrations=3, seed=5, start=datetime(2026, 11, 21, 6, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, root)
    return root / PROJECT


def _fill(raw_project: Path, out: Path, scans: str) -> int:
    return main(["fill", str(raw_project), str(out), "--scans", scans])


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}


def _cut(path: Path, n_bytes: int) -> None:
    path.write_bytes(path.read_bytes()[:-n_bytes])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("obsflow: error: ")
    return err[0]


def test_a_bank_index_without_its_fits_file_is_refused_and_kept(raw_project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _fill(raw_project, out, "1") == 0
    layout = OutputLayout(out)
    fits_a = layout.bank_fits(PROJECT, "A")
    fits_a.unlink()
    _cut(layout.combined_index(PROJECT), 10)  # a second fault that would make the fill fail and roll back
    before = _snapshot(out)
    capsys.readouterr()
    assert _fill(raw_project, out, "2") == 2
    line = _one_error_line(capsys)
    assert "index exists without its FITS file" in line and index_fits.index_path_for(fits_a).name in line
    assert _snapshot(out) == before


def test_a_bank_index_without_its_fits_file_gets_no_rows_appended(raw_project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _fill(raw_project, out, "1") == 0
    fits_a = OutputLayout(out).bank_fits(PROJECT, "A")
    fits_a.unlink()
    before = _snapshot(out)
    assert _fill(raw_project, out, "2") == 2
    assert "index exists without its FITS file" in _one_error_line(capsys)
    assert _snapshot(out) == before


@pytest.mark.parametrize("damage", ["torn row", "whole rows missing"])
def test_a_damaged_combined_index_is_refused_before_any_write(damage: str, raw_project: Path, tmp_path: Path,
                                                               capsys) -> None:  # fmt: skip
    out = tmp_path / "out"
    assert _fill(raw_project, out, "1-2") == 0
    combined = OutputLayout(out).combined_index(PROJECT)
    _cut(combined, 10 if damage == "torn row" else 3 * ROW_BYTES)
    before = _snapshot(out)
    capsys.readouterr()
    assert _fill(raw_project, out, "3") == 2
    line = _one_error_line(capsys)
    assert combined.name in line
    assert _snapshot(out) == before


def test_a_missing_combined_index_is_rebuilt_over_every_bank(raw_project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _fill(raw_project, out, "1-2") == 0
    layout = OutputLayout(out)
    combined = layout.combined_index(PROJECT)
    [entry] = [e for e in status.read_status(out) if e.project == PROJECT]
    assert (entry.scan, entry.index) == (2, index.next_index(combined) - 1)  # appended to: the last INDEX
    combined.unlink()
    assert _fill(raw_project, out, "3") == 0
    banks = layout.bank_files(PROJECT)
    assert index_fits.index_mismatch(combined, *banks) is None
    assert index.next_index(combined) == 3 * 2 * 3 * 2  # 3 scans x 2 banks x 3 integrations x cal on/off
    [entry] = [e for e in status.read_status(out) if e.project == PROJECT]
    assert (entry.scan, entry.index) == (3, index.next_index(combined) - 1)


def test_another_banks_index_copied_over_a_bank_index_is_refused(raw_project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _fill(raw_project, out, "1") == 0
    layout = OutputLayout(out)
    index_a, index_b = (index_fits.index_path_for(layout.bank_fits(PROJECT, bank)) for bank in "AB")
    shutil.copyfile(index_b, index_a)  # same row count, rows of the other file
    before = _snapshot(out)
    capsys.readouterr()
    assert _fill(raw_project, out, "2") == 2
    line = _one_error_line(capsys)
    assert index_a.name in line and layout.bank_fits(PROJECT, "B").name in line
    assert _snapshot(out) == before


def test_a_fill_that_rolls_back_prints_one_line(raw_project: Path, tmp_path: Path) -> None:
    """The rollback's own log lines are INFO: without -v the command prints only its one-line error."""
    out = tmp_path / "out"
    not_a_folder = tmp_path / "flags"
    not_a_folder.write_text("a file where the flag folder should be\n")  # fails after the FITS and index writes
    command = [sys.executable, "-m", "obsflow", "fill", str(raw_project), str(out), "--scans", "1",
               "--flags", str(not_a_folder / "sub")]  # fmt: skip
    quiet = subprocess.run(command, check=False, capture_output=True, text=True, env=_env())
    assert quiet.returncode == 2
    assert len(quiet.stderr.splitlines()) == 1 and quiet.stderr.startswith("obsflow: error: "), quiet.stderr
    assert not OutputLayout(out).bank_files(PROJECT)  # rolled back
    verbose = subprocess.run([sys.executable, "-m", "obsflow", "-v", *command[3:]], check=False,
                             capture_output=True, text=True, env=_env())  # fmt: skip
    assert "rolled back" in verbose.stderr


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
