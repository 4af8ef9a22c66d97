"""A file name whose bytes are not UTF-8 (written by a tool in another locale) is refused with a
readable line, never a traceback or a hang; the other files are copied; verify names it too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from obsflow.cli import main
from tests.transfer.conftest import ssh_config

BAD = b"SHA_\xff.fits"  # Latin-1 'ÿ', not UTF-8


def _night_folder(tmp_path: Path) -> tuple[str, Path]:
    """Tonight's dated folder of the instrument sha under ``tmp_path``, made."""
    night = f"{date.today():%Y}/{date.today():%m%d}"
    folder = tmp_path / "sha" / night
    folder.mkdir(parents=True)
    return night, folder


def _two_hops(tmp_path: Path, sshd, source: str, instrument_extra: str = "") -> tuple[Path, Path, Path]:
    """(config, suth, cape): sha's ``source`` -> suth (local) -> cape (over ssh)."""
    suth, cape = tmp_path / "suth", tmp_path / "cape"
    suth.mkdir(), cape.mkdir()
    config = ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n{instrument_extra}'
        f'[archives.suth]\nlocation = "{suth}"\n[archives.cape]\nlocation = "cape.test:{cape}"\n'
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n[[hops]]\nfrom = "suth"\nto = "cape"\n',
    )
    return config, suth, cape


def _to_suth(tmp_path: Path, sshd, source: str) -> Path:
    """The config of one hop: sha's ``source`` -> suth (local, made here)."""
    (tmp_path / "suth").mkdir()
    return ssh_config(
        tmp_path,
        sshd,
        f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
        f'[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n',
    )


def _copied_once_and_kept(tmp_path: Path, sshd, capsys, mtime_ns: int) -> Path:
    """A frame dated ``mtime_ns`` goes along both hops with its bytes and exact mtime, and the next run
    finds it present (not copied again, not taken for one still being written); the config."""
    night, folder = _night_folder(tmp_path)
    frame = folder / "SHA_0001.fits"
    frame.write_bytes(b"frame")
    os.utime(frame, ns=(mtime_ns, mtime_ns))
    config, suth, cape = _two_hops(tmp_path, sshd, str(tmp_path / "sha"))
    rel = f"{night}/SHA_0001.fits"
    assert main(["sync", "-c", str(config), "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [(h["copied_files"], h["in_flight_files"]) for h in hops] == [([rel], []), ([rel], [])]
    for archive in (suth, cape):
        assert (archive / "sha" / rel).read_bytes() == b"frame"
        assert (archive / "sha" / rel).stat().st_mtime_ns == mtime_ns
    assert main(["sync", "-c", str(config), "--json"]) == 0
    assert [h["present"] for h in json.loads(capsys.readouterr().out)["hops"]] == [1, 1]
    return config


@pytest.mark.parametrize("source_host", ["local", "ssh"])
def test_a_name_that_is_not_utf8_is_refused_with_one_readable_line(
    tmp_path: Path, sshd, capsys, source_host: str
) -> None:
    night, folder = _night_folder(tmp_path)
    settled = time.time() - 3600
    for name in (BAD, b"SHA_0001.fits"):
        path = os.path.join(os.fsencode(folder), name)
        with open(path, "wb") as handle:
            handle.write(b"frame")
        os.utime(path, (settled, settled))
    source = str(tmp_path / "sha") if source_host == "local" else f"sha.test:{tmp_path / 'sha'}"
    config = _to_suth(tmp_path, sshd, source)
    shown = f"{night}/SHA_\\xff.fits"

    assert main(["sync", "-c", str(config), "--json"]) == 1  # something left for a person
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert hop["copied_files"] == [f"{night}/SHA_0001.fits"]
    assert hop["refused_files"] == [{"path": shown, "reason": "name is not valid UTF-8: not copied (rename it at "
                                                               "the source)"}]  # fmt: skip
    assert os.listdir(os.fsencode(tmp_path / "suth" / "sha" / night)) == [b"SHA_0001.fits"]

    assert main(["sync", "-c", str(config)]) == 1
    assert f"refused: {source}/{shown}: name is not valid UTF-8" in capsys.readouterr().out

    report = tmp_path / "verify.html"
    assert main(["verify", "-c", str(config), "--html", str(report)]) == 1  # it never reached suth
    out = capsys.readouterr().out
    assert f"{shown}  (name is not valid UTF-8: not copied (rename it at the source))" in out  # the sync's words
    lines = out.splitlines()  # found by docs review: its heading said such entries lead outside the root
    heading = lines[lines.index(f"{shown}  (name is not valid UTF-8: not copied (rename it at the source))") - 2]
    assert heading.startswith("ENTRIES ON SHA THAT THE SYNC REFUSES") and "OUTSIDE THE ROOT" not in heading
    assert "1 refused" in out and shown in report.read_text()


def test_an_accented_name_is_copied_and_hashed_under_the_c_locale_of_cron(tmp_path: Path, sshd, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    """Under LC_ALL=C rsync prints every byte of 'é' as an escape (\\#303\\#251): the name must still
    be recognised, in rsync's copy reports and in its remote hashing."""
    monkeypatch.setenv("LC_ALL", "C")
    night, folder = _night_folder(tmp_path)
    settled = time.time() - 3600
    frame = folder / "SHA_é.fits"
    frame.write_bytes(b"frame")
    os.utime(frame, (settled, settled))
    config, _suth, cape = _two_hops(tmp_path, sshd, str(tmp_path / "sha"))
    rel = f"{night}/SHA_é.fits"

    assert main(["sync", "-c", str(config), "--json"]) == 0
    assert [h["copied_files"] for h in json.loads(capsys.readouterr().out)["hops"]] == [[rel], [rel]]
    # cape's copy gets another mtime: same size, so the next run compares hashes (cape's by its rsync)
    os.utime(cape / "sha" / rel, (settled + 60, settled + 60))
    assert main(["sync", "-c", str(config), "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [(h["copied_files"], h["conflict_files"], h["present"]) for h in hops] == [([], [], 1), ([], [], 1)]
    assert main(["verify", "-c", str(config), "--checksum", "--rehash"]) == 0


def test_a_file_dated_before_1970_with_a_fraction_of_a_second_is_copied_and_kept(tmp_path: Path, sshd,
                                                                                 capsys) -> None:  # fmt: skip
    """rsync's %M prints the whole second below the mtime (time_t); before 1970 int() rounds the other way,
    and the copy was taken for one the source changed during the copy: removed again, every night."""
    config = _copied_once_and_kept(tmp_path, sshd, capsys, -31_535_999_500_000_000)  # 1969-01-01 00:00:00.5 UTC
    assert main(["verify", "-c", str(config), "--checksum"]) == 0


def test_a_file_dated_far_in_the_future_is_copied_not_waited_for_past_the_window(tmp_path: Path, sshd,
                                                                                  capsys) -> None:  # fmt: skip
    """A time set a year ahead (a camera's clock, cp -p from one) is no write under way: were it
    "still being written" until then, its night would leave the window uncopied and verify would never
    call it missing.  A file a few minutes ahead (a clock that runs a little fast) still waits."""
    night, folder = _night_folder(tmp_path)
    far, near = folder / "SHA_0001.fits", folder / "SHA_0002.fits"
    far.write_bytes(b"frame one")
    near.write_bytes(b"frame two")
    os.utime(far, (time.time() + 365 * 86400,) * 2)
    os.utime(near, (time.time() + 600,) * 2)
    # the far one is copied once seen unchanged settle_seconds long: the run waits for it
    config, _suth, cape = _two_hops(tmp_path, sshd, f"sha.test:{tmp_path / 'sha'}", "settle_seconds = 2\n")
    rel, waits = f"{night}/SHA_0001.fits", f"{night}/SHA_0002.fits"

    assert main(["sync", "-c", str(config), "--json"]) == 1  # the one a few minutes ahead waits
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [(h["copied_files"], h["in_flight_files"]) for h in hops] == [([rel], [waits]), ([rel], [])]
    assert (cape / "sha" / rel).read_bytes() == b"frame one"
    assert main(["sync", "-c", str(config), "--json"]) == 1
    assert [h["present"] for h in json.loads(capsys.readouterr().out)["hops"]] == [1, 1]
    assert main(["verify", "-c", str(config), "--checksum"]) == 0
    capsys.readouterr()
    (cape / "sha" / rel).unlink()
    assert main(["verify", "-c", str(config), "--json"]) == 1
    missing = [f["missing"] for f in json.loads(capsys.readouterr().out)["folders"]]
    assert missing == [[], [rel]]


def test_a_name_with_a_backslash_is_refused_for_what_it_is_not_as_escaping_its_root(tmp_path: Path, sshd,
                                                                                     capsys) -> None:  # fmt: skip
    """A backslash is an ordinary byte of a POSIX name: it cannot lead out of a root, and saying so sent
    the operator looking for an attack; the refusal names the backslash."""
    night, folder = _night_folder(tmp_path)
    settled = time.time() - 3600
    for name in ("SHA_back\\slash.fits", "SHA_0001.fits"):
        (folder / name).write_bytes(b"frame")
        os.utime(folder / name, (settled, settled))
    config = _to_suth(tmp_path, sshd, f"sha.test:{tmp_path / 'sha'}")

    assert main(["sync", "-c", str(config), "--json"]) == 1
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert hop["copied_files"] == [f"{night}/SHA_0001.fits"]
    reason = "name holds a backslash: not copied (rename it at the source)"
    assert hop["refused_files"] == [{"path": f"{night}/SHA_back\\slash.fits", "reason": reason}]


def test_a_file_dated_a_nanosecond_before_a_whole_second_is_copied_and_kept(tmp_path: Path, sshd,
                                                                            capsys) -> None:  # fmt: skip
    """A listing's mtime is a float made from the nanoseconds: 1764640000.999999999 becomes 1764640001.0,
    while rsync's %M prints the second it reads from the nanoseconds, ...000: the copy was taken for one
    the source changed during the copy and removed again, every night."""
    _copied_once_and_kept(tmp_path, sshd, capsys, (int(time.time()) - 3600) * 1_000_000_000 - 1)


def test_a_symlink_whose_name_is_not_utf8_is_refused_in_a_printable_line(tmp_path: Path, sshd, capsys) -> None:
    """Found by structure review: a refused symlink kept its undecodable bytes, and printing the
    refusal crashed (UnicodeEncodeError); it is shown as the not-UTF-8 files are, with ``\\xff``."""
    night, folder = _night_folder(tmp_path)
    os.symlink("/etc/passwd", os.path.join(os.fsencode(folder), b"SHA_\xff.fits"))
    config = _to_suth(tmp_path, sshd, str(tmp_path / "sha"))
    assert main(["sync", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"refused: {tmp_path / 'sha'}/{night}/SHA_\\xff.fits: symlink to /etc/passwd" in out
    assert main(["sync", "-c", str(config), "--json"]) == 1
    (hop,) = json.loads(capsys.readouterr().out)["hops"]
    assert [r["path"] for r in hop["refused_files"]] == [f"{night}/SHA_\\xff.fits"]


def test_a_name_with_a_newline_is_one_line_of_the_sync_output(tmp_path: Path, sshd, capsys) -> None:
    """A name holding a newline (or a terminal escape) is shown with backslash escapes, as verify
    shows it: printed raw it read as two files, or drove the operator's terminal."""
    night, folder = _night_folder(tmp_path)
    (folder / "SHA_a\nb.fits").write_bytes(b"frame being written")  # fresh: still being written
    config = _to_suth(tmp_path, sshd, str(tmp_path / "sha"))
    assert main(["sync", "-c", str(config)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"  still being written: {tmp_path / 'sha'}/{night}/SHA_a\\nb.fits" in lines
    assert not any(line.startswith("b.fits") for line in lines)


def test_a_name_with_a_newline_is_one_line_of_the_sync_log_too(tmp_path: Path) -> None:
    """Found by staging review: the warnings on stderr (cron mails them with the output) printed
    a conflicting name raw: 'conflict: SHA_a' and 'b.fits differs at …' on two lines, an ESC as is."""
    night, folder = _night_folder(tmp_path)
    settled = time.time() - 7200
    for name in ("SHA_a\nb.fits", "SHA_\x1b[2J.fits"):
        (folder / name).write_bytes(b"frame")
        os.utime(folder / name, (settled, settled))
        (tmp_path / "suth/sha" / night).mkdir(parents=True, exist_ok=True)
        (tmp_path / "suth/sha" / night / name).write_bytes(b"another frame")  # a conflict
    config = tmp_path / "obsflow.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[instruments.sha]\nsource = "{tmp_path / "sha"}"\n'
                      f'path = "sha"\n[archives.suth]\nlocation = "{tmp_path / "suth"}"\n'
                      '[[hops]]\nfrom = "instruments"\nto = "suth"\n')  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "obsflow", "sync", "-c", str(config)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    warnings = done.stderr.splitlines()
    assert any("conflict: " + night + "/SHA_a\\nb.fits differs at" in line for line in warnings), warnings
    assert any("conflict: " + night + "/SHA_\\x1b[2J.fits differs at" in line for line in warnings), warnings
    assert all("WARNING" in line for line in warnings) and "\x1b" not in done.stderr
