"""The undo journal puts files back exactly, in O(changed bytes), and survives a crash."""

import os
import signal
import subprocess
import sys

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
