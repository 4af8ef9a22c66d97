"""staging.py: staged copies take their final names, never over someone else's file (local and over ssh)."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pytest

from obsflow.config import WHOLE_ROOT, load_config, parse_location
from obsflow.transfer.listing import STAGING_DIR, list_files
from obsflow.transfer.remote import Shell
from obsflow.transfer.staging import clear_staging, publish
from obsflow.transfer.sync import SyncRequest, run_sync
from tests.transfer.conftest import ssh_config


def _where(root: Path, remote: bool) -> str:
    return f"cape.test:{root}" if remote else str(root)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_publish_moves_new_copies_and_grown_ones_and_never_takes_a_name_in_use(tmp_path, sshd, remote) -> None:
    root = tmp_path / "archive"
    staging = root / STAGING_DIR
    for path, body in (("2026/1202/new.fits", b"new"), ("2026/1202/taken.fits", b"ours"), ("p/grown.fits", b"v2"),
                       ("a b/it's.fits", b"odd name")):  # fmt: skip
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(body)
    (root / "2026/1202").mkdir(parents=True)
    (root / "2026/1202/taken.fits").write_bytes(b"someone else's")
    (root / "p").mkdir()
    (root / "p/grown.fits").write_bytes(b"v1")
    shell = Shell(tuple(sshd.ssh_options))
    done = publish(parse_location(_where(root, remote)), ["2026/1202/new.fits", "2026/1202/taken.fits",
                   "a b/it's.fits", "2026/1202/never-staged.fits"], ["p/grown.fits"], ".obsflow-superseded/v1",
                   shell)  # fmt: skip
    assert sorted(done.moved) == ["2026/1202/new.fits", "a b/it's.fits", "p/grown.fits"]
    assert done.name_taken == ["2026/1202/taken.fits"]
    assert (root / "2026/1202/new.fits").read_bytes() == b"new" and (root / "a b/it's.fits").read_bytes() == b"odd name"
    assert (root / "2026/1202/taken.fits").read_bytes() == b"someone else's"  # never overwritten
    assert (staging / "2026/1202/taken.fits").read_bytes() == b"ours"  # left for the caller to remove
    assert (root / "p/grown.fits").read_bytes() == b"v2"
    assert (root / ".obsflow-superseded/v1/p/grown.fits").read_bytes() == b"v1"  # the older copy, whole
    assert not (root / "2026/1202/never-staged.fits").exists()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_leftover_staged_copies_become_partials_and_are_never_listed(tmp_path, sshd, remote) -> None:
    root = tmp_path / "archive"
    staged, partial = root / STAGING_DIR / "2026/1202/SHA_1.fits", root / STAGING_DIR / "2026/1202/.rsync-partial/SHA_2.fits"
    for path in (staged, partial, root / "2026/1202/SHA_0.fits"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"frame")
    where, shell = parse_location(_where(root, remote)), Shell(tuple(sshd.ssh_options))
    listed = list_files(where, [WHOLE_ROOT], ("*.fits",), shell)
    assert sorted(listed) == ["2026/1202/SHA_0.fits"] and listed.staged and not listed.temps
    temp, shorter = staged.parent / ".SHA_3.fits.aB3xYz", staged.parent / ".SHA_2.fits.Qw12er"  # SIGKILLed rsyncs'
    temp.write_bytes(b"half")
    shorter.write_bytes(b"fr")
    clear_staging(where, shell)
    assert not staged.exists() and partial.read_bytes() == b"frame" and (root / "2026/1202/SHA_0.fits").exists()
    # what a stopped run left is kept only as partials, from which the next copies resume (found by
    # staging review: a SIGKILLed rsync's temp was removed, and the big file sent again from byte 0)
    assert sorted(p.name for p in staged.parent.iterdir()) == [".rsync-partial"]
    kept = {p.name: p.read_bytes() for p in (staged.parent / ".rsync-partial").iterdir()}
    assert kept == {"SHA_1.fits": b"frame", "SHA_2.fits": b"frame", "SHA_3.fits": b"half"}


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_publish_never_writes_through_a_symlinked_or_file_folder_on_the_way(tmp_path, sshd, remote) -> None:
    """Found by staging review: publish made the final name's folders with mkdir -p and renamed into
    them, following a symlink at the destination out of the root (rsync itself refuses to); a file
    in place of a folder ended a local run with a traceback."""
    root, outside = tmp_path / "archive", tmp_path / "elsewhere"
    staging = root / STAGING_DIR
    for path in ("p/a.fits", "q/b.fits", "r/grown.fits"):
        (staging / path).parent.mkdir(parents=True, exist_ok=True)
        (staging / path).write_bytes(b"new")
    outside.mkdir()
    (outside / "grown.fits").write_bytes(b"someone's")
    (root / "p").symlink_to(outside)  # someone else's link, leading out of the root
    (root / "q").write_bytes(b"a file, not a folder")
    (root / "r").mkdir()
    (root / "r/grown.fits").write_bytes(b"v1")
    (root / ".obsflow-superseded").symlink_to(outside)
    shell = Shell(tuple(sshd.ssh_options))
    done = publish(parse_location(_where(root, remote)), ["p/a.fits", "q/b.fits"], ["r/grown.fits"],
                   ".obsflow-superseded/v1", shell)  # fmt: skip
    assert done.moved == [] and sorted(done.name_taken) == ["p/a.fits", "q/b.fits", "r/grown.fits"]
    assert sorted(p.name for p in outside.rglob("*")) == ["grown.fits"] and (outside / "grown.fits").read_bytes() == b"someone's"
    assert (root / "q").read_bytes() == b"a file, not a folder" and (root / "r/grown.fits").read_bytes() == b"v1"


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_a_staging_folder_that_is_a_symlink_is_never_copied_through(tmp_path, sshd, remote) -> None:
    """Found by staging review: rsync wrote the staged copies wherever someone's symlink
    ``.obsflow-staging`` led (``--copy-dest=..`` then read that folder's parent), and publish moved
    them from there; clear_staging skipped such a link silently.  Now the hop stops, nothing written."""
    source, archive, elsewhere = tmp_path / "sha", tmp_path / "archive", tmp_path / "elsewhere"
    frame = source / "2026/1201/SHA_1.fits"
    frame.parent.mkdir(parents=True)
    frame.write_bytes(b"frame")
    recent = time.time() - 600  # settled, but modified within the hour: staged
    os.utime(frame, (recent, recent))
    (archive / "sha").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "theirs.txt").write_text("someone's")
    (archive / "sha" / STAGING_DIR).symlink_to(elsewhere)
    where = f"cape.test:{archive}" if remote else str(archive)
    config = load_config(ssh_config(tmp_path, sshd, f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
                                    f'[archives.a]\nlocation = "{where}"\n[[hops]]\nfrom = "instruments"\nto = "a"\n'))  # fmt: skip
    report = run_sync(config, SyncRequest(date=date(2026, 12, 1)))
    (hop,) = report.outcomes
    assert report.exit_code == 2 and "not a folder the sync made" in hop.failure, hop.failure
    assert sorted(p.name for p in elsewhere.rglob("*")) == ["theirs.txt"]
    assert not (archive / "sha/2026").exists()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "over-ssh"])
def test_leftover_staged_copies_never_go_through_a_symlinked_partial_folder(tmp_path, sshd, remote) -> None:
    """Found by security review: a staged copy a stopped run left became ``.rsync-partial/<name>``
    through a symlink of that name, replacing a file outside the archive.  Now it is removed instead
    (it was never checked; only its resume is lost) and nothing outside is touched."""
    root, outside = tmp_path / "archive", tmp_path / "outside"
    staged = root / STAGING_DIR / "2026/1202/SHA_1.fits"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"frame")
    (staged.parent / ".SHA_2.fits.aB3xYz").write_bytes(b"half")  # a SIGKILLed rsync's temp
    outside.mkdir()
    (outside / "SHA_1.fits").write_bytes(b"x")  # shorter than the staged copy: it would be replaced
    (staged.parent / ".rsync-partial").symlink_to(outside)
    clear_staging(parse_location(_where(root, remote)), Shell(tuple(sshd.ssh_options)))
    assert sorted(p.name for p in outside.iterdir()) == ["SHA_1.fits"] and (outside / "SHA_1.fits").read_bytes() == b"x"
    assert sorted(p.name for p in staged.parent.iterdir()) == [".rsync-partial"]
