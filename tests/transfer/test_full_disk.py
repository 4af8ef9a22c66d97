"""Full disks during a sync.  The archive's: one clear line, the finished files counted, nothing
half-written under a final name, and the next run (after space is freed) completes the copy.
The state folder's (the catalog): one line, exit 2.  The temp folder's: no effect.

Real parts: a 1 MiB tmpfs as the archive's disk (mounted by the test; the suite runs as root), real
rsync, and for the remote archive the loopback sshd (rsync pushes, so the files are reported by
the sending side before the receiver has checked and renamed them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.transfer.catalog import Catalog
from tests.transfer.conftest import ssh_config

KiB = 1024


def _tmpfs(mount: Path, size: str):
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the full-disk test: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def small_archive(tmp_path: Path):
    """A real 1 MiB filesystem for the archive; the test grows it with ``mount -o remount``."""
    yield from _tmpfs(tmp_path / "archive", "1m")


@pytest.fixture
def nearly_full_tmp(tmp_path: Path):
    """A real 64 KiB filesystem with 16 KiB left, as the temp folder."""
    for mount in _tmpfs(tmp_path / "tmp", "64k"):
        (mount / "filler").write_bytes(bytes(48 * KiB))
        yield mount


@pytest.fixture
def small_state(tmp_path: Path):
    """A real 160 KiB filesystem for the sync's state folder (its catalog)."""
    yield from _tmpfs(tmp_path / "state", "160k")


def _night(root: Path) -> dict[str, bytes]:
    """Five settled 300 KiB frames of tonight: 1.5 MiB, more than the archive holds."""
    today = date.today()
    folder = root / f"{today:%Y}" / f"{today:%m%d}"
    folder.mkdir(parents=True)
    settled = time.time() - 3600
    frames = {}
    for i in range(1, 6):
        path = folder / f"SHA_{today:%Y%m%d}.{i:04d}.fits"
        path.write_bytes(os.urandom(300 * KiB))
        os.utime(path, (settled, settled))
        frames[str(path.relative_to(root))] = path.read_bytes()
    return frames


def _files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (hidden partials included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_a_full_archive_disk_stops_the_hop_with_one_line_and_counts_only_finished_files(
    tmp_path: Path, sshd, small_archive: Path, capsys, archive_host: str
) -> None:
    source = tmp_path / "sha"
    frames = _night(source)
    location = str(small_archive) if archive_host == "local" else f"cape.test:{small_archive}"
    config_path = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
        f'[archives.cape]\nlocation = "{location}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n',
    )
    copies = small_archive / "sha"

    assert main(["sync", "-c", str(config_path), "--json"]) == 2  # could not finish: the disk is full
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert hop["failure"].startswith("destination disk full: ") and "No space left on device" in hop["failure"]
    assert "\n" not in hop["failure"]
    there = _files_under(copies)
    finished = {path: data for path, data in there.items() if "/." not in f"/{path}"}  # final names only
    assert 1 <= len(finished) < len(frames)
    assert all(frames[path] == data for path, data in finished.items())  # whole and equal, never partial
    assert sorted(hop["copied_files"]) == sorted(finished)  # reported == really there
    with Catalog(load_config(config_path).catalog_path) as catalog:
        assert sorted(catalog.copied_here("cape", "sha", list(frames))) == sorted(finished)
    assert _files_under(source) == frames  # the source untouched

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_archive)], check=True)  # space freed
    assert main(["sync", "-c", str(config_path), "--json"]) == 0
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert sorted(hop["copied_files"]) == sorted(set(frames) - set(finished))
    finals = {p: d for p, d in _files_under(copies).items() if "/." not in f"/{p}"}
    assert finals == frames  # byte for byte


def test_a_nearly_full_temp_folder_does_not_stop_a_sync(tmp_path: Path, nearly_full_tmp: Path, monkeypatch) -> None:
    # rsync's report (a line per file, ~250 KiB here) is kept in memory, not in a temp file.
    monkeypatch.setattr(tempfile, "tempdir", str(nearly_full_tmp))
    config_path = _many_tiny_files(tmp_path, tmp_path / "state")
    assert main(["sync", "-c", str(config_path)]) == 0
    assert len(list((tmp_path / "suth" / "sha").rglob("*.fits"))) == 3000


def _many_tiny_files(tmp_path: Path, state: Path) -> Path:
    """3000 settled one-byte frames of tonight and a config syncing them to a local archive."""
    source = tmp_path / "sha"
    night = source / f"{date.today():%Y}" / f"{date.today():%m%d}"
    night.mkdir(parents=True)
    settled = time.time() - 3600
    for i in range(3000):
        (night / f"SHA_{i:05d}.fits").write_bytes(b"x")
        os.utime(night / f"SHA_{i:05d}.fits", (settled, settled))
    (tmp_path / "suth").mkdir()
    config_path = tmp_path / "obsflow.toml"
    config_path.write_text(
        f'state_dir = "{state}"\n[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
        f'[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    return config_path


def test_a_full_state_disk_is_one_line_and_exit_2(tmp_path: Path, small_state: Path, capsys) -> None:
    config_path = _many_tiny_files(tmp_path, small_state)  # more catalog rows than 160 KiB hold
    assert main(["sync", "-c", str(config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"obsflow: error: cannot write catalog: database or disk is full ({small_state / 'catalog.sqlite'})"]


def test_an_archive_source_whose_folder_is_missing_fails_its_hop(tmp_path: Path, sshd, capsys) -> None:
    # suth's disk is not mounted: its folder is not there; the hop must not report an empty archive as ok.
    suth, cape = tmp_path / "suth", tmp_path / "cape"
    cape.mkdir()
    config = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
        f'[archives.suth]\nlocation = "sha.test:{suth}"\n[archives.cape]\nlocation = "{cape}"\n'
        '[[hops]]\nfrom = "suth"\nto = "cape"\n',
    )
    assert main(["sync", "-c", str(config), "--json"]) == 2
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert hop["failure"] == f"archive folder missing (disk not mounted?) (sha.test:{suth})"
    suth.mkdir()  # mounted, and nothing of sha copied there yet: fine
    assert main(["sync", "-c", str(config), "--json"]) == 0
    capsys.readouterr()


@pytest.fixture
def inodes_for_staging(tmp_path: Path):
    """A real filesystem for the archive with 6 inodes: its root, sha, the staging folder and its 2
    folders, the staged copy; none left for the final folders (the test adds some with a remount)."""
    yield from _tmpfs(tmp_path / "archive", "1m,nr_inodes=6")


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_a_disk_full_when_a_staged_copy_takes_its_final_name_stops_the_hop_and_the_next_run_completes(
    tmp_path: Path, sshd, inodes_for_staging: Path, archive_host: str
) -> None:
    """The staged copy is in; its final folder cannot be made (no inode left).  Found by staging
    review: locally an internal error (OSError, a traceback) ended the whole sync."""
    archive = inodes_for_staging
    source = tmp_path / "sha"
    frame = source / "2026/1201/SHA_a\nb.fits"  # a name with a newline: the FAILED line stays one line
    frame.parent.mkdir(parents=True)
    frame.write_bytes(os.urandom(100 * KiB))
    recent = time.time() - 600  # modified within the hour: staged
    os.utime(frame, (recent, recent))
    location = str(archive) if archive_host == "local" else f"cape.test:{archive}"
    config_path = ssh_config(tmp_path, sshd, f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
                             f'[archives.cape]\nlocation = "{location}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n')  # fmt: skip
    command = ["sync", "-c", str(config_path), "-d", "2026-12-01", "--json"]
    plain = subprocess.run([sys.executable, "-m", "obsflow", *command[:-1]], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert plain.returncode == 2 and not any(line.startswith("b.fits") for line in plain.stdout.splitlines())
    done = subprocess.run([sys.executable, "-m", "obsflow", *command], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "internal error" not in done.stderr, done.stderr
    (hop,) = json.loads(done.stdout)["hops"]
    assert "No space left on device" in hop["failure"] and hop["copied_files"] == [], hop
    assert not (archive / "sha/2026/1201/SHA_a\nb.fits").exists()

    subprocess.run(["mount", "-o", "remount,nr_inodes=64", str(archive)], check=True)  # space freed
    again = subprocess.run([sys.executable, "-m", "obsflow", *command], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (archive / "sha/2026/1201/SHA_a\nb.fits").read_bytes() == frame.read_bytes()


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_staged_copies_moved_before_a_disk_filled_are_counted_and_not_copied_again(
    tmp_path: Path, sshd, archive_host: str
) -> None:
    """Yesterday's and today's staged copies are in; yesterday's takes its final name, today's final
    folder cannot be made (no inode left).  Before, the hop failed with nothing counted: the copy
    under its final name was in no report and no catalog until a later run hashed it."""
    source = tmp_path / "sha"
    today = date.today()
    frames = {}
    for day in (today - timedelta(days=1), today):
        path = source / f"{day:%Y/%m%d}/SHA_{day:%Y%m%d}.0001.fits"
        path.parent.mkdir(parents=True)
        path.write_bytes(os.urandom(50 * KiB))
        recent = time.time() - 600  # modified within the hour: staged
        os.utime(path, (recent, recent))
        frames[str(path.relative_to(source))] = path
    first, second = sorted(frames)
    # root, sha, the staging folder, its dated folders, two staged copies; then the first's final
    # folders, and locally its link() (tmpfs counts each hard link as an inode; over ssh, where ln
    # fails, the script moves the copy after its check)
    folders = lambda *paths: {"/".join(p.split("/")[:i]) for p in paths for i in (1, 2)}
    inodes = 3 + len(folders(first, second)) + 2 + len(folders(first)) + (archive_host == "local")
    archive = tmp_path / "archive"
    mounted = _tmpfs(archive, f"1m,nr_inodes={inodes}")
    next(mounted)
    try:
        location = str(archive) if archive_host == "local" else f"cape.test:{archive}"
        config_path = ssh_config(tmp_path, sshd, f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
                                 f'[archives.cape]\nlocation = "{location}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n')  # fmt: skip
        command = [sys.executable, "-m", "obsflow", "sync", "-c", str(config_path), "--days", "2", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 2 and "internal error" not in done.stderr, done.stderr
        (hop,) = json.loads(done.stdout)["hops"]
        assert "No space left on device" in hop["failure"], hop
        assert (archive / "sha" / first).read_bytes() == frames[first].read_bytes()
        assert not (archive / "sha" / second).exists()
        assert hop["copied_files"] == [first], hop  # counted in the run that moved it
        with Catalog(load_config(config_path).catalog_path) as catalog:
            assert catalog.copied_here("cape", "sha", list(frames)) == {first}

        subprocess.run(["mount", "-o", "remount,nr_inodes=64", str(archive)], check=True)  # space freed
        again = subprocess.run(command, capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        (hop,) = json.loads(again.stdout)["hops"]
        assert hop["copied_files"] == [second], hop
        assert (archive / "sha" / second).read_bytes() == frames[second].read_bytes()
    finally:
        next(mounted, None)
