"""The TOML config and ``obsflow config check``: one line per problem (key, what, line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import check_config, load_config, parse_location

REPO = Path(__file__).resolve().parents[1]

BAD = """\
window_days = 0
colour = "blue"
[ssh]
options = "-F cfg"
[transfer]
rsync_options = ["--inplace", "--bwlimit=1m"]
[instruments.sha]
layout = "{yy}/{mmdd}"
[archives.suth]
location = "/data"
require_marker = "yes"
[[hops]]
from = "instruments"
to = "cape"
"""


def test_check_prints_one_line_per_problem_with_key_and_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    expected = [
        "colour: unknown key (line 2)",
        "window_days: must be at least 1 (line 1)",
        "ssh.options: must be a list, not a string '-F cfg' (line 4)",
        "transfer.rsync_options: '--inplace' would break obsflow's no-overwrite, no-partial rules (line 6)",
        "instruments.sha.source: is required ([user@]host:path or a local path) (line 7)",
        "instruments.sha.layout: unknown field {yy} (use {yyyy}, {mm}, {dd}, {mmdd}, {yyyymmdd}) (line 8)",
        "archives.suth.require_marker: must be true or false, not a string 'yes' (line 11)",
        "hops[0].to: unknown archive 'cape' (line 14)",
    ]
    assert lines == [f"{path}: {line}" for line in expected]


@pytest.mark.parametrize(
    ("toml", "what"),
    [  # found by review: "must be a int, not str '30'", Python's names where TOML's are meant
        ('window_days = "30"', "must be an integer, not a string '30'"),
        ("window_days = true", "must be an integer, not a boolean true"),
        ("settle_seconds = [1]", "must be a number, not a list [1]"),
        ("state_dir = 5", "must be a string, not an integer 5"),
        ("ssh = 1", "must be a table, not an integer 1"),
        ("[ssh]\nmultiplex = 1", "must be true or false, not an integer 1"),
        ("window_days = 2026-12-01", "must be an integer, not a date 2026-12-01"),
    ],
)
def test_a_wrong_type_is_named_in_toml_s_words(tmp_path: Path, toml: str, what: str) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(toml + "\n")
    assert [p.what for p in check_config(path)] == [what]


def test_check_accepts_the_saao_example(capsys) -> None:
    example = REPO / "examples" / "saao.toml"
    assert main(["config", "check", "-c", str(example)]) == 0
    assert capsys.readouterr().out.strip() == f"{example}: ok"
    config = load_config(example)
    assert list(config.instruments) == ["sha", "shd", "spupnic"]
    assert [h.label for h in config.hops] == ["instruments:suth", "suth:cape"]
    assert config.archives["cape"].location.is_remote and not config.archives["suth"].location.is_remote
    assert config.host_root("cape")[0][1] == parse_location("obsflow@astro.cape:/data/telescopedata/74in/sha")
    assert config.rsync_options == ("--bwlimit=40m",) and config.ssh_multiplex
    assert config.archives["suth"].marker == "/data/telescopedata/.obsflow-archive"


def test_check_json(tmp_path: Path, capsys) -> None:
    import json

    path = tmp_path / "c.toml"
    path.write_text("[transfer]\nwait_seconds = -1\n")
    assert main(["config", "check", str(path), "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["problems"] == [{"key": "transfer.wait_seconds", "what": "must not be negative", "line": 2}]


def test_locations() -> None:
    assert parse_location("observer@shocnawe:/data/sha").ssh_target == "observer@shocnawe"
    assert not parse_location("/data/telescopedata").is_remote
    assert parse_location("./a:b").path.endswith("a:b")


def test_an_undated_layout_and_an_instruments_own_settle_time_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(
        '[instruments.gbt]\nsource = "/home/sdfits"\nlayout = "*"\nsettle_seconds = 3600\n'
        '[instruments.bad]\nsource = "/data"\nlayout = "flat"\nsettle_seconds = -1\ngrows = "yes"\n'
        'keep_superseded_days = 7\n'
        '[instruments.worse]\nsource = "/data"\ngrows = true\nkeep_superseded_days = -1\n'
        '[archives.suth]\nlocation = "/archive"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    problems = {p.key: p.what for p in check_config(path)}
    assert set(problems) == {"instruments.bad.layout", "instruments.bad.settle_seconds", "instruments.bad.grows",
                             "instruments.bad.keep_superseded_days", "instruments.worse.keep_superseded_days"}
    assert '"*"' in problems["instruments.bad.layout"]
    assert "grows = true" in problems["instruments.bad.keep_superseded_days"]
    assert "negative" in problems["instruments.worse.keep_superseded_days"]


def test_two_instruments_cannot_share_a_folder_in_the_archives(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(
        '[instruments.sha]\nsource = "/a"\npath = "74in/sha"\n'
        '[instruments.shd]\nsource = "/b"\npath = "74in/sha"\n'  # the same folder
        '[instruments.spupnic]\nsource = "/d"\npath = "74in/spupnic"\n'  # apart from sha: fine
        '[instruments.shax]\nsource = "/e"\npath = "74in/sha2"\n'  # a longer name, not a subfolder: fine
        '[instruments.all74]\nsource = "/c"\npath = "74in"\n'  # the others' folders are inside it
        '[archives.suth]\nlocation = "/archive"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    problems = {p.key: p.what for p in check_config(path)}
    assert set(problems) == {"instruments.shd.path", "instruments.all74.path"}
    assert "instruments.sha.path" in problems["instruments.shd.path"]


def test_only_rsync_options_that_tune_the_transfer_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    refused = ["--remove-sent-files", "-T/tmp/x", "--keep-dirlinks", "--delete-missing-args", "-h", "--info=name0",
               "-zW", "--backup"]  # fmt: skip
    accepted = ["--bwlimit=40m", "--timeout=600", "-z", "--rsync-path=/opt/rsync/bin/rsync", "--chmod=Fu+w", "-W"]
    for option in refused + accepted:
        path.write_text(f'[transfer]\nrsync_options = ["{option}"]\n[archives.a]\nlocation = "/a"\n')
        problems = [p for p in check_config(path) if p.key == "transfer.rsync_options"]
        assert (problems != []) == (option in refused), (option, problems)
        assert all(repr(option) in p.what for p in problems)


def test_every_example_config_is_valid() -> None:
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert {p.name for p in examples} >= {"saao.toml", "gbt-products.toml"}
    for path in examples:
        assert check_config(path) == [], path
    gbt = load_config(Path(__file__).parents[1] / "examples" / "gbt-products.toml").instruments["gbt"]
    assert gbt.layout == "*" and gbt.settle_seconds == 600 and gbt.grows


def test_numbers_out_of_range_are_problems(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(
        "settle_seconds = nan\nwindow_days = 1000000\n"  # nan compares false with everything: no settle time
        "[instruments.sha]\nsource = \"/a\"\nsettle_seconds = inf\n"
        "[filler]\npoll_seconds = -5.0\nretry_limit = 0\nlock_timeout_seconds = -1\nforget_after_hours = -1\n"
        "[web]\nport = 70000\nhost = \"\"\n"
    )
    problems = {p.key: (p.what, p.line) for p in check_config(path)}
    assert problems == {
        "settle_seconds": ("must be a finite number, not nan", 1),
        "window_days": ("must be at most 3660", 2),
        "instruments.sha.settle_seconds": ("must be a finite number, not inf", 5),
        "filler.poll_seconds": ("must be at least 0.01", 7),
        "filler.retry_limit": ("must be at least 1", 8),
        "filler.lock_timeout_seconds": ("must be at least 0", 9),
        "filler.forget_after_hours": ("must be at least 0", 10),
        "web.port": ("must be at most 65535", 12),
        "web.host": ("must not be empty (an empty host listens on every address)", 13),
    }


def test_the_fillers_flush_setting_is_deferred_unless_told_per_scan(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text('[filler]\nraw_root = "/raw"\n')
    assert load_config(path).filler.flush == "deferred"
    path.write_text('[filler]\nraw_root = "/raw"\nflush = "per-scan"\n')
    assert load_config(path).filler.flush == "per-scan"
    path.write_text('[filler]\nraw_root = "/raw"\nflush = "never"\n')
    problems = {p.key: (p.what, p.line) for p in check_config(path)}
    assert problems == {"filler.flush": ("must be 'deferred' or 'per-scan', not 'never'", 3)}


def test_two_archives_in_one_folder_are_refused(tmp_path: Path) -> None:
    # One folder named twice would make one copy count as two (and verify say so).
    path = tmp_path / "obsflow.toml"
    path.write_text(
        '[archives.site]\nlocation = "/data/archive"\n'
        '[archives.remote]\nlocation = "/data/archive/"\n'  # the same folder
        '[archives.inner]\nlocation = "/data/archive/deep"\n'  # inside it
        '[archives.cape]\nlocation = "cape:/data/archive"\n'  # the same path on another host: fine
        '[archives.cape2]\nlocation = "obsflow@cape:/data/archive"\n'  # the same host as cape
        '[archives.apart]\nlocation = "/data/archive2"\n'  # a longer name, not inside: fine
    )
    problems = {p.key: p.what for p in check_config(path)}
    assert set(problems) == {"archives.remote.location", "archives.inner.location", "archives.cape2.location"}
    assert "archives.site" in problems["archives.remote.location"]


def test_relative_local_paths_start_at_the_config_files_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "obsflow.toml"
    path.write_text(
        'locks = ["locks", "host:/l"]\n[instruments.sha]\nsource = "inst/sha"\n'
        '[archives.suth]\nlocation = "../archive"\n[archives.cape]\nlocation = "cape:rel"\n'
        '[filler]\nout_root = "sdfits"\nraw_root = "/abs/raw"\n'
    )
    monkeypatch.chdir("/")  # cron starts elsewhere
    config = load_config(path)
    assert config.instruments["sha"].source.path == str(tmp_path / "conf" / "inst" / "sha")
    assert config.archives["suth"].location.path == str(tmp_path / "conf" / ".." / "archive")
    assert config.archives["cape"].location.path == "rel"  # remote: relative to the login's home, as in rsync
    assert config.locks == (str(tmp_path / "conf" / "locks"), "host:/l")
    assert (config.filler.out_root, config.filler.raw_root) == (str(tmp_path / "conf" / "sdfits"), "/abs/raw")


def test_a_config_that_is_not_utf8_is_one_problem_with_its_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_bytes(b"window_days = 3\n# caf\xe9\n")
    assert [str(p) for p in check_config(path)] == ["(file): not UTF-8 text (byte 0xe9) (line 2)"]
    assert main(["sync", "-c", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == f"obsflow: error: config: (file): not UTF-8 text (byte 0xe9) (line 2) ({path})"


def test_problem_lines_point_into_the_right_table(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(
        "[instruments.a]\n"  # 1: no source here
        'layout = "{yyyy}"\n'  # 2
        "[instruments.b]\n"  # 3
        'source = "/b"\n'  # 4
        '[archives.s]\nlocation = "/s"\n'  # 5, 6
        '[[hops]]\nfrom = "instruments"\nto = "s"\n'  # 7-9
        '[[hops]]   # the second\nfrom = "nowhere"\nto = "s"\n'  # 10-12
    )
    problems = {p.key: p.line for p in check_config(path)}
    assert problems == {"instruments.a.source": 1, "hops[1].from": 11}


def test_a_mistyped_key_inside_a_table_is_named_with_its_table_and_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text(
        "[instruments.sha]\n"  # 1
        'source = "/sha"\n'  # 2
        'sorce = "/typo"\n'  # 3
        '[archives.suth]\nlocation = "/suth"\n'  # 4, 5
        "keep_days = 3\n"  # 6
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n'  # 7-9
        'to_host = "x"\n'  # 10
    )
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().out.strip().splitlines() == [
        f"{path}: instruments.sha.sorce: unknown key (line 3)",
        f"{path}: archives.suth.keep_days: unknown key (line 6)",
        f"{path}: hops[0].to_host: unknown key (line 10)",
    ]


def test_patterns_that_match_no_file_name_are_problems_not_a_quiet_night(tmp_path: Path, capsys) -> None:
    # rclone's "**/*.fits" or an empty list made the sync copy nothing and verify mail "OK: 0 files
    # present" every morning (exit 0): the listing matches a pattern against a file's name alone.
    night = tmp_path / "inst" / "sha" / "2026" / "1201"
    night.mkdir(parents=True)
    frame = night / "SHA_20261201.0001.fits"
    frame.write_bytes(b"x" * 2880)
    os.utime(frame, (1764633600, 1764633600))  # 2026-12-02 00:00 UTC: settled
    (tmp_path / "suth").mkdir()
    hop = '[archives.suth]\nlocation = "suth"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    path = tmp_path / "obsflow.toml"
    path.write_text(
        'state_dir = "state"\npatterns = ["**/*.fits"]\n'  # 2
        '[instruments.sha]\nsource = "inst/sha"\n'  # 3, 4
        '[instruments.shd]\nsource = "inst/shd"\npatterns = []\n'  # 5-7
        '[instruments.spupnic]\nsource = "inst/spupnic"\npatterns = ["*.fits", ""]\n' + hop  # 8-10
    )
    assert [str(p) for p in check_config(path)] == [
        "patterns: '**/*.fits' holds a '/': patterns match file names, not paths (e.g. \"*.fits\") (line 2)",
        (
            'instruments.shd.patterns: must name at least one pattern, e.g. ["*.fits"]: an empty list matches no '
            "file (line 7)"
        ),
        "instruments.spupnic.patterns: an empty pattern matches no file (line 10)",
    ]
    capsys.readouterr()
    for command in (["verify", "--today", "2026-12-02"], ["sync", "-d", "2026-12-01"]):
        assert main([*command, "-c", str(path)]) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.startswith("obsflow: error: config: patterns: '**/*.fits' holds a '/'") and "\n" not in err
    path.write_text('state_dir = "state"\n[instruments.sha]\nsource = "inst/sha"\n' + hop)  # the default: *.fits
    assert check_config(path) == []
    assert main(["sync", "-d", "2026-12-01", "-c", str(path)]) == 0
    assert (tmp_path / "suth" / "sha" / "2026" / "1201" / "SHA_20261201.0001.fits").stat().st_size == 2880


def test_ssh_options_that_ssh_would_take_for_the_host_are_problems(tmp_path: Path) -> None:
    """Found by the security review: ``options = ["cape.test"]`` (or a value whose option was left
    out) made ssh take it for the host and the real host for the command to run there."""
    path = tmp_path / "obsflow.toml"
    cases = {
        '["-o", "BatchMode=yes", "-F", "/etc/obsflow/ssh_config", "-4", "-oConnectTimeout=9"]': [],
        '["-i", "/k", "-p", "2222", "-J", "jump.saao"]': [],
        '["-4i", "/k", "-qp", "2222", "-vvv", "-p22"]': [],  # bundled flags, as ssh's getopt reads them (review)
        '["-4", "-ip", "/k"]': ["/k"],  # -i takes the rest, "p", as its value: "/k" would be the host
        '["cape.test"]': ["cape.test"],
        '["BatchMode=yes"]': ["BatchMode=yes"],  # its -o left out
        '["-4", "-v", "uname -a"]': ["uname -a"],
    }
    for options, stray in cases.items():
        path.write_text(f"[ssh]\noptions = {options}\n[archives.a]\nlocation = \"/a\"\n")
        problems = [p.what for p in check_config(path) if p.key == "ssh.options"]
        assert [w.split("'")[1] for w in problems] == stray, (options, problems)
        assert all("ssh would take it for the host" in w for w in problems)


def test_the_catalog_keeps_rows_long_enough_for_every_window_and_verification(tmp_path: Path, capsys) -> None:
    """keep_catalog_days below window_days + 62 would drop rows the sync window or verify's two months read."""
    path = tmp_path / "obsflow.toml"
    path.write_text("window_days = 45\nsettle_seconds = 60\nkeep_catalog_days = 100\n")
    assert main(["config", "check", str(path)]) == 2
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line == (f"{path}: keep_catalog_days: must be at least 107 (window_days 45 + 62: the sync window and "
                    "verify's two months read the catalog rows of those nights) (line 3)")
    path.write_text('keep_catalog_days = 400.5\n[transfer]\nwait_seconds = 1\n')
    assert [(p.key, p.what, p.line) for p in check_config(path)] == [
        ("keep_catalog_days", "must be an integer, not a float 400.5", 1)]
    path.write_text("keep_catalog_days = 107\nwindow_days = 45\n")
    assert check_config(path) == [] and load_config(path).keep_catalog_days == 107


def test_the_catalog_keeps_400_days_by_default_or_longer_for_a_long_window(tmp_path: Path) -> None:
    path = tmp_path / "obsflow.toml"
    path.write_text("window_days = 30\n")
    assert load_config(path).keep_catalog_days == 400
    path.write_text("window_days = 1000\n")  # no key: never shorter than the window needs
    assert load_config(path).keep_catalog_days == 1062


def test_a_toml_syntax_error_names_its_line_once(tmp_path: Path, capsys) -> None:
    """Found by review: "... declaration (at line 3, column 15) (line 3)", the line twice."""
    path = tmp_path / "obsflow.toml"
    path.write_text("window_days = 30\n\n[archives.site\n")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().out == (
        f"{path}: (syntax): not valid TOML: Expected ']' at the end of a table declaration (column 15) (line 3)\n"
    )


# ``config check --paths``: the local folders a config names, looked at on this host (opt-in: the
# examples and most tests name /data/... folders that are not here).


def _account() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _folders_world(tmp_path: Path) -> tuple[Path, Path]:
    """A config naming local folders of every kind, all usable, beside remote locations; and its folder."""
    root = tmp_path.resolve()  # as the config's relative paths are taken
    for folder in ("inst/sha", "disk/suth", "locks", "raw/gbtdata"):
        (root / folder).mkdir(parents=True)
    (root / "suth").symlink_to(root / "disk" / "suth")  # a symlink to a folder is a folder
    config = root / "obsflow.toml"
    config.write_text(
        'state_dir = "state/obsflow"\n'  # 1: created on first run
        'locks = ["locks", "sdfits.invalid:/home/sdfits/locks"]\n'  # 2
        '[instruments.sha]\nsource = "inst/sha"\n'  # 3, 4
        '[instruments.shd]\nsource = "observer@shocnawe.invalid:/data/shd"\n'  # 5, 6
        '[archives.suth]\nlocation = "suth"\n'  # 7, 8
        '[archives.cape]\nlocation = "obsflow@cape.invalid:/data/telescopedata"\n'  # 9, 10
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n[[hops]]\nfrom = "suth"\nto = "cape"\n'  # 11-16
        '[filler]\nraw_root = "raw/gbtdata"\nout_root = "sdfits"\n'  # 17-19: out_root made on first run
    )
    return config, root


def test_check_paths_accepts_folders_that_are_there_or_can_be_made_and_skips_remote_ones(tmp_path, capsys) -> None:
    config, _root = _folders_world(tmp_path)
    assert check_config(config, paths=True) == []
    assert main(["config", "check", "--paths", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: ok\n"


def test_check_paths_names_each_folder_that_is_missing_or_not_a_folder(tmp_path, capsys) -> None:
    config, root = _folders_world(tmp_path)
    (root / "inst" / "sha").rmdir()
    (root / "disk" / "suth").rmdir()  # the archive's symlink now points nowhere
    (root / "locks").rmdir()
    (root / "locks").write_text("")  # a file where a folder is expected
    (root / "state").write_text("")  # in the way of the state folder the first run would make
    (root / "raw" / "gbtdata").rmdir()
    assert check_config(config) == []  # without --paths, as before: only the file itself is checked
    assert main(["config", "check", str(config)]) == 0
    capsys.readouterr()
    assert main(["config", "check", "--paths", str(config)]) == 2
    expected = [
        f"locks: {root}/locks is not a folder (line 2)",
        f"state_dir: {root}/state/obsflow cannot be created: {root}/state is not a folder (line 1)",
        f"instruments.sha.source: {root}/inst/sha does not exist (line 4)",
        f"archives.suth.location: {root}/suth is a broken symlink (to {root}/disk/suth) (line 8)",
        f"filler.raw_root: {root}/raw/gbtdata does not exist (line 18)",
    ]
    assert capsys.readouterr().out.splitlines() == [f"{config}: {line}" for line in expected]
    assert main(["config", "check", "--paths", "--json", str(config)]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert [f"{p['key']}: {p['what']} (line {p['line']})" for p in data["problems"]] == expected


def test_check_paths_leaves_alone_a_key_already_wrong_and_a_filler_the_config_does_not_have(tmp_path) -> None:
    # An instrument without a source would have its default "." (the config's folder) looked at: not what was written.
    path = tmp_path / "obsflow.toml"
    path.write_text('state_dir = 5\n[instruments.sha]\nlayout = "*"\n[archives.suth]\nlocation = ""\n')
    problems = check_config(path)
    assert [p.key for p in problems] == ["state_dir", "instruments.sha.source", "archives.suth.location"]
    assert check_config(path, paths=True) == problems  # no [filler]: its default /home/gbtdata is nobody's setting


def test_check_paths_tells_what_this_account_may_not_do_in_a_folder(tmp_path) -> None:
    """Run without the capabilities that let root past file modes (tests/transfer/nocap.py), as the sync's
    own account would be; root itself may read and write them all, and is told so."""
    from tests.transfer.nocap import assert_unreadable, obsflow_nocap

    config, root = _folders_world(tmp_path)
    (root / "state").mkdir()
    (root / "sdfits" / "locks").mkdir(parents=True)  # out_root there; its default locks folder not writable
    modes = {"inst/sha": 0o000, "disk/suth": 0o555, "locks": 0o300, "state": 0o555, "sdfits/locks": 0o500,
             "raw": 0o600}  # fmt: skip
    try:
        for folder, mode in modes.items():
            (root / folder).chmod(mode)
        assert_unreadable(root / "inst" / "sha")
        assert check_config(config, paths=True) == []  # root, with its capabilities, can
        done = obsflow_nocap("config", "check", "--paths", "--json", str(config))
    finally:
        for folder in modes:
            (root / folder).chmod(0o755)
    assert done.returncode == 2, done
    me = _account()
    assert [(p["key"], p["what"], p["line"]) for p in json.loads(done.stdout)["problems"]] == [
        ("locks", f"{root}/locks is not readable by {me}", 2),
        ("state_dir", f"{root}/state/obsflow cannot be created: {root}/state is not writable by {me}", 1),
        ("instruments.sha.source", f"{root}/inst/sha is not readable or enterable by {me}", 4),
        ("archives.suth.location", f"{root}/suth is not writable by {me}", 8),
        ("filler.raw_root", f"{root}/raw/gbtdata cannot be reached: Permission denied", 18),
        ("filler.locks_dir", f"{root}/sdfits/locks is not writable by {me}", 17),
    ]


def test_check_help_names_the_paths_option(capsys) -> None:
    assert main(["config", "check", "--help"]) == 0
    assert "--paths" in capsys.readouterr().out
