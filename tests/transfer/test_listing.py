"""Listing a host's dated folders in one round trip, locally and over the real sshd, and hashing there."""

from __future__ import annotations

import os
import threading
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import xxhash

from obsflow.cli import main
from obsflow.config import parse_location
from obsflow.errors import HostUnreachable, PathEscapeError, TransportError
from obsflow.transfer.listing import WHOLE_ROOT, hash_files, list_files, temp_target
from obsflow.transfer.remote import Shell
from tests.fixtures.sshd import start_sshd

FOLDERS = ["2016/0907", "2016/0908", "2016/0909"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    night = root / "2016" / "0907"
    night.mkdir(parents=True)
    (night / "SHA_20160907.0001.fits").write_bytes(b"a" * 1000)
    (night / "SHA 20160907 with space.fits").write_bytes(b"b" * 10)
    (night / "notes.txt").write_text("not data")
    (night / ".SHA_20160907.0002.fits.Xy12Ab").write_bytes(b"partial")  # killed rsync's temp: rsync makes them 0600
    (night / ".SHA_20160907.0002.fits.Xy12Ab").chmod(0o600)
    (night / ".SHA_20160907.0001.fits.backup").write_bytes(b"mine")  # an observer's copy (0644), named like a temp
    (night / ".rsync-partial").mkdir()
    (night / ".rsync-partial" / "SHA_20160907.0003.fits").write_bytes(b"resumable")
    (night / "sub").mkdir()
    (night / "sub" / "deep.fits").write_bytes(b"c")
    os.symlink("/etc/passwd", night / "escape.fits")
    (root / "2016" / "0908").mkdir()
    os.symlink("/etc", root / "2016" / "0909")  # a dated folder that leaves the root
    return root


def _as_dict(listing):
    return {path: (st.size, st.kind) for path, st in listing.items()}


def test_local_listing_keeps_data_files_only(tree: Path) -> None:
    listing = list_files(parse_location(str(tree)), FOLDERS, ["*.fits"])
    assert _as_dict(listing) == {
        "2016/0907/SHA_20160907.0001.fits": (1000, "f"),
        "2016/0907/SHA 20160907 with space.fits": (10, "f"),
        "2016/0907/sub/deep.fits": (1, "f"),
        "2016/0907/escape.fits": (len("/etc/passwd"), "l"),
        "2016/0909": (0, "l"),
    }
    assert listing["2016/0909"].target == "/etc"
    assert set(listing.temps) == {
        "2016/0907/.SHA_20160907.0002.fits.Xy12Ab",
        "2016/0907/.rsync-partial/SHA_20160907.0003.fits",
    }
    assert listing.root_exists


def test_remote_listing_equals_local_listing(tree: Path, sshd) -> None:
    shell = Shell(tuple(sshd.ssh_options))
    local = list_files(parse_location(str(tree)), FOLDERS, ["*.fits"], shell)
    remote = list_files(parse_location(f"suth.test:{tree}"), FOLDERS, ["*.fits"], shell)
    assert dict(remote) == dict(local)  # sizes, kinds, targets and mtimes to the nanosecond
    assert set(remote.temps) == set(local.temps)
    assert abs(remote.host_time - local.host_time) < 30


def test_missing_root_and_folders_are_empty(tmp_path: Path, sshd) -> None:
    shell = Shell(tuple(sshd.ssh_options))
    for where in (str(tmp_path / "none"), f"suth.test:{tmp_path / 'none'}"):
        listing = list_files(parse_location(where), FOLDERS, ["*.fits"], shell)
        assert dict(listing) == {} and not listing.root_exists
    (tmp_path / "empty").mkdir()
    listing = list_files(parse_location(f"suth.test:{tmp_path / 'empty'}"), FOLDERS, ["*.fits"], shell)
    assert dict(listing) == {} and listing.root_exists


def test_unsafe_folder_is_refused(tree: Path) -> None:
    with pytest.raises(PathEscapeError):
        list_files(parse_location(str(tree)), ["../etc"], ["*"])


def test_unreachable_host_is_one_clear_error(sshd) -> None:
    with pytest.raises(HostUnreachable) as err:
        list_files(parse_location("down.test:/data"), FOLDERS, ["*.fits"], Shell(tuple(sshd.ssh_options)))
    assert "down.test" in err.value.one_line() and "\n" not in err.value.one_line()


def test_hashes_are_xxh128_locally_and_remotely(tree: Path, sshd) -> None:
    shell = Shell(tuple(sshd.ssh_options))
    paths = ["2016/0907/SHA_20160907.0001.fits", "2016/0907/SHA 20160907 with space.fits", "2016/0907/missing.fits"]
    expected = {p: xxhash.xxh128((tree / p).read_bytes()).hexdigest() for p in paths[:2]}
    assert hash_files(parse_location(str(tree)), paths) == expected
    assert hash_files(parse_location(f"suth.test:{tree}"), paths, shell) == expected


def test_temp_target_names_the_final_file() -> None:
    assert temp_target("2016/0907/.x.fits.AbC123") == "2016/0907/x.fits"
    assert temp_target("2016/0907/.rsync-partial/x.fits") == "2016/0907/x.fits"
    assert temp_target("2016/0907/x.fits") is None


def test_several_patterns_match_as_fnmatchcase_does_locally_and_remotely(tmp_path: Path, sshd) -> None:
    night = tmp_path / "root" / "2016" / "0907"
    (night / ".hidden").mkdir(parents=True)
    names = ["a.fits", "A.FITS", "b.fits.fz", "SHA_1.fz", "SHA_x.fz", "[x].fits", "c.fitsx", "nl\nname.fits"]
    for name in names:
        (night / name).write_bytes(b"1")
    (night / ".hidden" / "in_dot_folder.fits").write_bytes(b"1")  # not a dot-file itself: data
    patterns = ["*.fits", "SHA_[0-9]*.fz"]
    expected = {f"2016/0907/{n}" for n in names if any(fnmatchcase(n, p) for p in patterns)}
    expected.add("2016/0907/.hidden/in_dot_folder.fits")
    shell = Shell(tuple(sshd.ssh_options))
    for where in (str(tmp_path / "root"), f"suth.test:{tmp_path / 'root'}"):
        assert set(list_files(parse_location(where), FOLDERS, patterns, shell)) == expected, where


@pytest.mark.parametrize("patterns", [["*.fits"], ["*.fits", "*.fz"], ["*"], ["*s"], ["*.fits", "SHA_[0-9]*.fz"]])
def test_patterns_of_an_ending_alone_match_as_fnmatchcase_does(tmp_path: Path, sshd, patterns: list[str]) -> None:
    # "*.fits" is decided by the ending of the whole path in the bulk parse of a remote answer.
    night = tmp_path / "root" / "2016" / "0907"
    (night / "sub.fits").mkdir(parents=True)  # a folder named like data: what is in it counts, not it
    names = ["a.fits", "A.FITS", "b.fits.fz", "SHA_1.fz", "c.fitsx", "fits", "x.fits ", "sub.fits/in.fits", "sub.fits/in.txt"]
    for name in names:
        (night / name).write_bytes(b"1")
    expected = {f"2016/0907/{n}" for n in names if any(fnmatchcase(n.rsplit("/", 1)[-1], p) for p in patterns)}
    shell = Shell(tuple(sshd.ssh_options))
    for where in (str(tmp_path / "root"), f"suth.test:{tmp_path / 'root'}"):
        assert set(list_files(parse_location(where), FOLDERS, patterns, shell)) == expected, where


def test_whole_root_lists_every_file_below_it_locally_and_remotely(tree: Path, sshd) -> None:
    (tree / "top.fits").write_bytes(b"t" * 3)
    (tree / "PROJ" / "PROJ.raw.vegas").mkdir(parents=True)
    (tree / "PROJ" / "PROJ.raw.vegas" / "PROJ.raw.vegas.A.fits").write_bytes(b"p" * 7)
    (tree / "PROJ" / "PROJ.raw.vegas" / "PROJ.raw.vegas.A.index").write_text("[header]\n")
    kept = tree / ".obsflow-superseded" / "20261201T000000" / "PROJ"  # older copies the sync moved aside
    kept.mkdir(parents=True)
    (kept / "PROJ.raw.vegas.A.fits").write_bytes(b"old")
    (tree / ".obsflow-superseded" / "20200101T000000").symlink_to(tree / "2016")  # not a folder of ours
    (tree / ".obsflow-superseded" / "note.txt").write_text("not a folder")
    (tree / "2016" / "0907" / ".notes.txt.backup").write_text("an observer's, named like an rsync temp")
    shell = Shell(tuple(sshd.ssh_options))
    local = list_files(parse_location(str(tree)), [WHOLE_ROOT], ["*.fits", "*.index"])
    remote = list_files(parse_location(f"suth.test:{tree}"), [WHOLE_ROOT], ["*.fits", "*.index"], shell)
    assert _as_dict(local) == {
        "top.fits": (3, "f"),
        "PROJ/PROJ.raw.vegas/PROJ.raw.vegas.A.fits": (7, "f"),
        "PROJ/PROJ.raw.vegas/PROJ.raw.vegas.A.index": (9, "f"),
        "2016/0907/SHA_20160907.0001.fits": (1000, "f"),
        "2016/0907/SHA 20160907 with space.fits": (10, "f"),
        "2016/0907/sub/deep.fits": (1, "f"),
        "2016/0907/escape.fits": (len("/etc/passwd"), "l"),  # listed, so that the planner refuses it
    }  # the symlinked folder 2016/0909 is not followed, and its name matches no pattern
    assert dict(remote) == dict(local)
    assert set(remote.temps) == set(local.temps) == {
        "2016/0907/.SHA_20160907.0002.fits.Xy12Ab",
        "2016/0907/.rsync-partial/SHA_20160907.0003.fits",
    }
    assert remote.superseded == local.superseded == ("20261201T000000",)  # names only, real folders only


def test_a_remote_listing_survives_files_vanishing_while_it_runs(tmp_path: Path, sshd) -> None:
    # A writer replaces files by writing a temp file and renaming it into place, and removes old
    # ones: find reads a name, then the file is gone when it looks at it.
    root = tmp_path / "products"
    folder = root / "2026" / "1201"
    folder.mkdir(parents=True)
    for i in range(5000):
        (folder / f"F{i:05d}.fits").touch()
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            tmp = folder / f".tmp{i % 200}"
            tmp.touch()
            tmp.rename(folder / f"N{i % 200}.fits")
            (folder / f"N{(i + 100) % 200}.fits").unlink(missing_ok=True)
            i += 1

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        shell = Shell(tuple(sshd.ssh_options))
        for _ in range(10):
            listing = list_files(parse_location(f"suth.test:{root}"), ["2026/1201"], ["F*.fits"], shell)
            assert len(listing) == 5000
    finally:
        stop.set()
        writer.join()


def test_a_remote_listing_of_folders_in_several_batches_equals_the_local_one(tmp_path: Path, sshd) -> None:
    # ~600 KB of folder names: xargs runs the folder loop and find in several batches, so folder
    # records follow file records of an earlier batch; the parse must take both in any order.
    folders = [f"f{i:05d}_{'x' * 200}" for i in range(3000)]
    for name in folders[::100]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.fits").write_bytes(b"x")
    (tmp_path / folders[2999]).symlink_to("/etc")  # in the last batch: refused, points outside the root
    remote = list_files(parse_location(f"suth.test:{tmp_path}"), folders, ["*.fits"], Shell(tuple(sshd.ssh_options)))
    local = list_files(parse_location(str(tmp_path)), folders, ["*.fits"])
    assert len(remote) == 31 and dict(remote) == dict(local)
    assert remote[folders[2999]].kind == "l"


@pytest.mark.parametrize("answer", [b"T\0notanumber\0", b"T\0", b"T\0001.5\0R\0/\0F\0a.fits\0big\0x\0f\x00644\0",
                                    b"garbage\n"])  # fmt: skip
def test_a_host_whose_answer_is_not_a_listing_is_a_one_line_error(tmp_path: Path, capsys, answer: bytes) -> None:
    """Found by security review: a remote host whose sh or find answered something other than the
    listing script's records (a broken or hostile host) made ``obsflow sync`` and ``verify`` die with
    a ValueError or IndexError traceback.  Now it is a TransportError, one line: the hop fails, exit 2.
    The host is a real sshd of its own whose key forces a command that prints ``answer`` to any request."""
    evil = start_sshd(tmp_path / "sshd")
    try:
        keys = tmp_path / "sshd" / "authorized_keys"
        printed = answer.decode().encode("unicode_escape").decode()
        keys.write_text(f"command=\"printf '%b' '{printed}'\" {keys.read_text()}")  # sshd reads it at each login
        with pytest.raises(TransportError, match="the host's answer is not a listing"):
            list_files(parse_location("suth.test:/data"), ["2026/1201"], ("*.fits",), Shell(tuple(evil.ssh_options)))
        (tmp_path / "arch").mkdir()
        options = ", ".join(f'"{o}"' for o in evil.ssh_options)
        (tmp_path / "c.toml").write_text(
            f'state_dir = "{tmp_path / "state"}"\n[ssh]\noptions = [{options}]\n[instruments.sha]\n'
            f'source = "suth.test:/data"\n[archives.a]\nlocation = "{tmp_path / "arch"}"\n[[hops]]\n'
            'from = "instruments"\nto = "a"\n'
        )  # fmt: skip
        _one_line_failures(tmp_path / "c.toml", capsys)
    finally:
        evil.stop()


def _one_line_failures(config: Path, capsys) -> None:
    """``obsflow sync`` and ``verify`` fail with the listing's one line (exit 2), no traceback."""
    assert main(["sync", "-c", str(config)]) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and "the host's answer is not a listing" in printed.out
    assert main(["verify", "-c", str(config)]) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and "the host's answer is not a listing" in printed.out


def test_a_plain_remote_listing_parsed_in_bulk_equals_the_local_one(tmp_path: Path, sshd) -> None:
    """The usual answer (regular files only, no dot-names) is parsed in bulk; what it gives must be
    what the entry-by-entry parse and the local walk give: sizes, and mtimes to the nanosecond, and
    names no pattern matches left out.  One dot-file among them sends the parse entry by entry."""
    root = tmp_path / "root"
    for night in FOLDERS[:2]:
        (root / night / "sub").mkdir(parents=True)
        for i in range(40):
            path = root / night / f"SHA_{i:04d}.fits"
            path.write_bytes(b"x" * i)
            os.utime(path, ns=(0, 1_700_000_000_123_456_789 + i * 1_000_000_007))
        (root / night / "notes.txt").write_text("not data")
        (root / night / "sub" / "deep.fits").write_bytes(b"d")
    (root / FOLDERS[0] / "2016").mkdir()  # a folder named like a year, inside a night
    shell = Shell(tuple(sshd.ssh_options))

    def both() -> tuple[dict, dict]:
        local = list_files(parse_location(str(root)), FOLDERS, ["SHA_*.fits", "deep.fits"], shell)
        remote = list_files(parse_location(f"suth.test:{root}"), FOLDERS, ["SHA_*.fits", "deep.fits"], shell)
        return dict(local), dict(remote)

    local, remote = both()
    assert remote == local and len(remote) == 82
    assert remote[f"{FOLDERS[0]}/SHA_0003.fits"].mtime == 1_700_000_003_123_456_810 / 1e9
    assert all(type(st) is type(local[path]) and st.kind == "f" for path, st in remote.items())
    (root / FOLDERS[1] / ".SHA_0001.fits.Ab12Cd").write_bytes(b"p")  # a 0644 dot-file: a user's, not a temp
    local, remote = both()
    assert remote == local and len(remote) == 82


class _Recording(Shell):
    """A Shell that keeps each piece of output it hands over (to see how a listing arrived)."""

    def __init__(self, options: tuple[str, ...], pieces: list[bytes]) -> None:
        super().__init__(options)
        object.__setattr__(self, "pieces", pieces)

    def stream(self, location, script, on_output, stdin=b""):  # noqa: ANN001, ANN201
        def keep(data: bytes) -> None:
            self.pieces.append(data)
            on_output(data)

        return super().stream(location, script, keep, stdin=stdin)


def _odd_tree(root: Path) -> None:
    """Names that make a split answer hard: several UTF-8 bytes per character, temps, symlinks, deep folders."""
    night = root / "2016" / "0907"
    (night / "sub").mkdir(parents=True)
    for i in range(30):
        (night / f"SHA_ñ€{i:03d}.fits").write_bytes(b"x" * i)
    (night / "sub" / "deep.fits").write_bytes(b"d")
    (night / ".SHA_ñ€000.fits.Xy12Ab").write_bytes(b"p")
    (night / ".SHA_ñ€000.fits.Xy12Ab").chmod(0o600)
    os.symlink("/etc/passwd", night / "escape.fits")
    (root / "2016" / "0908").mkdir()
    os.symlink("/etc", root / "2016" / "0909")


def test_a_remote_listing_that_arrives_in_small_pieces_equals_the_local_one(tmp_path: Path) -> None:
    # The listing is parsed piece by piece as it arrives; a host whose answer comes a few bytes at a
    # time (a real sshd whose key runs the command through a trickle) must give the very same listing.
    root = tmp_path / "root"
    _odd_tree(root)
    trickle = tmp_path / "trickle.sh"
    trickle.write_text('#!/bin/sh\nsh -c "$SSH_ORIGINAL_COMMAND" | python3 -c \'import os, time\n'
                       'while (b := os.read(0, 5)): os.write(1, b); time.sleep(0.0005)\'\n')  # fmt: skip
    trickle.chmod(0o755)
    slow = start_sshd(tmp_path / "sshd")
    try:
        keys = tmp_path / "sshd" / "authorized_keys"
        keys.write_text(f'command="{trickle}" {keys.read_text()}')
        pieces: list[bytes] = []
        remote = list_files(parse_location(f"suth.test:{root}"), FOLDERS, ["*.fits"],
                            _Recording(tuple(slow.ssh_options), pieces))  # fmt: skip
    finally:
        slow.stop()
    local = list_files(parse_location(str(root)), FOLDERS, ["*.fits"])
    assert len(pieces) > 50  # it did come in pieces
    assert dict(remote) == dict(local) and len(local) == 33
    assert set(remote.temps) == set(local.temps) == {"2016/0907/.SHA_ñ€000.fits.Xy12Ab"}


def test_a_remote_answer_split_anywhere_gives_the_same_listing(tmp_path: Path, sshd) -> None:
    # The real answer of a real host, cut at every byte: in a header record, inside a character, between fields.
    root = tmp_path / "root"
    _odd_tree(root)
    pieces: list[bytes] = []
    whole = list_files(parse_location(f"suth.test:{root}"), FOLDERS, ["*.fits"], _Recording(tuple(sshd.ssh_options), pieces))
    answer = b"".join(pieces)

    def replay(cuts: list[int]) -> dict:
        class Replay(Shell):
            def stream(self, location, script, on_output, stdin=b""):  # noqa: ANN001, ANN201
                for start, end in zip([0, *cuts], [*cuts, len(answer)], strict=True):
                    on_output(answer[start:end])

        listing = list_files(parse_location(f"suth.test:{root}"), FOLDERS, ["*.fits"], Replay())
        assert listing.host_time == whole.host_time and set(listing.temps) == set(whole.temps)
        return dict(listing)

    assert replay(list(range(1, len(answer)))) == dict(whole)  # one byte at a time
    for cut in range(1, len(answer), 7):
        assert replay([cut]) == dict(whole), cut


@pytest.mark.parametrize("digits", [9, 10])
def test_finds_of_nine_and_ten_decimals_give_the_same_times(tmp_path: Path, digits: int) -> None:
    # GNU find before 4.9 prints %T@ with 9 decimals, 4.9 with 10 (a trailing 0): both read as
    # st_mtime_ns / 1e9 would give them, in the bulk parse as in the one by one.
    nanos = [1_700_000_000_123_456_789 + i * 1_000_000_007 for i in range(50)]
    records = b"".join(b"F\0d/f%02d.fits\x001\0%d.%09d%s\0f\x00644\0" % (i, n // 10**9, n % 10**9, b"0" * (digits - 9))
                       for i, n in enumerate(nanos))  # fmt: skip
    answer = b"T\x001700000000.5\0R\0/r\0" + records

    class Replay(Shell):
        def stream(self, location, script, on_output, stdin=b""):  # noqa: ANN001, ANN201
            on_output(answer)

    listing = list_files(parse_location("host.test:/r"), ["d"], ["*.fits"], Replay())
    assert [listing[f"d/f{i:02d}.fits"].mtime for i in range(50)] == [n / 1e9 for n in nanos]
