"""``obsflow fill``: chosen scans, no duplicates, JSON, and bad input that damages nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits

from obsflow.cli import main
from obsflow.cli.fill import parse_scan_list
from obsflow.errors import UsageError
from obsflow.online.layout import OutputLayout
from obsflow.sdfits import index, index_fits, writer
from obsflow.simulate.telescope import TelescopeSpec, simulate_project
from tests.fixtures.raw_projects import bank_file_never_came, never_finished_first_scan

PROJECT = "AGBT26A_500_01"


@pytest.fixture(scope="module")
def raw_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    spec = TelescopeSpec(project=PROJECT, scans=6, procedure="OnOff", banks=2, pols=1, channels=1024,
                         integrations=3, seed=2, start=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, root)
    return root / PROJECT


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_scan_list_syntax():
    chosen = parse_scan_list("1,3,5-9")
    assert [n for n in range(12) if n in chosen] == [1, 3, 5, 6, 7, 8, 9]
    for bad in ("3-1", "x", ",", " , ", "1_0", "\u0663", "1-\u0663", "5-", "-5", "1--3"):
        with pytest.raises(UsageError):
            parse_scan_list(bad)


def test_a_huge_scan_range_is_kept_as_a_range():
    chosen = parse_scan_list("1-300000000,7")
    assert 299_999_999 in chosen and 300_000_001 not in chosen
    assert chosen.missing({1, 2, 3, 7, 9}) == "4-6,8,10-300000000"


def test_missing_scans_are_reported_as_ranges(raw_project, tmp_path, capsys):
    assert main(["fill", str(raw_project), str(tmp_path / "out"), "--scans", "1-1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in the scan log: 7-1000" in err[0] and len(err[0]) < 300


def test_an_empty_scan_list_is_a_usage_error(raw_project, tmp_path, capsys):
    assert main(["fill", str(raw_project), str(tmp_path / "out"), "--scans", ","]) == 2
    assert "--scans" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fills_chosen_scans_then_skips_duplicates_with_a_note(raw_project, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "2"]) == 0
    assert f"{PROJECT}: filled 1 scan (" in capsys.readouterr().out  # not "1 scans"
    assert main(["fill", str(raw_project), str(out), "--scans", "1,3-4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [f["scan"] for f in summary["filled"]] == [1, 3, 4]
    assert all(f["banks"] == ["A", "B"] for f in summary["filled"])
    assert main(["fill", str(raw_project), str(out)]) == 0
    captured = capsys.readouterr()
    assert "filled 2 scans" in captured.out and "skipped 4" in captured.out
    assert captured.err.count("already in the SDFITS files: skipped") == 4
    layout = OutputLayout(out)
    for fits_path in layout.bank_files(PROJECT):
        assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None
        scans = index_fits.read_sdfits_tables(fits_path)[0].columns["SCAN"]
        assert sorted(set(int(s) for s in scans)) == [1, 2, 3, 4, 5, 6]
        assert len(scans) == 6 * 3 * 2  # never a duplicate row: 6 scans x 3 integrations x cal on/off


def test_appending_a_scan_keeps_every_earlier_byte_of_the_fits_and_index_files(raw_project, tmp_path):
    """A later scan is appended in place: every FITS and index file keeps its inode and its earlier bytes
    (but NAXIS2 and an index's last_modified line), so GBTIDL's online reader (new index lines only,
    from where it stopped) goes on reading the same file.  A fill that rewrote an index whole (a
    rebuild, an atomic replace) passed every other test."""
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1"]) == 0
    files = [p for p in sorted((out / PROJECT).rglob("*")) if p.suffix in (".fits", ".index")]
    assert len(files) == 2 + 2 + 1  # two banks' FITS files and indexes, the combined index
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in files}
    data_end = {p: writer.read_state(p).data_end for p in files if p.suffix == ".fits"}  # then padding
    assert main(["fill", str(raw_project), str(out), "--scans", "2"]) == 0
    for path, (inode, old) in before.items():
        new = path.read_bytes()
        assert path.stat().st_ino == inode, f"{path.name} was replaced, not appended to"
        assert len(new) > len(old), path.name
        if path.suffix == ".index":
            start = old.index(b"last_modified")  # the one line rewritten in place, at its own length
            old, new = old[:start] + old[start + 256 :], new[:start] + new[start + 256 :]
        else:
            start = old.index(b"NAXIS2  =")  # the row count; new rows go over the old padding
            old, new = old[:start] + old[start + 80 : data_end[path]], new[:start] + new[start + 80 :]
        assert new[: len(old)] == old, f"{path.name}: earlier bytes changed"


def test_the_combined_index_numbers_its_rows_on_across_fills(raw_project, tmp_path):
    """Each fill appends to the combined index with INDEX going on from its last row (GBTIDL reads
    INDEX as the row's number): it runs 0..n-1 over every bank's rows, whatever the fills were."""
    out = tmp_path / "out"
    for scans in ("1", "2", "3-4"):
        assert main(["fill", str(raw_project), str(out), "--scans", scans]) == 0
    layout = OutputLayout(out)
    combined = layout.combined_index(PROJECT)
    assert [row.index for row in index.read_index(combined).rows] == list(range(4 * 2 * 3 * 2))
    assert index_fits.index_mismatch(combined, *layout.bank_files(PROJECT)) is None


def test_unknown_scan_is_a_usage_error(raw_project, tmp_path, capsys):
    assert main(["fill", str(raw_project), str(tmp_path / "out"), "--scans", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in the scan log: 99" in err[0]
    assert not (tmp_path / "out").exists()


def test_corrupt_sdfits_file_is_refused_and_left_alone(raw_project, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1"]) == 0
    bank_a = OutputLayout(out).bank_fits(PROJECT, "A")
    bank_a.write_bytes(bank_a.read_bytes()[:-3000])  # cut inside the rows
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["fill", str(raw_project), str(out), "--scans", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("obsflow: error: ") and bank_a.name in err[0]
    assert _snapshot(out) == before


def test_index_that_disagrees_with_its_fits_file_is_refused(raw_project, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1-2"]) == 0
    bank_index = index_fits.index_path_for(OutputLayout(out).bank_fits(PROJECT, "B"))
    text = bank_index.read_text()
    bank_index.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1])  # one row short
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["fill", str(raw_project), str(out), "--scans", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "index has" in err and "obsflow index" in err and len(err.splitlines()) == 1
    assert _snapshot(out) == before
    # The advice works: rebuild, then fill.
    assert main(["index", str(bank_index.with_suffix(".fits"))]) == 0
    assert main(["fill", str(raw_project), str(out), "--scans", "3"]) == 0


def test_read_only_output_is_one_line_and_nothing_written(raw_project, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        result = subprocess.run(["obsflow", "fill", str(raw_project), str(ro / "out")], capture_output=True,
                                text=True, env=_env())  # fmt: skip
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Read-only file system" in lines[0] and str(ro / "out") in lines[0]
        assert not any(ro.iterdir())
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_raw_source_is_never_modified(raw_project, tmp_path):
    copy = tmp_path / PROJECT
    shutil.copytree(raw_project, copy)
    before = _snapshot(copy)
    assert main(["fill", str(copy), str(tmp_path / "out")]) == 0
    assert _snapshot(copy) == before


def _env() -> dict[str, str]:
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs mounted for the test (remounted read-only by it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_read_only_output_folder_is_one_line_exit_2_and_changes_nothing(raw_project, tmpfs, capsys):
    out = tmpfs / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1"]) == 0
    before = _snapshot(out)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    capsys.readouterr()
    assert main(["fill", str(raw_project), str(out), "--scans", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create lock: Read-only file system" in err[0] and PROJECT in err[0]
    assert _snapshot(out) == before


def test_a_header_value_that_is_not_a_number_fails_that_scan_with_one_line(raw_project, tmp_path, capsys):
    from astropy.io import fits

    raw = tmp_path / PROJECT
    shutil.copytree(raw_project, raw)
    antenna = sorted((raw / "Antenna").iterdir())[1]  # scan 2's
    fits.setval(antenna, "AMBPRESS", value="n/a")
    assert main(["fill", str(raw), str(tmp_path / "out"), "--scans", "1-4"]) == 1  # the rest is filled
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"obsflow: error: scan 2: header keyword AMBPRESS = 'n/a' is not a number ({raw})"
    assert "Traceback" not in "\n".join(err)
    filled = index_fits.read_sdfits_tables(OutputLayout(tmp_path / "out").bank_fits(PROJECT, "A"))[0].columns["SCAN"]
    assert sorted({int(s) for s in filled}) == [1, 3, 4]


def test_a_truncated_go_file_fails_only_its_own_scan(raw_project, tmp_path, capsys):
    # Found by review: every scan's GO header was read up front, so one cut GO file failed the whole project.
    raw = tmp_path / PROJECT
    shutil.copytree(raw_project, raw)
    go = sorted((raw / "GO").iterdir())[1]  # scan 2's
    go.write_bytes(go.read_bytes()[:1000])
    assert main(["fill", str(raw), str(tmp_path / "out"), "--scans", "1-3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("obsflow: error: scan 2: truncated FITS file") and go.name in err[0]
    filled = index_fits.read_sdfits_tables(OutputLayout(tmp_path / "out").bank_fits(PROJECT, "A"))[0].columns["SCAN"]
    assert sorted({int(s) for s in filled}) == [1, 3]


def test_a_held_project_lock_is_waited_for_once_not_once_per_scan(raw_project, tmp_path, capsys):
    """A fill that cannot take the project's lock gives up after one --lock-timeout (not one per
    scan: 100 scans would wait 100 minutes), names the scans it did not try, and exits 2 (it could
    not run, as for `obsflow index`), touching nothing."""
    import time

    from obsflow.lock import held

    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    started = time.monotonic()
    with held(out / "locks", PROJECT, purpose="a fill"):
        code = main(["fill", str(raw_project), str(out), "--lock-timeout", "0.5", "--json"])
    waited = time.monotonic() - started
    assert code == 2
    assert waited < 2.0, f"waited {waited:.1f} s for 6 scans at 0.5 s each"
    failed = json.loads(capsys.readouterr().out)["failed"]
    assert [f["scan"] for f in failed] == [1, 2, 3, 4, 5, 6]
    assert "lock held by" in failed[0]["error"]
    assert all(f["error"] == "not tried: the project's lock is held (see scan 1)" for f in failed[1:])
    assert _snapshot(out) == before


def test_a_held_lock_is_one_error_line_for_the_scans_not_tried(raw_project, tmp_path, capsys):
    from obsflow.lock import held

    out = tmp_path / "out"
    with held(out / "locks", PROJECT, purpose="a fill"):
        assert main(["fill", str(raw_project), str(out), "--lock-timeout", "0.2", "--scans", "1-4,6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("obsflow: error: scan 1: lock held by pid")
    assert err[1] == "obsflow: error: scans 2-4,6: not tried: the project's lock is held (see scan 1)"


def test_a_dry_run_says_what_would_be_filled_and_writes_nothing(raw_project, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--scans", "1-2"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["fill", str(raw_project), str(out), "-n", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True and [s["scan"] for s in plan["skipped"]] == [1, 2]
    assert [(s["scan"], s["banks"]) for s in plan["would_fill"]] == [(n, ["A", "B"]) for n in range(3, 7)]
    assert _snapshot(out) == before and not (out / "locks" / f"{PROJECT}.lock").exists()
    fresh = tmp_path / "never"
    assert main(["fill", str(raw_project), str(fresh), "--dry-run"]) == 0
    assert "would fill 6 scans, skip 0, fail 0" in capsys.readouterr().out and not fresh.exists()


def test_a_dry_run_reads_the_raw_data_as_a_fill_would(raw_project, tmp_path, capsys):
    """A scan whose raw data are cut would fail the fill: the dry run says so (exit 1), naming it."""
    raw_copy = tmp_path / "raw" / PROJECT
    shutil.copytree(raw_project, raw_copy)
    bank = sorted((raw_copy / "VEGAS").glob("*A.fits"))[2]  # scan 3's bank A
    with open(bank, "r+b") as handle:
        handle.truncate(bank.stat().st_size - 2880)
    assert main(["fill", str(raw_copy), str(tmp_path / "out"), "-n", "--json"]) == 1
    plan = json.loads(capsys.readouterr().out)
    assert [f["scan"] for f in plan["failed"]] == [3] and [s["scan"] for s in plan["would_fill"]] == [1, 2, 4, 5, 6]
    assert not (tmp_path / "out").exists()


def test_a_scan_the_log_never_finished_can_be_filled_by_hand(tmp_path, capsys):
    # Found by review: `online status` says of such a scan "fill it by hand if its data are wanted", but
    # `obsflow fill --scans 1` refused it ("scan has not finished", exit 1): there was no way to fill it.
    raw = never_finished_first_scan(tmp_path / "raw")
    out = tmp_path / "out"
    assert main(["fill", str(raw), str(out)]) == 1  # every scan: left out, as the daemon leaves it, and said how
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("obsflow: error: scan 1: the scan log never finished it (a later scan started): "
                    "name it in --scans to fill what its files hold")]  # fmt: skip
    assert main(["fill", str(raw), str(out), "--scans", "1", "-n"]) == 0
    assert main(["fill", str(raw), str(out), "--scans", "1", "--json"]) == 0
    capsys.readouterr()
    product = OutputLayout(out).product_dir(raw.name)
    assert {int(scan) for scan, _ in writer.scans_in_file(product / f"{raw.name}.raw.vegas.A.fits")} == {1, 2}
    assert main(["online", "--raw-root", str(raw.parent), "--out-root", str(out), "--until-idle"]) == 0
    assert main(["online", "status", "--out-root", str(out)]) == 0
    assert "NEVER FINISHED" not in capsys.readouterr().out  # it is filled now


def test_a_scan_stopped_when_the_telescope_went_on_with_another_project_can_be_filled_by_hand(tmp_path, capsys):
    # Found by review: the daemon reports such a scan NEVER FINISHED ("fill it by hand"), but `obsflow fill`
    # read the one project's log, saw scan 1 last and unfinished, and refused it: it might be under way.
    raw = never_finished_first_scan(tmp_path / "raw", scans=1)
    out = tmp_path / "out"
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 1  # alone in the raw root: may be under way
    assert "it may be under way" in capsys.readouterr().err
    earlier = TelescopeSpec(project="AGBT26A_502_01", scans=1, procedure="Track", pols=1, channels=1024,
                            integrations=2, start=datetime(2026, 11, 21, 5, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(earlier, tmp_path / "raw")
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 1  # a project observed before it: no
    capsys.readouterr()
    later = dataclasses.replace(earlier, project="AGBT26A_503_01", start=datetime(2026, 11, 21, 7, 0, tzinfo=UTC))
    simulate_project(later, tmp_path / "raw")
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 0, capsys.readouterr().err
    product = OutputLayout(out).product_dir(raw.name)
    assert {int(scan) for scan, _ in writer.scans_in_file(product / f"{raw.name}.raw.vegas.A.fits")} == {1}
    capsys.readouterr()
    assert main(["fill", str(raw), str(out), "-n", "--json"]) == 0  # every scan: the filled one is skipped
    assert [s["scan"] for s in json.loads(capsys.readouterr().out)["skipped"]] == [1]
    assert main(["fill", str(raw), str(out)]) == 0


def test_a_project_whose_only_scan_was_stopped_and_filled_by_hand_is_not_named_never_finished(tmp_path, capsys):
    # Found by review: the daemon read which scans a project's files hold only for projects with a
    # finished scan, so a project whose one scan was stopped (the telescope went on with another
    # project) stayed NEVER FINISHED after `obsflow fill --scans 1`, and a catch-up run exited 1.
    raw = never_finished_first_scan(tmp_path / "raw", scans=1)
    out = tmp_path / "out"
    later = TelescopeSpec(project="AGBT26A_503_01", scans=1, procedure="Track", pols=1, channels=1024,
                          integrations=2, start=datetime(2026, 11, 21, 7, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(later, tmp_path / "raw")
    assert main(["online", "--raw-root", str(raw.parent), "--out-root", str(out), "--until-idle"]) == 1
    assert "AGBT26A_501_01 scan 1" in capsys.readouterr().err  # not filled: named
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 0
    assert main(["online", "--raw-root", str(raw.parent), "--out-root", str(out), "--until-idle"]) == 0
    assert main(["online", "status", "--out-root", str(out)]) == 0
    assert "NEVER FINISHED" not in capsys.readouterr().out


def test_a_scan_whose_bank_file_is_missing_gets_its_other_banks_filled_and_exit_1(tmp_path, capsys):
    raw, aside = bank_file_never_came(tmp_path / "raw")
    out = tmp_path / "out"
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("obsflow: error: scan 1: VEGAS bank B not filled (A,C were)")
    assert line.endswith(f"({raw / 'VEGAS' / aside.name})")  # what, then where
    assert "filled 1 scan (" in captured.out and "1 without some banks" in captured.out
    layout = OutputLayout(out)
    assert [p.name.split(".")[-2] for p in layout.bank_files(raw.name)] == ["A", "C"]
    for path in layout.bank_files(raw.name):
        with fits.open(path) as hdul:
            assert set(hdul[1].data["SCAN"].tolist()) == {1}
            assert len(index.read_index(index_fits.index_path_for(path)).rows) == hdul[1].header["NAXIS2"]
    assert index_fits.index_mismatch(layout.combined_index(raw.name), *layout.bank_files(raw.name)) is None


def test_json_names_the_missing_bank_and_a_late_bank_is_filled_once(tmp_path, capsys):
    raw, aside = bank_file_never_came(tmp_path / "raw")
    out = tmp_path / "out"
    assert main(["fill", str(raw), str(out), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [(f["scan"], f["banks"], f["missing_banks"]) for f in summary["filled"]] == [
        (1, ["A", "C"], ["B"]), (2, ["A", "B", "C"], [])]
    (missing,) = summary["missing_banks"]
    assert missing["scan"] == 1 and missing["banks"] == ["B"] and missing["files"] == [str(raw / "VEGAS" / aside.name)]
    assert summary["failed"] == [] and "bank B" in missing["error"]
    aside.rename(raw / "VEGAS" / aside.name)  # the late file
    assert main(["fill", str(raw), str(out), "--scans", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(f["scan"], f["banks"]) for f in summary["filled"]] == [(1, ["B"])] and summary["missing_banks"] == []
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 0  # again: already everywhere
    assert "skipped 1" in capsys.readouterr().out
    layout = OutputLayout(out)
    for path in layout.bank_files(raw.name):
        with fits.open(path) as hdul:
            scans = hdul[1].data["SCAN"].tolist()
        assert scans.count(1) == scans.count(2) > 0  # each scan once in every bank
    assert index_fits.index_mismatch(layout.combined_index(raw.name), *layout.bank_files(raw.name)) is None


def test_a_dry_run_names_the_missing_bank(tmp_path, capsys):
    raw, aside = bank_file_never_came(tmp_path / "raw")
    assert main(["fill", str(raw), str(tmp_path / "out"), "-n", "--json"]) == 1
    plan = json.loads(capsys.readouterr().out)
    assert [(s["scan"], s["banks"], s["missing_banks"]) for s in plan["would_fill"]] == [
        (1, ["A", "C"], ["B"]), (2, ["A", "B", "C"], [])]
    assert not (tmp_path / "out").exists()
    assert main(["fill", str(raw), str(tmp_path / "out"), "-n", "--scans", "1"]) == 1
    err = capsys.readouterr().err
    assert "scan 1: VEGAS bank B not filled" in err and aside.name in err
    out = tmp_path / "out"
    assert main(["fill", str(raw), str(out), "--scans", "1"]) == 1  # banks A and C
    aside.rename(raw / "VEGAS" / aside.name)  # the late file: the dry run sees what the fill would add
    capsys.readouterr()
    assert main(["fill", str(raw), str(out), "-n", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(s["scan"], s["banks"]) for s in plan["would_fill"]] == [(1, ["B"]), (2, ["A", "B", "C"])]


def test_a_negative_lock_timeout_is_refused_as_online_refuses_it(raw_project, tmp_path, capsys):
    """Found by review: -1 was taken, and a held lock then read "gave up after -1 s"."""
    out = tmp_path / "out"
    assert main(["fill", str(raw_project), str(out), "--lock-timeout", "-1"]) == 2
    assert capsys.readouterr().err == ("obsflow: error: Invalid value for '--lock-timeout': -1.0 is not in the range "
                                       "x>=0 (see 'obsflow fill --help')\n")  # fmt: skip
    assert not out.exists()
