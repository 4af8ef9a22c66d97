"""The daemon's status file: a damaged one is said, set aside and started afresh, never a traceback."""

from __future__ import annotations

import json
import logging

import pytest

from obsflow.cli import main
from obsflow.errors import InputError
from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout

#: what a cut write, a foreign program or a hand edit may leave where the daemon's status JSON belongs
DAMAGED = {
    "empty": b"",
    "cut": b'{"pid": 4242, "host": "filler1", "recent": [{"proj',
    "not JSON": b"pid=4242 host=filler1\n",
    "not text": b"\x00\xff\xfe{",
    "not an object": b"[1, 2]",
    "projects a list": b'{"projects": ["AGBT26A_001_01"]}',
    "a project not an object": b'{"projects": {"AGBT26A_001_01": 3}}',
    "recent not a list": b'{"recent": 7}',
    "a failure without its scan": b'{"failures": [{"project": "AGBT26A_001_01"}]}',
    "a failure's scan not a number": (b'{"failures": [{"project": "P", "scan": "one", "timestamp": "t", '
                                      b'"attempts": 1, "last_error": "e", "retry_at": 0, "given_up": false}]}'),
    "unfinished not a list": b'{"unfinished": "AGBT26A_001_01"}',
    "a project not present without its name": b'{"not_present": [{"state": "not present in /home/gbtdata"}]}',
}


def _damage(out, content: bytes):
    layout = OutputLayout(out)
    layout.state_dir.mkdir(parents=True)
    layout.status_path.write_bytes(content)
    return layout


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_status_is_an_input_error_naming_the_file(tmp_path, content) -> None:
    layout = _damage(tmp_path / "out", content)
    with pytest.raises(InputError, match="online daemon status damaged") as raised:
        read_status(layout)
    assert raised.value.where == str(layout.status_path) and "\n" not in raised.value.one_line()


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_the_daemon_sets_a_damaged_status_aside_and_starts_a_fresh_one(tmp_path, content, capsys, caplog) -> None:
    """It is the daemon's own derived state: said in one warning, kept as .damaged, never a reason not to run."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    layout = _damage(out, content)
    with caplog.at_level(logging.WARNING):
        assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 0
    assert capsys.readouterr().err == ""
    aside = layout.status_path.with_name("online-status.json.damaged")
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING and "\n" not in warning.getMessage()
    assert str(layout.status_path) in warning.getMessage() and str(aside) in warning.getMessage()
    assert aside.read_bytes() == content
    fresh = read_status(layout)
    assert fresh is not None and fresh["activity"] == "stopped" and fresh["out_root"] == str(out)


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_online_status_of_a_damaged_status_is_one_line(tmp_path, content, capsys) -> None:
    layout = _damage(tmp_path / "out", content)
    assert main(["online", "status", "--out-root", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("obsflow: error: online daemon status damaged: ") and str(layout.status_path) in line
    assert captured.out == ""
    assert main(["online", "status", "--out-root", str(tmp_path / "out"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2
    assert layout.status_path.read_bytes() == content  # a reader never moves the daemon's file


def test_online_status_of_a_status_with_few_fields_shows_what_it_has(tmp_path, capsys) -> None:
    """Every field is optional (older versions wrote fewer): none missing is a traceback."""
    _damage(tmp_path / "out", b'{"projects": {}, "last_poll": 0}')
    assert main(["online", "status", "--out-root", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("daemon: not running, pid ? on ?, ?, last poll ")


PLAIN = "/raw/AGBT26A_001_01/VEGAS/2026_12_04_01:00:00B.fits"


@pytest.mark.parametrize(
    ("files", "read_back"),
    [([PLAIN], PLAIN),  # comma-joined, as the fill log has always held lists
     (["/raw/night 2, copy/B.fits", '/raw/"q"/C.fits'], ["/raw/night 2, copy/B.fits", '/raw/"q"/C.fits']),
     (["[x]"], ["[x]"])],
    ids=["plain", "comma-space-quote", "bracket"],
)  # fmt: skip
def test_the_fill_log_gives_back_its_lists_and_texts_as_written(tmp_path, files, read_back):
    layout = OutputLayout(tmp_path)
    record = {"project": "P", "scan": 3, "timestamp": "2026_12_04_01:00:00", "banks": ["A", "C"],
              "filled_at": 1.5, "note": "VEGAS bank B not filled:\ttabs, \"quotes\" and [brackets]",
              "missing_banks": ["B"] * len(files), "missing_files": files, "error": "[Errno 28] No space left"}
    layout.append_fill_log("P", record)
    (back,) = layout.read_fill_logs()
    assert back["banks"] == "A,C" and back["scan"] == 3 and back["filled_at"] == 1.5
    assert back["note"] == record["note"] and back["error"] == record["error"]
    assert back["missing_files"] == read_back
