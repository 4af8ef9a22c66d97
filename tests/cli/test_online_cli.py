"""``obsflow online status`` from the command line: what it prints for an output root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from obsflow.cli import main


def test_status_of_a_missing_output_root_is_an_error_not_a_quiet_root(tmp_path: Path, capsys) -> None:
    """A typo in --out-root used to read "no online daemon has run on ..." with exit 0."""
    missing = tmp_path / "sdfit"
    assert main(["online", "status", "--out-root", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"obsflow: error: output root not found ({missing})"]
    assert main(["online", "status", "--out-root", str(missing), "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == {"error": f"output root not found ({missing})", "exit_code": 2}
    assert not missing.exists()


def test_status_of_a_root_no_daemon_ran_on_still_exits_0(tmp_path: Path, capsys) -> None:
    assert main(["online", "status", "--out-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no online daemon has run on {tmp_path}\n"


def test_status_without_an_active_project_says_none_not_python_none(tmp_path: Path, capsys) -> None:
    """A catch-up run that found nothing to fill leaves no active project: not "active project: None"."""
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 0
    capsys.readouterr()
    assert main(["online", "status", "--out-root", str(out)]) == 0
    text = capsys.readouterr().out
    assert "; no active project\n" in text and "None" not in text


def _sync_only_config(tmp_path: Path) -> Path:
    """A config of the nightly sync alone: no [filler] table."""
    config = tmp_path / "obsflow.toml"
    config.write_text(f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\n[archives.site]\nlocation = "{tmp_path / "a"}"\n'
                      '[[hops]]\nfrom = "instruments"\nto = "site"\n')  # fmt: skip
    return config


def test_a_config_without_a_filler_table_is_refused_not_filled_into_home_sdfits(tmp_path: Path, capsys) -> None:
    """The built-in /home/gbtdata and /home/sdfits are no settings of a sync-only config (nor of $OBSFLOW_CONFIG)."""
    config = _sync_only_config(tmp_path)
    assert main(["online", "-c", str(config), "--until-idle"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"obsflow: error: {config} has no [filler] table: add one (examples/gbt-filler.toml) or give "
        "--raw-root and --out-root")
    assert main(["online", "-c", str(config), "status"]) == 2
    assert capsys.readouterr().err.strip() == f"obsflow: error: {config} has no [filler] table: give --out-root"
    # the roots given on the command line: the rest of the settings are the defaults, as without a file
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    assert main(["online", "-c", str(config), "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 0
    assert (out / "locks").is_dir()


def test_status_without_any_root_says_how_to_give_one(capsys) -> None:
    assert main(["online", "status"]) == 2
    assert capsys.readouterr().err.strip() == (
        "obsflow: error: give --out-root, or a config with a [filler] table: obsflow online -c FILE status")


def test_the_status_page_of_a_config_without_a_filler_says_so(tmp_path: Path) -> None:
    from obsflow.config import load_config
    from obsflow.web import status
    from obsflow.web.pages import filler_section

    config = load_config(_sync_only_config(tmp_path))
    filler = status.filler_status(config)
    assert (filler["configured"], filler["out_root"], filler["has_run"]) == (False, None, False)
    assert "no online filler in this config (it has no [filler] table)" in filler_section(filler, 0.0)
    assert status.fill_history(config) == []


def test_a_catch_up_run_without_its_raw_root_creates_no_output_root(tmp_path: Path, capsys, caplog) -> None:
    """It used to make OUT (its locks, status and service log), and log "polling on", before it refused."""
    raw, out = tmp_path / "gbtdata", tmp_path / "out"
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"obsflow: error: cannot read raw data root: No such file or directory ({raw})"
    ]
    assert not out.exists() and not caplog.records


def test_a_daemon_refused_for_a_lock_in_use_creates_no_output_root(tmp_path: Path, capsys) -> None:
    """Another daemon holds the lock in a shared --locks folder: refused before OUT is made."""
    from obsflow.lock import DAEMON_LOCK, take_lock

    raw, out, locks = tmp_path / "raw", tmp_path / "out", tmp_path / "locks"
    raw.mkdir()
    take_lock(locks, DAEMON_LOCK, timeout_s=0, purpose="online daemon")  # held by this live process
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--locks", str(locks), "--until-idle"]) == 2
    assert "another obsflow online daemon" in capsys.readouterr().err
    assert not out.exists()


def test_an_output_root_under_a_file_is_one_line_and_nothing_made(tmp_path: Path, capsys) -> None:
    """`--out-root somefile/X` (a typo) was a NotADirectoryError traceback."""
    raw, somefile = tmp_path / "raw", tmp_path / "somefile"
    raw.mkdir()
    somefile.write_text("not a folder\n")
    out = somefile / "X"
    for extra in ([], ["--locks", str(tmp_path / "locks")], ["--follow-hours", "0"]):
        assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle", *extra]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"obsflow: error: output root is under the file {somefile} ({out})"
        ]
    assert somefile.read_text() == "not a folder\n" and not (tmp_path / "locks" / "obsflow-online.lock").exists()


def _bad_root_lines(*args: str) -> list[str]:
    """What ``obsflow <args>`` says on stderr run without the capabilities that bypass file modes; asserts exit 2."""
    from tests.transfer.nocap import obsflow_nocap

    done = obsflow_nocap(*args)
    assert done.returncode == 2, done
    return done.stderr.splitlines()


def test_an_unreadable_or_unwritable_output_root_is_one_line(tmp_path: Path) -> None:
    raw, out, fresh = tmp_path / "raw", tmp_path / "out", tmp_path / "fresh"
    raw.mkdir()
    assert main(["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle"]) == 0  # a status saved
    status = out / ".obsflow" / "online-status.json"
    unreadable = [f"obsflow: error: cannot read the online daemon's status: Permission denied ({status})"]
    run = ("online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle")
    fresh.mkdir(mode=0o555)
    try:
        assert _bad_root_lines("online", "--raw-root", str(raw), "--out-root", str(fresh), "--until-idle") == [
            f"obsflow: error: cannot create lock: Permission denied ({fresh / 'locks' / 'obsflow-online.lock'})"]
        out.chmod(0o600)  # listed, not entered
        assert _bad_root_lines(*run) == unreadable
        assert _bad_root_lines("online", "status", "--out-root", str(out)) == unreadable
        out.chmod(0o755)
        status.chmod(0)
        assert _bad_root_lines(*run) == unreadable
        assert _bad_root_lines("online", "status", "--out-root", str(out)) == unreadable
        status.chmod(0o644)
        (raw / "AGBT26A_001_01").mkdir()
        status.parent.chmod(0)  # its journals cannot be listed either: a fill left half done would be filled over
        assert _bad_root_lines(*run, "--projects", "AGBT26A_001_01") == [
            f"obsflow: error: cannot read the journal folder: Permission denied ({status.parent / 'journal'})"]
    finally:
        for path in (status.parent, out, fresh):
            path.chmod(0o755)
        status.chmod(0o644)


def test_a_catch_up_run_of_projects_not_under_the_raw_root_names_them(tmp_path: Path, capsys) -> None:
    """`--projects TYPO` ended with exit 0, having done nothing and said nothing."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "AGBT26A_001_01").mkdir(parents=True)  # there, with nothing to fill yet: fine
    run = ["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle", "--projects"]
    assert main([*run, "AGBT26A_001_01"]) == 0
    assert capsys.readouterr().err == ""
    shutil.rmtree(out)
    assert main([*run, "AGBT26A_01_01"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"obsflow: error: project not found under the raw root: AGBT26A_01_01 ({raw})"]
    assert main([*run, "AGBT26A_001_01,AGBT26A_002_01,../raw"]) == 2  # one typo among them: none is filled
    assert capsys.readouterr().err.splitlines() == [
        f"obsflow: error: projects not found under the raw root: AGBT26A_002_01, ../raw ({raw})"]
    assert not out.exists()


def test_a_catch_up_run_takes_a_project_as_present_as_the_daemon_does(tmp_path: Path, capsys) -> None:
    """A plain file of that name is no project folder: the catch-up run passed it (exit 0, nothing done) where
    the daemon says it is not present."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    (raw / "AGBT26A_001_01").write_text("not a project folder\n")
    run = ["online", "--raw-root", str(raw), "--out-root", str(out), "--until-idle", "--projects", "AGBT26A_001_01"]
    assert main(run) == 2
    assert capsys.readouterr().err.splitlines() == [f"obsflow: error: project not found under the raw root: AGBT26A_001_01 ({raw})"]
    assert not out.exists()
