"""The status readers (``online status``, its ``--json``, the status page) check missing-bank entries against
the bank files: a bank filled by hand while no daemon ran is no longer reported missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.lock import held
from obsflow.online.layout import OutputLayout
from obsflow.web.status import filler_status
from tests.fixtures.raw_projects import filled_without_bank_b


@pytest.fixture
def roots(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    return raw, out


def _status_text(out: Path, capsys) -> str:
    assert main(["online", "status", "--out-root", str(out)]) == 0
    return capsys.readouterr().out


def _status_json(out: Path, capsys) -> dict:
    assert main(["online", "status", "--out-root", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _page_failures(raw: Path, out: Path) -> list[dict]:
    """The status page's list of failing scans (and scans filled without a bank)."""
    config = raw.parent / "obsflow.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
    return filler_status(load_config(config))["failures"]


def _bank_b_filled_by_hand(raw: Path, out: Path) -> Path:
    """The daemon filled scan 1 without bank B and stopped; the late file came and was filled by hand."""
    project, aside = filled_without_bank_b(raw, out)
    aside.rename(project / "VEGAS" / aside.name)
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 0
    return project


def test_a_bank_filled_by_hand_while_no_daemon_runs_is_not_reported_missing(roots, capsys):
    raw, out = roots
    project = _bank_b_filled_by_hand(raw, out)
    status_file = OutputLayout(out).status_path
    saved = status_file.read_bytes()

    assert "BANK MISSING" not in _status_text(out, capsys)
    data = _status_json(out, capsys)
    assert data["missing_banks"] == []
    (filled,) = data["missing_banks_filled_since"]  # said, for a consumer that tracks the entry
    assert (filled["project"], filled["scan"], filled["banks"]) == (project.name, 1, ["B"])
    assert _page_failures(raw, out) == []
    assert status_file.read_bytes() == saved  # the readers never write the daemon's status


def test_a_bank_still_missing_is_still_reported(roots, capsys):
    raw, out = roots
    project, aside = filled_without_bank_b(raw, out)
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 1  # the file never came: bank B still lacks it
    capsys.readouterr()

    (line,) = [line for line in _status_text(out, capsys).splitlines() if "BANK MISSING" in line]
    assert f"{project.name} scan 1" in line and aside.name in line
    data = _status_json(out, capsys)
    assert [(e["scan"], e["banks"]) for e in data["missing_banks"]] == [(1, ["B"])]
    assert data["missing_banks_filled_since"] == []
    (page,) = _page_failures(raw, out)
    assert page["scan"] == 1 and page["bank_missing"]


def test_a_bank_file_being_filled_or_unreadable_keeps_its_entry(roots, capsys):
    raw, out = roots
    project = _bank_b_filled_by_hand(raw, out)
    layout = OutputLayout(out)
    with held(layout.locks_dir, project.name, timeout_s=0, purpose="a fill under way"):  # its files may change
        assert "BANK MISSING" in _status_text(out, capsys)
        assert len(_page_failures(raw, out)) == 1
    bank_b = layout.bank_fits(project.name, "B")
    with open(bank_b, "ab") as handle:  # bytes past the last row: the file cannot be read
        handle.write(b"\0" * 100)
    assert "BANK MISSING" in _status_text(out, capsys)
    assert [e["scan"] for e in _status_json(out, capsys)["missing_banks"]] == [1]
    assert len(_page_failures(raw, out)) == 1
