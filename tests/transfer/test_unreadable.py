"""A folder that cannot be read is an error, never an empty folder: for the sync and for verify.

The commands run as root without the capabilities that bypass permissions (tests/transfer/nocap.py),
so a folder of mode 000 is really unreadable.  Local trees: over ssh, find already fails.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from tests.transfer.nocap import assert_unreadable, obsflow_nocap

TODAY = date.today()
NIGHT = f"{TODAY:%Y}/{TODAY:%m%d}"


def _local_world(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An instrument's folder with two settled frames tonight, a local archive holding them; the config."""
    source, archive = tmp_path / "inst" / "sha", tmp_path / "suth"
    settled = time.time() - 3600
    for number in (1, 2):
        for root in (source, archive / "74in" / "sha"):
            frame = root / NIGHT / f"SHA_{TODAY:%Y%m%d}.{number:04d}.fits"
            frame.parent.mkdir(parents=True, exist_ok=True)
            frame.write_bytes(b"frame %d" % number)
            os.utime(frame, (settled, settled))
    config = tmp_path / "obsflow.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[instruments.sha]\nsource = "{source}"\npath = "74in/sha"\n'
        f'[archives.suth]\nlocation = "{archive}"\n'
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    return source, archive / "74in" / "sha", config


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    source, dest, config = _local_world(tmp_path)
    yield source, dest, config
    for folder in (source / NIGHT, dest / NIGHT, dest, dest.parent):
        folder.chmod(0o755)  # let pytest clean up


def _verify(config: Path) -> tuple[int, dict]:
    done = obsflow_nocap("verify", "-c", str(config), "--since", TODAY.isoformat(), "--json")
    return done.returncode, json.loads(done.stdout)


def test_verify_says_an_unreadable_dated_folder_was_not_checked(world) -> None:
    source, _dest, config = world
    assert _verify(config)[0] == 0  # all well while readable
    (source / NIGHT).chmod(0)
    assert_unreadable(source / NIGHT)
    code, report = _verify(config)
    (folder,) = report["folders"]
    assert (code, folder["status"]) == (2, "not checked")
    assert folder["error"] == f"cannot list {source}: cannot list {source / NIGHT}: Permission denied"


def test_verify_says_an_unsearchable_root_was_not_checked(world) -> None:
    _source, dest, config = world
    dest.parent.chmod(0o600)  # 74in: its entries cannot be reached
    done = obsflow_nocap("verify", "-c", str(config), "--since", TODAY.isoformat(), "--json")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (folder,) = json.loads(done.stdout)["folders"]
    assert folder["status"] == "not checked" and "Permission denied" in folder["error"]


def test_the_sync_fails_the_hop_on_an_unreadable_source_folder(world) -> None:
    source, dest, config = world
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    (source / NIGHT).chmod(0)
    done = obsflow_nocap("sync", "-c", str(config))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert line == f"instruments:suth sha: FAILED: cannot list {source / NIGHT}: Permission denied"


def test_the_sync_fails_the_hop_on_an_unsearchable_destination_root(world) -> None:
    _source, dest, config = world
    dest.parent.chmod(0o600)
    done = obsflow_nocap("sync", "-c", str(config))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert line.startswith("instruments:suth sha: FAILED: cannot list ") and "Permission denied" in line


def test_verify_checksum_reports_an_unreadable_file_as_not_compared(world) -> None:
    source, _dest, config = world
    frame = next(iter(sorted((source / NIGHT).iterdir())))
    frame.chmod(0)
    done = obsflow_nocap("verify", "-c", str(config), "--since", TODAY.isoformat(), "--checksum", "--json")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (folder,) = json.loads(done.stdout)["folders"]
    assert folder["unhashed"] == [f"{NIGHT}/{frame.name}"] and folder["hash_error"] is None
    assert folder["matched"] == 1


@pytest.fixture(scope="module")
def sshd_nocap(tmp_path_factory) -> Iterator:
    """The loopback sshd, its sessions without the capabilities that bypass permissions."""
    from obsflow.simulate.sshd import start_sshd
    from tests.transfer.nocap import NOCAP

    server = start_sshd(tmp_path_factory.mktemp("sshd-nocap"), launcher=NOCAP)
    yield server
    server.stop()


def _over_ssh(config: Path, server) -> None:
    """The same world with the instrument's source and the archive read over ssh."""
    text = config.read_text()
    for key in ("source", "location"):
        text = text.replace(f'{key} = "/', f'{key} = "sha.test:/')
    config.write_text(text + f"[ssh]\noptions = {list(server.ssh_options)!r}\n".replace("'", '"'))


def test_over_ssh_an_unreadable_dated_folder_fails_the_hop_and_is_not_checked(world, sshd_nocap) -> None:
    source, dest, config = world
    _over_ssh(config, sshd_nocap)
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    (source / NIGHT).chmod(0)
    done = obsflow_nocap("sync", "-c", str(config))
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert line.endswith(f"cannot list {source}/{NIGHT}: cannot enter the folder (sha.test)")
    assert list((dest / NIGHT).iterdir()) == []
    code, report = _verify(config)
    (folder,) = report["folders"]
    assert (code, folder["status"]) == (2, "not checked")
    assert "cannot enter the folder" in folder["error"]


def test_over_ssh_an_unsearchable_archive_folder_is_not_checked_not_missing(world, sshd_nocap) -> None:
    _source, dest, config = world
    _over_ssh(config, sshd_nocap)
    dest.chmod(0)  # 74in/sha: there, but cannot be entered
    code, report = _verify(config)
    (folder,) = report["folders"]
    assert (code, folder["status"], folder["missing"]) == (2, "not checked", [])
    assert f"cannot list {dest}: cannot enter the folder" in folder["error"]


def test_a_state_folder_this_user_cannot_enter_is_one_line_for_a_sync_and_a_dry_run(world, tmp_path) -> None:
    _source, _dest, config = world
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0)
    try:
        for args, what in ((["-n"], "cannot open catalog"), ([], "cannot take the run lock")):
            done = obsflow_nocap("sync", "-c", str(config), *args)
            assert done.returncode == 2, (done.stdout, done.stderr)
            name = "catalog.sqlite" if args else "sync.lock"
            assert done.stderr.strip().splitlines() == [f"obsflow: error: {what}: Permission denied ({state}/{name})"]
    finally:
        state.chmod(0o755)


def test_a_state_folder_the_account_cannot_make_is_named_as_such(tmp_path) -> None:
    # as the obsflow account with state_dir = /var/lib/obsflow not made yet: the message named the
    # run lock ("cannot take the run lock: Permission denied (.../sync.lock)"), not the folder
    parent = tmp_path / "varlib"
    parent.mkdir(mode=0o555)
    config = tmp_path / "obsflow.toml"
    config.write_text(f'state_dir = "{parent / "obsflow"}"\n[instruments.sha]\nsource = "{tmp_path}"\n'
                      f'[archives.suth]\nlocation = "{tmp_path}/suth"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n')  # fmt: skip
    done = obsflow_nocap("sync", "-c", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"obsflow: error: cannot create state folder: Permission denied ({parent / 'obsflow'})"


def _with_locks(config: Path, locks: str) -> None:
    """The world's config honouring the filler's lock folder ``locks`` (a top-level key: before any table)."""
    config.write_text(f'locks = ["{locks}"]\n' + config.read_text())


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_a_lock_folder_this_user_cannot_read_stops_the_hop(world, tmp_path, sshd_nocap, remote) -> None:
    # found by docs review: docs/transfer.md says a `locks` folder that cannot be read stops the hops
    # (exit 2) "rather than copy as if nothing were locked"; such a folder read as empty, and a
    # project the filler was writing was copied half-written
    _source, dest, config = world
    if remote:
        _over_ssh(config, sshd_nocap)
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / f"{TODAY:%m%d}.lock").write_text("{}")  # guards tonight's folder
    _with_locks(config, f"sha.test:{locks}" if remote else str(locks))
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    locks.chmod(0)
    try:
        done = obsflow_nocap("sync", "-c", str(config))
    finally:
        locks.chmod(0o755)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert "FAILED: cannot read the filler's locks: " in line and line.endswith(f"{locks})"), line
    assert list((dest / NIGHT).iterdir()) == []


def test_a_lock_file_this_user_cannot_read_still_locks(world, tmp_path) -> None:
    # found by docs review: an unreadable lock file made the sync stop with a traceback (internal error)
    _source, dest, config = world
    locks = tmp_path / "locks"
    locks.mkdir()
    lock = locks / f"{TODAY:%m%d}.lock"
    lock.write_text("{}")
    lock.chmod(0)
    _with_locks(config, str(locks))
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    done = obsflow_nocap("sync", "-c", str(config), "--json")
    assert "Traceback" not in done.stderr
    assert done.returncode == 1, (done.stdout, done.stderr)
    (hop,) = json.loads(done.stdout)["hops"]
    assert (hop["copied"], hop["locked"]) == (0, 2)
    assert list((dest / NIGHT).iterdir()) == []


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_a_lock_folder_that_does_not_exist_is_said_once(world, tmp_path, sshd_nocap, remote) -> None:
    """A missing lock folder holds no lock (no filler has written there yet), but a mistyped path
    would honour nothing for ever without a word: the run says so, once, and copies as before."""
    _source, dest, config = world
    if remote:
        _over_ssh(config, sshd_nocap)
    missing = tmp_path / "sdfits" / "lcoks"
    _with_locks(config, f"sha.test:{missing}" if remote else str(missing))
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    done = obsflow_nocap("sync", "-c", str(config))
    assert done.returncode == 0, (done.stdout, done.stderr)
    said = [line for line in done.stderr.splitlines() if "does not exist" in line]
    assert len(said) == 1 and str(missing) in said[0] and "no filler lock is honoured there" in said[0], done.stderr
    assert len(list((dest / NIGHT).iterdir())) == 2


def test_a_remote_lock_folder_behind_a_folder_this_user_cannot_search_stops_the_hop(world, tmp_path, sshd_nocap):
    """Over ssh, `[ -e locks ]` is false both when the folder is missing and when its parent
    cannot be searched: the second is not "no lock", it is a folder the sync cannot read."""
    _source, dest, config = world
    _over_ssh(config, sshd_nocap)
    parent = tmp_path / "sdfits"
    (parent / "locks").mkdir(parents=True)
    (parent / "locks" / f"{TODAY:%m%d}.lock").write_text("{}")
    _with_locks(config, f"sha.test:{parent / 'locks'}")
    for frame in (dest / NIGHT).iterdir():
        frame.unlink()
    parent.chmod(0o600)  # readable, not searchable
    try:
        done = obsflow_nocap("sync", "-c", str(config))
    finally:
        parent.chmod(0o755)
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert "cannot read the filler's locks: " in line and "cannot enter the folder" in line, line
    assert list((dest / NIGHT).iterdir()) == []


def test_a_file_where_the_state_folder_should_be_is_named_as_such(tmp_path: Path) -> None:
    """Not "File exists", errno's words for a file that is in the way."""
    from obsflow.config import make_state_folder
    from obsflow.errors import OutputError

    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as caught:
        make_state_folder(blocker)
    assert caught.value.one_line() == f"cannot create state folder: a file of that name is in the way ({blocker})"
    assert blocker.read_text() == "not a folder"
