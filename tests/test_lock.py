"""Lock files: exclusive, waited on with a timeout, stale ones cleared."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from obsflow.errors import LockError
from obsflow.lock import held, is_locked, live_locks, lock_path, read_lock, take_lock


def test_lock_records_holder_and_is_released(tmp_path):
    with held(tmp_path, "AGBT26A_001_01", purpose="fill") as path:
        info = read_lock(path)
        assert info.pid == os.getpid() and info.host == socket.gethostname() and info.purpose == "fill"
        assert is_locked(tmp_path, "AGBT26A_001_01")
        assert live_locks(tmp_path) == {"AGBT26A_001_01"}
    assert not path.exists()
    assert live_locks(tmp_path) == set()


def test_second_taker_waits_then_fails_naming_the_holder(tmp_path):
    # A real other process holds the lock.
    code = (
        "import sys,time; from obsflow.lock import take_lock; take_lock(sys.argv[1], 'P'); "
        "print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(LockError) as err:
            take_lock(tmp_path, "P", timeout_s=0.5)
        assert time.monotonic() - start >= 0.5
        assert f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the lock is stale and is cleared.
    assert not is_locked(tmp_path, "P")
    path = take_lock(tmp_path, "P", timeout_s=0.5)
    assert read_lock(path).pid == os.getpid()


def test_waiter_gets_lock_when_holder_releases(tmp_path):
    code = "import sys,time; from obsflow.lock import held\nwith held(sys.argv[1], 'P'):\n print('held', flush=True); time.sleep(0.7)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    path = take_lock(tmp_path, "P", timeout_s=10)
    assert read_lock(path).pid == os.getpid()
    holder.wait()


def test_lock_from_another_host_is_stale_only_by_age(tmp_path):
    path = lock_path(tmp_path, "P")
    record = {"pid": 999999, "host": "elsewhere", "user": "x", "started": time.time(), "purpose": ""}
    path.write_text(json.dumps(record))
    assert is_locked(tmp_path, "P")
    record["started"] = time.time() - 7 * 3600
    path.write_text(json.dumps(record))
    assert not is_locked(tmp_path, "P")


def test_a_lock_on_this_host_lives_as_long_as_the_process_that_took_it(tmp_path):
    # The filler daemon holds its lock for weeks: age alone must not free it on its own host.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        path = lock_path(tmp_path, "daemon")
        record = {"pid": holder.pid, "host": socket.gethostname(), "user": "x", "started": time.time(),
                  "purpose": "the filler daemon"}  # fmt: skip
        path.write_text(json.dumps(record))
        time.sleep(1.5)
        assert is_locked(tmp_path, "daemon", stale_after_s=1.0)  # older than the limit, its process alive
        record["started"] = time.time() - 3600  # "taken" an hour before its pid's process began: a reused pid
        path.write_text(json.dumps(record))
        assert not is_locked(tmp_path, "daemon", stale_after_s=1e9)
    finally:
        holder.kill()
        holder.wait()
    record["started"] = time.time()
    path.write_text(json.dumps(record))
    assert not is_locked(tmp_path, "daemon")  # its process is gone


def test_a_killed_taker_never_leaves_a_half_written_lock(tmp_path):
    # Many takers killed at random instants: every lock left behind is whole and stale.
    import random

    rng = random.Random(5)
    code = "import sys; from obsflow.lock import take_lock\nwhile True:\n take_lock(sys.argv[1], 'P', timeout_s=60)\n import os; os.unlink(sys.argv[1] + '/P.lock')"
    for _ in range(15):
        child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
        time.sleep(rng.uniform(0.3, 0.6))
        child.kill()
        child.wait()
        info = read_lock(lock_path(tmp_path, "P"))
        assert info is None or info.purpose != "unreadable"
        assert not is_locked(tmp_path, "P")
    take_lock(tmp_path, "P", timeout_s=5)  # the next taker also clears temp files the dead left behind
    assert sorted(p.name for p in tmp_path.iterdir()) in (["P.lock"], [".P.lock.break", "P.lock"])  # (+ the side file)


def test_foreign_garbage_lock_is_live_then_stale_by_age(tmp_path):
    path = lock_path(tmp_path, "P")
    path.write_text("not json")
    assert is_locked(tmp_path, "P")
    old = time.time() - 120
    os.utime(path, (old, old))
    assert not is_locked(tmp_path, "P")


def test_a_lock_emptied_by_a_crash_of_the_machine_is_stale_at_once(tmp_path, monkeypatch):
    """Locks are not flushed: after a power cut one may come back empty.  Older than this boot, it is
    cleared at once (not after the 60 s an unreadable lock written since the boot is given)."""
    import obsflow.lock as lock_module

    assert lock_module._boot_time() is not None  # Linux: /proc/stat's btime
    booted = time.time() - 5  # a machine that restarted 5 s ago
    monkeypatch.setattr(lock_module, "_boot_time", lambda: float(int(booted)))
    path = lock_path(tmp_path, "P")
    path.write_text("")
    assert is_locked(tmp_path, "P")  # written since the boot: another program's, or being written
    os.utime(path, (booted - 10, booted - 10))  # 15 s old: within the 60 s, but before the boot
    assert not is_locked(tmp_path, "P")
    with held(tmp_path, "P", timeout_s=0):  # taken at once, no wait
        assert read_lock(path).pid == os.getpid()


def test_two_takers_clearing_the_same_stale_lock_never_both_hold_it(tmp_path, monkeypatch):
    import threading

    from obsflow import lock as lockmod

    path = lock_path(tmp_path, "P")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "user": "x", "started": time.time(),
                                "purpose": "a filler that died"}))  # fmt: skip
    stale = read_lock(path)
    real_read = lockmod.read_lock

    def slow_for_the_first(p):  # the first clearer is slow between reading the lock and removing it
        info = real_read(p)
        if threading.current_thread().name == "first":
            time.sleep(0.4)
        return info

    monkeypatch.setattr(lockmod, "read_lock", slow_for_the_first)
    first = threading.Thread(target=lockmod._remove_if_same, args=(path, stale), name="first")
    first.start()
    time.sleep(0.1)
    taken = take_lock(tmp_path, "P", timeout_s=3, purpose="the second taker")  # finds the same stale lock
    first.join()
    holder = real_read(taken)
    assert holder is not None and holder.purpose == "the second taker"  # its fresh lock was not removed
