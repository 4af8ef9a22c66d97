"""``obsflow sync`` from the command line: output, --json, exit codes, the run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.transfer.runlock import sync_lock
from obsflow.web.pages import human_bytes
from tests.transfer.conftest import damage_catalog, make_site

OBSFLOW = Path(sys.executable).parent / "obsflow"


@pytest.fixture
def small_site(tmp_path: Path, sshd):
    return make_site(tmp_path, sshd, nights=3, frames=1)


def test_sync_prints_its_counts_and_exits_0_then_copies_nothing(small_site, capsys) -> None:
    assert main(["sync", "-c", str(small_site.config_path)]) == 0
    out = capsys.readouterr().out
    assert "instruments:suth sha: copied 3" in out
    assert "suth:cape" in out and "already there" in out
    assert main(["sync", "-c", str(small_site.config_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 0
    assert [(h["copied"], h["present"]) for h in data["hops"]] == [(0, 3)] * 6


def test_cron_output_says_each_count_once(tmp_path: Path, sshd, capsys) -> None:
    """Found by review: the mail gave each hop's counts twice, in its line and again in a table below."""
    site = make_site(tmp_path, sshd, nights=1, frames=1, growing=True)
    assert main(["sync", "-c", str(site.config_path), "-i", "spupnic", "-d", site.today.isoformat()]) == 1
    lines = capsys.readouterr().out.splitlines()
    counted = [i for i, line in enumerate(lines) if "already there" in line]
    assert len(counted) == 2, lines
    first, second = (lines[i] for i in counted)
    assert first.startswith("instruments:suth spupnic: copied ") and second.startswith("suth:cape spupnic: copied ")
    assert "still being written 1, locked 0, conflicts 0, refused 0, errors 0" in first
    assert lines[counted[0] + 1].startswith("  still being written: spupnic.test:")  # below its hop's counts
    assert lines[-1] == f"sync {site.today} .. {site.today}: 1 ok, 1 incomplete"


def test_date_accepts_both_spellings(small_site, capsys) -> None:
    night = small_site.today - timedelta(days=1)
    for text in (f"{night:%Y%m%d}", f"{night:%Y-%m-%d}"):
        assert main(["sync", "-c", str(small_site.config_path), "-d", text, "-i", "shd", "-n", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["window"] == {"first": night.isoformat(), "last": night.isoformat()}
        # a dry run copies nothing, so the second hop has nothing to send on yet
        name = f"{night:%Y}/{night:%m%d}/SHD_{night:%Y%m%d}.0001.fits"
        assert [h["copied_files"] for h in data["hops"]] == [[name], []]
    assert not any(small_site.suth.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "2016-02-30"], "not a date: '2016-02-30'"),
        (["-d", ""], "not a date: ''"),  # -d "$NIGHT" with NIGHT unset: not the whole window
        (["-d", "00010101", "--days", "5"], "the 5-night window ending 0001-01-01 leaves the calendar"),
        (["-d", "99991231"], "leaves the calendar"),
        (["-i", "nosuch"], "unknown instrument 'nosuch' (configured: "),  # verify's words too
        (["--hop", "suth:nowhere"], "unknown hop 'suth:nowhere' (configured: "),
        # Click's own checks (found by review: "Usage: ... Try ... Error: ..." over four lines)
        (["--days", "0"], "Invalid value for '--days': 0 is not in the range 1<=x<=3660 (see 'obsflow sync --help')"),
        (["--no-such-option"], "No such option '--no-such-option' (see 'obsflow sync --help')"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(small_site, capsys, args, message) -> None:
    assert main(["sync", "-c", str(small_site.config_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("obsflow: error: ") and message in err[0]
    assert not any(small_site.suth.iterdir())


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "obsflow.toml").write_text("window_days = 'thirty'\n")
    assert main(["sync", "-c", str(tmp_path / "obsflow.toml")]) == 2
    assert "window_days: must be an integer, not a string 'thirty'" in capsys.readouterr().err


def test_unreachable_host_is_one_clear_line_and_the_rest_runs(tmp_path: Path, sshd) -> None:
    hosts = {"sha": "down.test", "shd": "shd.test", "spupnic": "spupnic.test"}
    site = make_site(tmp_path, sshd, nights=1, frames=1, hosts=hosts)
    done = subprocess.run([str(OBSFLOW), "sync", "-c", str(site.config_path)], capture_output=True, text=True)
    assert done.returncode == 2
    failed = [ln for ln in done.stdout.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("instruments:suth sha: FAILED: cannot reach host")
    assert "down.test" in failed[0]
    assert "instruments:suth shd: copied 1" in done.stdout
    assert "suth:cape spupnic: copied 1" in done.stdout


def test_a_second_sync_refuses_while_one_runs(small_site, capsys) -> None:
    with sync_lock(small_site.config.state_path):
        assert main(["sync", "-c", str(small_site.config_path)]) == 2
    assert "another sync is running" in capsys.readouterr().err
    assert not any(small_site.suth.iterdir())


def test_a_dry_run_on_a_fresh_state_folder_creates_nothing(small_site, capsys) -> None:
    state = small_site.config.state_path
    assert main(["sync", "-c", str(small_site.config_path), "-n", "--json"]) == 0
    assert [len(h["copied_files"]) for h in json.loads(capsys.readouterr().out)["hops"]][:3] == [3, 3, 3]
    assert not state.exists()  # no folder, no catalog, no lock file


def test_a_dry_run_s_output_says_would_copy_not_copied(small_site, capsys) -> None:
    """Found by review: the lines said "would copy 3" and the table below them "copied 3", "sync ..."."""
    assert main(["sync", "-c", str(small_site.config_path), "-n", "-i", "sha"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("sync ") and lines[-1].endswith(" (dry run: nothing copied): 2 ok")
    assert lines[0].startswith("instruments:suth sha: would copy 3 (") and "copied" not in "".join(lines[:-1])
    assert not any(small_site.suth.iterdir())


def test_a_dry_run_takes_no_run_lock_and_records_nothing(small_site, capsys) -> None:
    catalog = small_site.config.catalog_path
    assert main(["sync", "-c", str(small_site.config_path), "-i", "sha"]) == 0
    capsys.readouterr()
    before = catalog.read_bytes()
    with sync_lock(small_site.config.state_path):  # a real sync (cron's) is running meanwhile
        assert main(["sync", "-c", str(small_site.config_path), "-n", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_hop = {(h["hop"], h["instrument"]): h for h in data["hops"]}
    assert len(by_hop["instruments:suth", "shd"]["copied_files"]) == 3
    assert by_hop["instruments:suth", "sha"]["present"] == 3  # read from the catalog and the archive
    assert catalog.read_bytes() == before  # no run rows, no file rows


def test_two_concurrent_syncs_never_both_copy(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=2, frames=1, rsync_options='["--bwlimit=50"]')
    command = [str(OBSFLOW), "sync", "-c", str(site.config_path), "--json"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=120) + (p.returncode,) for p in (first, second)]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2]
    refused = next(err for _, err, code in results if code == 2)
    assert "another sync is running" in refused


def test_json_output_is_one_document_even_when_the_command_cannot_run(tmp_path, capsys) -> None:
    import json

    from obsflow.cli import main

    assert main(["sync", "-c", str(tmp_path / "missing.toml"), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "error": f"config file not found (use --config or OBSFLOW_CONFIG) ({tmp_path / 'missing.toml'})",
        "exit_code": 2,
    }
    assert captured.err.strip().startswith("obsflow: error: config file not found")
    assert main(["index", "--json", str(tmp_path / "not-there.fits")]) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2


def test_an_unexpected_exception_is_a_bug_report_and_exit_2_not_1(tmp_path, capsys, monkeypatch) -> None:
    # 1 means "something left undone" to cron wrappers; a crash is "could not run".  The bug is injected.
    import json

    import obsflow.cli.config
    from obsflow.cli import main

    def broken(path, paths=False):
        raise RuntimeError("injected")

    monkeypatch.setattr(obsflow.cli.config, "check_config", broken)
    assert main(["config", "check", str(tmp_path / "c.toml"), "--json"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and "RuntimeError: injected" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("obsflow: internal error: RuntimeError: injected")
    assert json.loads(captured.out)["exit_code"] == 2


def test_days_beyond_ten_years_is_a_usage_error_not_a_crash(tmp_path, capsys) -> None:
    from obsflow.cli import main

    (tmp_path / "c.toml").write_text("")
    assert main(["sync", "-c", str(tmp_path / "c.toml"), "-n", "--days", "1000000"]) == 2
    assert "1000000 is not in the range 1<=x<=3660" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("[filler]\nout_root = 'sdfits'\n", "configured: nothing to "),  # the filler's config, by mistake
        ("[instruments.sha]\nsource = 'inst/sha'\n[archives.suth]\nlocation = 'suth'\n", "no hops configured"),
        ("[archives.suth]\nlocation = 'suth'\n[[hops]]\nfrom = 'instruments'\nto = 'suth'\n", "no instruments"),
    ],
)
@pytest.mark.parametrize("command", ["sync", "verify"])
def test_a_config_with_nothing_to_do_is_exit_2_not_success(tmp_path, capsys, text, what, command) -> None:
    # `config check` accepts such a file; a nightly job that "succeeds" copying nothing must not.
    (tmp_path / "suth").mkdir()
    (tmp_path / "obsflow.toml").write_text(text)
    assert main([command, "-c", str(tmp_path / "obsflow.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("obsflow: error: ") and what in err[0]


def test_a_window_on_the_first_day_of_the_calendar_is_a_usage_error_for_an_undated_layout(tmp_path, capsys) -> None:
    # Found by review: `-d 00010101` (one night) passed the calendar check, and the window of the filler's
    # products (layout "*") as unix time failed: "internal error: ValueError: year 0 is out of range".
    (tmp_path / "gbt").mkdir()
    (tmp_path / "obsflow.toml").write_text(f'state_dir = "{tmp_path}/state"\n[instruments.gbt]\nsource = '
                                           f'"{tmp_path}/gbt"\nlayout = "*"\n[archives.suth]\nlocation = '
                                           f'"{tmp_path}/suth"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n')  # fmt: skip
    (tmp_path / "suth").mkdir()
    assert main(["sync", "-c", str(tmp_path / "obsflow.toml"), "-n", "-d", "00010101"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["obsflow: error: the 1-night window ending 0001-01-01 leaves the calendar (years 1 to 9999) (-d)"]
    assert main(["sync", "-c", str(tmp_path / "obsflow.toml"), "-n", "-d", "00010102"]) == 0


def test_a_damaged_catalog_stops_the_sync_with_one_line_and_verify_still_checks(small_site, capsys, caplog) -> None:
    """Found by review: a catalog with damaged pages ended `obsflow sync` with a traceback
    ("internal error ... a bug"), though the fix is the operator's (move the catalog aside)."""
    config = str(small_site.config_path)
    assert main(["sync", "-c", config]) == 0
    damage_catalog(small_site.root / "state" / "catalog.sqlite")
    capsys.readouterr()
    assert main(["sync", "-c", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obsflow: error: catalog damaged (database disk image is malformed)"), err
    assert "move it aside" in err and "internal error" not in err and err.count("\n") == 1
    # verify needs the catalog only to keep its record: it checks, says why nothing was kept, and
    # its verdict stands (everything was copied)
    assert main(["verify", "-c", config]) == 0
    assert "could not record the verification in the catalog: catalog damaged" in caplog.text
    assert main(["verify", "-c", config, "--checksum"]) == 2  # the hashes are in the catalog
    assert capsys.readouterr().err.startswith("obsflow: error: catalog damaged")


def test_sizes_read_the_same_in_the_sync_output_and_on_the_status_page(small_site, capsys) -> None:
    """Found by the structure review: the sync printed 2.9 MiB where the page (and the progress bar,
    rich's) said 3.0 MB for the same bytes."""
    assert main(["sync", "-c", str(small_site.config_path), "-i", "sha", "--json"]) == 0
    copied = json.loads(capsys.readouterr().out)["hops"][0]["bytes"]
    assert copied > 1000
    for sha_file in small_site.suth.rglob("*.fits"):
        sha_file.unlink()  # copy the same files again, now with the text output
    assert main(["sync", "-c", str(small_site.config_path), "-i", "sha", "--hop", "instruments:suth"]) == 0
    out = capsys.readouterr().out
    assert f"copied 3 ({human_bytes(copied)})" in out and human_bytes(copied).endswith(" kB"), out


def test_a_hop_that_fails_after_planning_still_names_its_undone_files_in_cron(tmp_path: Path, sshd) -> None:
    # rsync missing on the instrument host: the listing (find over ssh) works, the copy fails.  The
    # plain output (cron's mail) printed the FAILED line and stopped: the table counted a conflict
    # that no line named.
    site = make_site(tmp_path, sshd, nights=1, frames=1, rsync_options='["--rsync-path=/nonexistent/rsync"]')
    (name,) = (p.relative_to(site.inst / "sha").as_posix() for p in (site.inst / "sha").rglob("*.fits"))
    differing = site.archive_file(site.suth, "sha", name)
    differing.parent.mkdir(parents=True)
    differing.write_bytes(b"someone else's file")
    (site.inst / "sha" / name).with_name("SHA_extra.fits").write_bytes(b"x" * 2880)  # still being written
    settled = (site.inst / "sha" / name).with_name("SHA_settled.fits")  # to be copied: rsync runs, and fails
    settled.write_bytes(b"y" * 2880)
    os.utime(settled, (time.time() - 3600,) * 2)
    done = subprocess.run([str(OBSFLOW), "sync", "-c", str(site.config_path), "-i", "sha", "--hop",
                           "instruments:suth"], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert [line for line in lines if "FAILED" in line] == [lines[1]]  # after "copying 1 files"
    # 127 (the remote shell found no rsync), or 12 when rsync sees the connection close first (one CI run)
    assert lines[1].startswith(("instruments:suth sha: FAILED: rsync failed (exit 127)",
                                "instruments:suth sha: FAILED: rsync failed (exit 12)"))  # fmt: skip
    # its counts, on the line after it (no table repeats them)
    assert lines[2].startswith("instruments:suth sha: copied 0 (0 bytes), already there 0, still being written 1, ")
    assert lines[2].endswith(" conflicts 1, refused 0, errors 0")
    assert f"  conflict: {site.config.instruments['sha'].source}/{name}" in lines
    assert any(line.startswith("  still being written: ") and line.endswith("SHA_extra.fits") for line in lines)
