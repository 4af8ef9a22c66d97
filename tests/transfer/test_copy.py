"""Copy mechanics: rsync's hidden partials, tidying a killed run's temps, the pure-Python fallback."""

from __future__ import annotations

import calendar
import os
import re
import shutil
import time
from datetime import date
from pathlib import Path

import pytest
import xxhash

from obsflow.cli import main
from obsflow.config import parse_location
from obsflow.errors import HostUnreachable
from obsflow.transfer.listing import FileStat
from obsflow.transfer.localcopy import python_copy
from obsflow.transfer.remote import Shell
from obsflow.transfer.rsync import rsync_copy
from obsflow.transfer.sync import SyncRequest, run_sync
from obsflow.transfer.tidy import plan_prune, plan_tidy, tidy
from tests.transfer.conftest import make_site, ssh_config


def test_rsync_reports_the_xxh128_of_each_file(tmp_path: Path, sshd) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "2016" / "0907").mkdir(parents=True)
    data = os.urandom(300_000)
    (src / "2016" / "0907" / "a b.fits").write_bytes(data)
    result = rsync_copy(parse_location(str(src)), parse_location(f"cape.test:{dst}"), ["2016/0907/a b.fits"],
                        ssh_options=sshd.ssh_options)  # fmt: skip
    assert [(c.path, c.size, c.xxh128) for c in result.copied] == [
        ("2016/0907/a b.fits", 300_000, xxhash.xxh128(data).hexdigest())
    ]
    assert (dst / "2016" / "0907" / "a b.fits").read_bytes() == data


def test_rsync_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "x.fits").write_bytes(b"new")
    (dst / "x.fits").write_bytes(b"old data")
    result = rsync_copy(parse_location(str(src)), parse_location(str(dst)), ["x.fits"])
    assert result.copied == [] and (dst / "x.fits").read_bytes() == b"old data"


def test_rsync_to_an_unreachable_host_raises_host_unreachable(tmp_path: Path, sshd) -> None:
    (tmp_path / "x.fits").write_bytes(b"x")
    with pytest.raises(HostUnreachable, match="down.test"):
        rsync_copy(parse_location(str(tmp_path)), parse_location("down.test:/tmp/x"), ["x.fits"],
                   ssh_options=sshd.ssh_options)  # fmt: skip


def test_killed_temps_become_resumable_partials(tmp_path: Path, sshd) -> None:
    temps = {
        "n/.a.fits.AbC123": FileStat(100, 0.0),  # killed mid-file: keep as a partial
        "n/.b.fits.XyZ789": FileStat(5, 0.0),  # b.fits completed meanwhile: remove
        "n/.c.fits.Qqqqq1": FileStat(5, 0.0),  # a longer partial of c exists: remove
        "n/.rsync-partial/c.fits": FileStat(50, 0.0),
    }
    ops = plan_tidy(temps, {"n/b.fits": FileStat(10, 0.0)})
    assert ops == [
        ("mv", "n/.a.fits.AbC123", "n/.rsync-partial/a.fits"),
        ("rm", "n/.b.fits.XyZ789", ""),
        ("rm", "n/.c.fits.Qqqqq1", ""),
    ]
    root = tmp_path / "archive"
    (root / "n").mkdir(parents=True)
    for path in ("n/.a.fits.AbC123", "n/.b.fits.XyZ789", "n/.c.fits.Qqqqq1", "n/b.fits"):
        (root / path).write_bytes(b"x")
    tidy(parse_location(f"cape.test:{root}"), ops, Shell(tuple(sshd.ssh_options)))
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "n/.rsync-partial/a.fits",
        "n/b.fits",
    ]


def test_only_the_syncs_own_superseded_versions_older_than_the_limit_are_pruned() -> None:
    now = calendar.timegm((2026, 12, 1, 12, 0, 0, 0, 0, 0))
    versions = [
        "20261120T115959Z",  # 11 days and 1 second old (UTC, as the sync names them)
        "20261124T120001Z",  # just under 7 days
        "20261124T115959Z",  # just over 7 days
        "20261301T000000Z",  # month 13: not a time the sync wrote
        "20261101T000000-mine", "old", "2026112T0000000Z", "20261101T000000z",  # not the sync's names
    ]  # fmt: skip
    assert plan_prune(versions, 7, now) == ["20261120T115959Z", "20261124T115959Z"]
    assert plan_prune(versions, 30, now) == []
    assert plan_prune(versions, 0, now) == ["20261120T115959Z", "20261124T120001Z", "20261124T115959Z"]
    # a name without "Z" (written before in local time) is read in local time
    local_8_days = time.strftime("%Y%m%dT%H%M%S", time.localtime(now - 8 * 86400))
    local_6_days = time.strftime("%Y%m%dT%H%M%S", time.localtime(now - 6 * 86400))
    assert plan_prune([local_8_days, local_6_days], 7, now) == [local_8_days]


def test_python_copy_resumes_a_partial_and_links_without_overwriting(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "n").mkdir(parents=True)
    data = os.urandom(1 << 20)
    (src / "n" / "a.fits").write_bytes(data)
    (src / "n" / "b.fits").write_bytes(b"source b")
    (dst / "n" / ".rsync-partial").mkdir(parents=True)
    (dst / "n" / ".rsync-partial" / "a.fits").write_bytes(data[:1000])  # an interrupted copy
    (dst / "n" / "b.fits").write_bytes(b"already here, different")
    result = python_copy(src, dst, ["n/a.fits", "n/b.fits"])
    assert [c.path for c in result.copied] == ["n/a.fits"]
    assert result.copied[0].xxh128 == xxhash.xxh128(data).hexdigest()
    assert (dst / "n" / "a.fits").read_bytes() == data
    assert (dst / "n" / "b.fits").read_bytes() == b"already here, different"
    assert len(result.errors) == 1 and "n/b.fits" in result.errors[0]
    assert not (dst / "n" / ".rsync-partial").exists()
    assert (dst / "n" / "a.fits").stat().st_mtime_ns == (src / "n" / "a.fits").stat().st_mtime_ns


def test_python_copy_discards_a_corrupt_partial(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (dst / ".rsync-partial").mkdir(parents=True)
    (src / "a.fits").write_bytes(b"A" * 5000)
    (dst / ".rsync-partial" / "a.fits").write_bytes(b"B" * 100)  # not a prefix of the source
    result = python_copy(src, dst, ["a.fits"])
    assert result.copied == [] and not (dst / "a.fits").exists()
    assert python_copy(src, dst, ["a.fits"]).copied[0].size == 5000  # the next run starts over
    assert (dst / "a.fits").read_bytes() == b"A" * 5000


def test_sync_without_rsync_uses_the_python_copy(tmp_path: Path, monkeypatch) -> None:
    from datetime import date

    from obsflow.config import load_config
    from obsflow.simulate.instrument import simulate_instruments
    from obsflow.transfer.sync import SyncRequest, run_sync

    sim = simulate_instruments(tmp_path / "inst", ["sha"], 2, date(2016, 9, 8), frames=2)
    (tmp_path / "c.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n[instruments.sha]\nsource = "{tmp_path / "inst" / "sha"}"\n'
        f'path = "74in/sha"\n[archives.a]\nlocation = "{tmp_path / "a"}"\n[[hops]]\nfrom = "instruments"\nto = "a"\n'
    )
    (tmp_path / "a").mkdir()  # the archive's folder (the sync never creates it)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no rsync (and nothing else) on PATH
    report = run_sync(load_config(tmp_path / "c.toml"), SyncRequest(date=date(2016, 9, 8), days=2))
    assert report.exit_code == 0 and len(report.outcomes[0].copied) == 4
    for path in sim.files:
        assert (tmp_path / "a" / "74in" / path.relative_to(tmp_path / "inst")).read_bytes() == path.read_bytes()


def test_unknown_host_keys_are_refused_even_if_the_ssh_config_would_accept_them(tmp_path: Path, sshd) -> None:
    known = sshd.ssh_config.parent / "known_hosts"
    config = sshd.ssh_config.read_text().replace(str(known), str(tmp_path / "empty_known_hosts"))
    config = config.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking accept-new")
    (tmp_path / "empty_known_hosts").write_text("")
    (tmp_path / "ssh_config").write_text(config)
    options = ("-F", str(tmp_path / "ssh_config"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.fits").write_bytes(b"x")
    with pytest.raises(HostUnreachable, match="Host key verification failed"):
        rsync_copy(parse_location(str(tmp_path / "src")), parse_location(f"cape.test:{tmp_path / 'dst'}"), ["x.fits"],
                   ssh_options=options)  # fmt: skip
    with pytest.raises(HostUnreachable, match="Host key verification failed"):
        Shell(options).run(parse_location(f"cape.test:{tmp_path}"), "true")
    assert (tmp_path / "empty_known_hosts").read_text() == ""  # nothing was learnt silently
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_a_users_hidden_copy_named_like_a_temp_is_never_tidied(tmp_path: Path, sshd, archive_host: str) -> None:
    """rsync makes its temps 0600 (mode & 0700); an observer's hidden copy beside a file (0644) is theirs."""
    night = f"{date.today():%Y}/{date.today():%m%d}"
    src, suth = tmp_path / "sha" / night, tmp_path / "suth"
    src.mkdir(parents=True)
    settled = time.time() - 3600
    for name in ("SHA_0001.fits", "SHA_0002.fits"):
        (src / name).write_bytes(name.encode() * 1000)
        os.utime(src / name, (settled, settled))
    there = suth / "sha" / night
    there.mkdir(parents=True)
    (there / "SHA_0001.fits").write_bytes((src / "SHA_0001.fits").read_bytes())
    os.utime(there / "SHA_0001.fits", (settled, settled))
    (there / ".SHA_0001.fits.backup").write_bytes(b"an observer's copy")  # 0644, beside its file
    (there / ".SHA_0002.fits.AbC123").write_bytes(b"SHA_0002.fits" * 10)  # a killed rsync's temp
    (there / ".SHA_0002.fits.AbC123").chmod(0o600)
    archive = str(suth) if archive_host == "local" else f"suth.test:{suth}"
    config = ssh_config(tmp_path, sshd, f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
                        f'[archives.suth]\nlocation = "{archive}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n')
    assert main(["sync", "-c", str(config)]) == 0
    assert (there / ".SHA_0001.fits.backup").read_bytes() == b"an observer's copy"
    assert (there / "SHA_0002.fits").read_bytes() == (src / "SHA_0002.fits").read_bytes()
    assert sorted(p.name for p in there.iterdir()) == [".SHA_0001.fits.backup", "SHA_0001.fits", "SHA_0002.fits"]


@pytest.mark.parametrize("archive_host", ["local", "ssh"])
def test_a_killed_rsyncs_temp_is_never_moved_through_a_symlinked_partial_folder(
    tmp_path: Path, sshd, archive_host: str
) -> None:
    """Found by security review: tidying moved a killed rsync's temp into ``.rsync-partial/<name>``
    through whatever stood at ``.rsync-partial``: a symlink to a folder outside the archive had the
    move replace that folder's file of the same name.  Now a temp is moved only into a real
    folder; otherwise it stays where it is (hidden, never data) and nothing outside is touched."""
    night = f"{date.today():%Y}/{date.today():%m%d}"
    src, suth, outside = tmp_path / "sha" / night, tmp_path / "suth", tmp_path / "outside"
    src.mkdir(parents=True)
    outside.mkdir()
    (outside / "SHA_0001.fits").write_bytes(b"not the archive's")
    settled = time.time() - 3600
    (src / "SHA_0001.fits").write_bytes(b"frame" * 1000)
    os.utime(src / "SHA_0001.fits", (settled, settled))
    there = suth / "sha" / night
    there.mkdir(parents=True)
    (there / ".SHA_0001.fits.AbC123").write_bytes(b"frame" * 10)  # a killed rsync's temp
    (there / ".SHA_0001.fits.AbC123").chmod(0o600)
    (there / ".rsync-partial").symlink_to(outside)
    archive = str(suth) if archive_host == "local" else f"suth.test:{suth}"
    config = ssh_config(tmp_path, sshd, f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
                        f'[archives.suth]\nlocation = "{archive}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n')
    assert main(["sync", "-c", str(config)]) == 0
    assert [p.name for p in outside.iterdir()] == ["SHA_0001.fits"]
    assert (outside / "SHA_0001.fits").read_bytes() == b"not the archive's"
    assert (there / "SHA_0001.fits").read_bytes() == (src / "SHA_0001.fits").read_bytes()


def test_python_copy_never_reads_or_writes_through_a_symlink(tmp_path: Path) -> None:
    """Found by security review: the pure-Python copy (used where rsync is missing) opened every path
    following symlinks.  A ``.rsync-partial/<name>`` linked to a file outside the archive had that
    file truncated and overwritten with the copy (and the final name hard-linked to the link); a
    night folder at the destination linked elsewhere was written into; a source file swapped for a
    link since the listing was read through.  rsync refuses all three; so does the copy now, per
    file, and nothing outside the two roots is read or written."""
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for night in ("1201", "1202", "1203"):
        (src / night).mkdir(parents=True)
        (src / night / "a.fits").write_bytes(b"frame" * 100)
    (outside / "night").mkdir(parents=True)
    (outside / "victim").write_bytes(b"V" * 2000)  # longer than the source: the copy would start over in it
    (outside / "secret").write_bytes(b"not for the archive")
    (dst / "1201" / ".rsync-partial").mkdir(parents=True)
    (dst / "1201" / ".rsync-partial" / "a.fits").symlink_to(outside / "victim")
    (dst / "1202").symlink_to(outside / "night")
    (src / "1203" / "a.fits").unlink()
    (src / "1203" / "a.fits").symlink_to(outside / "secret")  # swapped since the listing
    result = python_copy(src, dst, ["1201/a.fits", "1202/a.fits", "1203/a.fits"])
    assert result.copied == [] and len(result.errors) == 3 and result.returncode == 23
    assert (outside / "victim").read_bytes() == b"V" * 2000 and list((outside / "night").iterdir()) == []
    assert not (dst / "1201" / "a.fits").exists() and not os.path.lexists(dst / "1203" / "a.fits")
    assert (dst / "1201" / ".rsync-partial" / "a.fits").is_symlink()  # not ours: left alone


# ---- rsync's check of the sender's names, made here instead ------------------------------------------


def _rsync_printing(tmp_path: Path, version: str) -> Path:
    """A folder holding an ``rsync`` that prints ``version`` as its --version (an older or newer install)."""
    bin_dir = tmp_path / f"rsync-{version}"
    bin_dir.mkdir()
    (bin_dir / "rsync").write_text(f"#!/bin/sh\necho 'rsync  version {version}  protocol version 31'\n")
    (bin_dir / "rsync").chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(("version", "trusts"), [("3.2.3", False), ("3.2.4", False), ("3.2.5", True), ("3.10.0", True)])
def test_a_pull_leaves_rsyncs_quadratic_name_check_to_us_only_where_rsync_has_it(
    tmp_path: Path, monkeypatch, version: str, trusts: bool
) -> None:
    """rsync >= 3.2.5 checks each name a remote sender sends against every name asked for (10 000 names:
    1.2 s of CPU); an older rsync has no such check and no --trust-sender option to turn it off."""
    from obsflow.transfer import rsync

    monkeypatch.setenv("PATH", f"{_rsync_printing(tmp_path, version)}:{os.environ['PATH']}")
    rsync._checks_senders_names.cache_clear()
    try:
        local, remote = parse_location("/data/suth"), parse_location("sha.test:/data/sha")
        assert ("--trust-sender" in rsync.rsync_argv(remote, local, [], [])) is trusts
        assert "--trust-sender" not in rsync.rsync_argv(local, remote, [], [])  # the remote end receives: no check
        assert "--trust-sender" not in rsync.rsync_argv(remote, parse_location("cape.test:/x"), [], [])
    finally:
        rsync._checks_senders_names.cache_clear()


@pytest.mark.parametrize("then", ["rsync-ends-well", "rsync-fails"])
def test_a_file_the_sender_was_not_asked_for_is_removed_and_reported(tmp_path: Path, sshd, monkeypatch, then: str) -> None:
    """With rsync's own check off, a sender that sends a file nobody asked for (a broken or hostile
    instrument host) is caught here: that copy is removed and named as an error; the rest counts.
    Also when rsync then fails as a whole (the hop stops with its reason)."""
    site = make_site(tmp_path, sshd, nights=1, frames=2)
    real = shutil.which("rsync")
    night = f"{site.today:%Y}/{site.today:%m%d}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stands in for the sender's side of it: the copy run also writes and reports one more file.
    (bin_dir / "rsync").write_text(
        "#!/bin/sh\n"
        f'{real} "$@" || exit $?\n'
        'case "$*" in *--files-from=-*) ;; *) exit 0 ;; esac\n'
        'for dest; do :; done\n'
        f'mkdir -p "$dest/{night}" && printf extra > "$dest/{night}/EXTRA.fits"\n'
        f"printf 'OBSFLOW\\t5\\t5\\t2016/09/07-00:00:00\\t00112233445566778899aabbccddeeff\\t{night}/EXTRA.fits\\n'\n"
        + ("echo 'rsync error: error in rsync protocol data stream (code 12)' >&2; exit 12\n" if then == "rsync-fails" else "")
    )  # fmt: skip
    (bin_dir / "rsync").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    report = run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", days=1, today=site.today))
    (outcome,) = report.outcomes
    archive = site.archive_file(site.suth, "sha", night)
    assert sorted(outcome.copied) == sorted(f"{night}/{p.name}" for p in (site.inst / "sha" / night).iterdir())
    assert len(outcome.copied) == 2
    refused = f"{night}/EXTRA.fits: sent by the source though not asked for; removed from " + \
        f"{site.archive_file(site.suth, 'sha', '')}".rstrip("/")  # fmt: skip
    assert outcome.errors == [refused]
    assert (outcome.failure is None) is (then == "rsync-ends-well")  # else the hop stopped with rsync's reason
    assert not (archive / "EXTRA.fits").exists() and report.exit_code == (1 if then == "rsync-ends-well" else 2)


# ---- a push's list through a file on the destination host ---------------------------------------


def _push_five(tmp_path: Path, sshd, caplog, extra: tuple[str, ...] = ()) -> tuple[Path, list[str], object]:
    from obsflow.transfer.remote import Shell

    src, dst = tmp_path / "src", tmp_path / "dst"
    names = [f"2016/0907/SHA_{i}.fits" for i in range(5)]
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode())
    caplog.set_level("DEBUG", logger="obsflow.transfer.rsync")
    result = rsync_copy(parse_location(str(src)), parse_location(f"cape.test:{dst}"), names, extra=extra,
                        ssh_options=sshd.ssh_options, shell=Shell(tuple(sshd.ssh_options)))  # fmt: skip
    return dst, names, result


def test_a_long_push_list_goes_through_a_temp_file_on_the_destination_host(
    tmp_path: Path, sshd, caplog, monkeypatch
) -> None:
    """A sending rsync reads a list on stdin one byte per read(); one read on the receiving host comes
    in its protocol's buffers.  The temp file is gone afterwards."""
    from obsflow.transfer import rsync

    monkeypatch.setattr(rsync, "LIST_ON_HOST_MIN", 3)
    dst, names, result = _push_five(tmp_path, sshd, caplog)
    assert sorted(c.path for c in result.copied) == names
    assert all((dst / name).read_bytes() == name.encode() for name in names)
    ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running rsync")]
    assert len(ran) == 1
    (list_file,) = re.findall(r"--files-from=:(/\S+)", ran[0])
    assert "obsflow-list." in list_file and not Path(list_file).exists()  # the loopback host's file system is ours


def test_a_push_list_that_cannot_be_written_there_goes_on_stdin(tmp_path: Path, sshd, caplog, monkeypatch) -> None:
    from obsflow.transfer import rsync

    monkeypatch.setattr(rsync, "LIST_ON_HOST_MIN", 3)
    monkeypatch.setattr(rsync, "_WRITE_LIST", "echo 'No space left on device' >&2; exit 3\n")  # a full /tmp there
    _, names, result = _push_five(tmp_path, sshd, caplog)
    assert sorted(c.path for c in result.copied) == names
    ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running rsync")]
    assert len(ran) == 1 and "--files-from=- " in ran[0]


def test_a_push_through_rsync_path_keeps_its_list_on_stdin(tmp_path: Path, sshd, caplog, monkeypatch) -> None:
    """``--rsync-path`` may start the remote rsync as another account (``sudo -u archive rsync``), which
    could not read the login's 0600 temp file: the list stays on stdin."""
    from obsflow.transfer import rsync

    monkeypatch.setattr(rsync, "LIST_ON_HOST_MIN", 3)
    _, names, result = _push_five(tmp_path, sshd, caplog, extra=("--rsync-path=rsync",))
    assert sorted(c.path for c in result.copied) == names
    ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running rsync")]
    assert len(ran) == 1 and "--files-from=- " in ran[0]
