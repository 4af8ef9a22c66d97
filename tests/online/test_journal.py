"""The undo journal puts files back exactly, in O(changed bytes), and survives a crash."""

import json
import os
import signal
import subprocess
import sys

import pytest

from obsflow.errors import IntegrityError
from obsflow.online.journal import Journal, recover, undo_for


def test_rollback_restores_exact_bytes(tmp_path):
    data = tmp_path / "a.fits"
    old = bytes(range(256)) * 40
    data.write_bytes(old)
    created = tmp_path / "b.index"
    journal = Journal(tmp_path / ".journal" / "P.json")
    journal.record(undo_for(data, [(80, 80)]))
    journal.record(undo_for(created))
    journal.save()
    with open(data, "r+b") as handle:
        handle.seek(80)
        handle.write(b"X" * 80)
        handle.seek(0, 2)
        handle.write(b"new rows" * 1000)
    created.write_text("new")
    journal.rollback()
    assert data.read_bytes() == old
    assert not created.exists()
    assert not journal.path.exists()


def test_commit_keeps_new_state(tmp_path):
    data = tmp_path / "a.fits"
    data.write_bytes(b"old")
    journal = Journal(tmp_path / "j.json")
    journal.record(undo_for(data))
    journal.save()
    data.write_bytes(b"old and new")
    journal.commit()
    assert recover(tmp_path / "j.json") == []
    assert data.read_bytes() == b"old and new"


def test_recover_after_sigkill_mid_write(tmp_path):
    data = tmp_path / "a.fits"
    old = b"H" * 2880 + b"D" * 2880
    data.write_bytes(old)
    journal_path = tmp_path / "j.json"
    code = """
import sys, time
from obsflow.online.journal import Journal, undo_for
j = Journal(sys.argv[2]); j.record(undo_for(sys.argv[1], [(0, 2880)])); j.save()
with open(sys.argv[1], 'r+b') as f:
    f.seek(0); f.write(b'N' * 2880); f.flush()
    f.seek(0, 2)
    f.write(b'R' * 65536); f.flush()
    print('writing', flush=True)
    while True:
        f.write(b'R' * 65536); f.flush()
"""
    child = subprocess.Popen([sys.executable, "-c", code, str(data), str(journal_path)], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"writing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert data.stat().st_size > len(old)
    restored = recover(journal_path)
    assert restored == [str(data)]
    assert data.read_bytes() == old
    assert recover(journal_path) == []  # idempotent


def _entry(file, **changes):
    """A journal's file entry as :meth:`Journal.save` writes it, with ``changes`` applied (None: key removed)."""
    entry = {"path": str(file), "old_size": 3, "patches": [[0, "b2xk"]]}
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


WRONG_SHAPES = {
    "a list": lambda path: [],
    "no files": lambda path: {},
    "files not a list": lambda path: {"files": 5},
    "an entry not an object": lambda path: {"files": ["a.fits"]},
    "no path": lambda path: {"files": [_entry(path, path=None)]},
    "no old_size": lambda path: {"files": [{"path": str(path), "patches": []}]},
    "no patches": lambda path: {"files": [_entry(path, patches=None)]},
    "old_size a string": lambda path: {"files": [_entry(path, old_size="3")]},
    "old_size negative": lambda path: {"files": [_entry(path, old_size=-1)]},
    "patches not a list": lambda path: {"files": [_entry(path, patches={"0": "b2xk"})]},
    "a patch of one item": lambda path: {"files": [_entry(path, patches=[[0]])]},
    "a patch offset a string": lambda path: {"files": [_entry(path, patches=[["x", "b2xk"]])]},
    "bad base64": lambda path: {"files": [_entry(path, patches=[[0, "b2x"]])]},
    "base64 with foreign characters": lambda path: {"files": [_entry(path, patches=[[0, "b2xk!!"]])]},
    "a good entry, then a bad one": lambda path: {"files": [_entry(path), _entry(path, old_size=None, patches=5)]},
}


@pytest.mark.parametrize("make_journal", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_a_journal_of_the_wrong_shape_is_one_integrity_error_and_touches_nothing(tmp_path, make_journal):
    """Valid JSON but not what a fill saves: a KeyError/TypeError/binascii.Error traceback before."""
    data = tmp_path / "a.fits"
    data.write_bytes(b"new rows")
    journal_path = tmp_path / "j.json"
    journal_path.write_text(json.dumps(make_journal(data)))
    with pytest.raises(IntegrityError) as caught:
        recover(journal_path)
    message = caught.value.one_line()
    assert message.startswith("journal is unreadable: ") and message.endswith(f"({journal_path})")
    assert "\n" not in message
    assert data.read_bytes() == b"new rows"  # not even the good entry before the bad one was rolled back
    assert journal_path.exists()  # kept, for someone to look at
