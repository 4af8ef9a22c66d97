"""An archive whose disk is not mounted is never written beneath, nor taken for an empty archive.

Real parts: a tmpfs mounted and unmounted by the test (the suite runs as root) as the archive's
disk, real rsync, and the loopback sshd for the remote side.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import ARCHIVE_MARKER
from tests.transfer.conftest import ssh_config


def _night(root: Path) -> str:
    """One settled frame of tonight under ``root``; its path relative to it."""
    today = date.today()
    frame = root / f"{today:%Y}" / f"{today:%m%d}" / f"SHA_{today:%Y%m%d}.0001.fits"
    frame.parent.mkdir(parents=True)
    frame.write_bytes(b"frame")
    settled = time.time() - 3600
    os.utime(frame, (settled, settled))
    return str(frame.relative_to(root))


def _mount(point: Path) -> None:
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the test: {result.stderr.decode().strip()}")


@pytest.fixture
def archive_disk(tmp_path: Path):
    """A mount point (``tmp_path/disk``) and its disk, mounted, holding the archive's marker file."""
    point = tmp_path / "disk"
    point.mkdir()
    _mount(point)
    (point / ARCHIVE_MARKER).write_text("obsflow archive\n")
    yield point
    subprocess.run(["umount", str(point)], check=False)


def _sync(config: Path, capsys) -> tuple[int, dict]:
    code = main(["sync", "-c", str(config), "--json"])
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    return code, hop


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_an_archive_requiring_its_marker_is_not_written_while_its_disk_is_unmounted(
    tmp_path: Path, sshd, archive_disk: Path, capsys, archive_host: str
) -> None:
    frame = _night(tmp_path / "sha")
    location = str(archive_disk) if archive_host == "local" else f"cape.test:{archive_disk}"
    config = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
        f'[archives.cape]\nlocation = "{location}"\nrequire_marker = true\n[[hops]]\nfrom = "instruments"\nto = "cape"\n',
    )
    subprocess.run(["umount", str(archive_disk)], check=True)  # the mount point stays, an empty folder

    code, hop = _sync(config, capsys)
    assert code == 2
    assert hop["failure"] == f"archive marker file {archive_disk / ARCHIVE_MARKER} missing (disk not mounted?) " \
                             f"({location}/sha)"  # fmt: skip
    assert list(archive_disk.iterdir()) == []  # nothing written on the disk beneath

    _mount(archive_disk)  # mounted again, but this disk is not the archive's: still no marker
    code, hop = _sync(config, capsys)
    assert code == 2 and "marker" in hop["failure"] and list(archive_disk.iterdir()) == []

    (archive_disk / ARCHIVE_MARKER).write_text("obsflow archive\n")
    code, hop = _sync(config, capsys)
    assert (code, hop["failure"], hop["copied"]) == (0, None, 1)
    assert (archive_disk / "sha" / frame).read_bytes() == b"frame"


def test_an_unmounted_source_archive_requiring_its_marker_fails_its_hop(tmp_path: Path, sshd, archive_disk: Path,
                                                                         capsys) -> None:  # fmt: skip
    # suth's disk unmounted: its mount point would pass for an archive with nothing copied yet.
    cape = tmp_path / "cape"
    cape.mkdir()
    config = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
        f'[archives.suth]\nlocation = "sha.test:{archive_disk}"\nrequire_marker = true\n'
        f'[archives.cape]\nlocation = "{cape}"\n[[hops]]\nfrom = "suth"\nto = "cape"\n',
    )
    assert _sync(config, capsys)[0] == 0  # mounted, nothing of sha there yet: fine
    subprocess.run(["umount", str(archive_disk)], check=True)
    code, hop = _sync(config, capsys)
    assert code == 2
    assert hop["failure"] == f"archive marker file {archive_disk / ARCHIVE_MARKER} missing (disk not mounted?) " \
                             f"(sha.test:{archive_disk}/sha)"  # fmt: skip


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_a_destination_archive_whose_folder_is_missing_is_not_created(tmp_path: Path, sshd, capsys,
                                                                     archive_host: str) -> None:  # fmt: skip
    # The disk is mounted at /data and the archive is /data/archive: unmounted, the folder is gone.
    frame = _night(tmp_path / "sha")
    archive = tmp_path / "data" / "archive"
    archive.parent.mkdir()
    location = str(archive) if archive_host == "local" else f"cape.test:{archive}"
    config = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
        f'[archives.cape]\nlocation = "{location}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n',
    )
    code, hop = _sync(config, capsys)
    assert (code, hop["failure"]) == (2, f"archive folder missing (disk not mounted?) ({location})")
    assert list(archive.parent.iterdir()) == []

    assert main(["sync", "-c", str(config), "--dry-run"]) == 2  # a dry run says so too
    capsys.readouterr()

    archive.mkdir()  # mounted (or made once, for a new archive)
    code, hop = _sync(config, capsys)
    assert (code, hop["copied"]) == (0, 1)
    assert (archive / "sha" / frame).read_bytes() == b"frame"
