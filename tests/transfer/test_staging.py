"""staging.py: staged copies take their final names, never over someone else's file (local and over ssh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from obsflow.config import WHOLE_ROOT, parse_location
from obsflow.transfer.listing import STAGING_DIR, list_files
from obsflow.transfer.remote import Shell
from obsflow.transfer.staging import clear_staging, publish


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
def test_leftover_staged_copies_are_cleared_but_partials_kept_and_never_listed(tmp_path, sshd, remote) -> None:
    root = tmp_path / "archive"
    staged, partial = root / STAGING_DIR / "2026/1202/SHA_1.fits", root / STAGING_DIR / "2026/1202/.rsync-partial/SHA_2.fits"
    for path in (staged, partial, root / "2026/1202/SHA_0.fits"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"frame")
    where, shell = parse_location(_where(root, remote)), Shell(tuple(sshd.ssh_options))
    listed = list_files(where, [WHOLE_ROOT], ("*.fits",), shell)
    assert sorted(listed) == ["2026/1202/SHA_0.fits"] and listed.staged and not listed.temps
    clear_staging(where, shell)
    assert not staged.exists() and partial.read_bytes() == b"frame" and (root / "2026/1202/SHA_0.fits").exists()


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
