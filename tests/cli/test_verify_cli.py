"""``obsflow verify`` end to end: loopback sshd, simulated nights, a real SMTP server, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsflow.cli import main
from tests.verify.reading import parse_html, parse_text, paths_in
from tests.verify.scenario import build_world
from tests.verify.smtp_server import SmtpServer, running_smtpd
from tests.verify.trees import alter, truncate

TODAY = ["--today", "2026-11-23"]  # this,last = 2026-10-01 .. 2026-11-23, the scenario's period
OBSFLOW = Path(sys.executable).with_name("obsflow")


@pytest.fixture
def smtpd() -> Iterator[SmtpServer]:
    with running_smtpd() as server:
        yield server


def mail_table(server: SmtpServer, when: str = "always") -> str:
    return (
        f'[mail]\nserver = "{server.server}"\nsender = "obsflow@suth.test"\nto = ["ops@saao.test"]\nwhen = "{when}"\n'
    )


def damage(world):
    """One deleted, one truncated, one altered file on suth (sha); one deleted on cape (shd)."""
    sha, shd = world.files["sha"], world.files["shd"]
    (world.suth("sha") / sha[0]).unlink()
    truncate(world.suth("sha") / sha[4])
    alter(world.suth("sha") / sha[8])
    (world.cape("shd") / shd[2]).unlink()
    return {
        ("instruments:suth", "sha"): ([sha[0]], [sha[4]], [sha[8]]),
        ("suth:cape", "sha"): ([], [sha[4]], [sha[8]]),
        ("instruments:suth", "shd"): ([], [], []),
        ("suth:cape", "shd"): ([shd[2]], [], []),
    }


def titles(hop: str, instrument: str) -> tuple[str, str, str, str]:
    source, dest = hop.split(":")
    a = (instrument if source == "instruments" else source).upper()
    b = dest.upper()
    return (
        f"{instrument}: {a.lower()} -> {dest}  (hop {hop})",
        f"FILES ON {a} THAT ARE NOT ON {b}",
        f"FILES WHOSE SIZE DIFFERS BETWEEN {a} AND {b}",
        f"FILES WHOSE CONTENT DIFFERS BETWEEN {a} AND {b}",
    )


def assert_sections_name(sections, expected):
    for (hop, instrument), (missing, sizes, contents) in expected.items():
        title, h_missing, h_size, h_content = titles(hop, instrument)
        assert paths_in(sections[title][h_missing]) == missing, (hop, instrument)
        assert paths_in(sections[title][h_size]) == sizes, (hop, instrument)
        assert paths_in(sections[title][h_content]) == contents, (hop, instrument)


def test_all_well_exits_0_and_says_ok(sshd, tmp_path, capsys):
    world = build_world(tmp_path, sshd, per_night=2)
    assert main(["verify", "-c", str(world.config_path), *TODAY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 24 files present and equal (size), 2 hops x 2 instruments, 2026-10-01 .. 2026-11-23")
    last = json.loads((tmp_path / "state" / "verify-last.json").read_text())
    assert last["status"] == "ok" and last["counts"]["matched"] == 24


def test_report_names_exactly_the_damaged_files_everywhere(sshd, tmp_path, capsys, smtpd):
    world = build_world(tmp_path, sshd, mail=mail_table(smtpd))
    expected = damage(world)
    html_path = tmp_path / "out" / "verify.html"
    html_path.parent.mkdir()
    args = ["verify", "-c", str(world.config_path), *TODAY, "--checksum", "--mail", "--html", str(html_path)]

    assert main(args) == 1
    text = capsys.readouterr().out
    assert text.startswith("FAILED: 2 missing, 2 size differs, 2 checksum differs, 0 not checked")
    assert_sections_name(parse_text(text), expected)

    html_sections, external = parse_html(html_path.read_text())
    assert external == []
    assert_sections_name(html_sections, expected)

    (received,) = smtpd.received
    assert received.message["Subject"].startswith("FAILED: 2 missing, 2 size differs, 2 checksum differs")
    assert_sections_name(parse_text(received.message.get_body(("plain",)).get_content()), expected)
    assert_sections_name(parse_html(received.message.get_body(("html",)).get_content())[0], expected)

    assert main([*args[:-2], "--json"]) == 1  # without --html, still mailing
    data = json.loads(capsys.readouterr().out)
    for folder in data["folders"]:
        missing, sizes, contents = expected[(folder["hop"], folder["instrument"])]
        assert folder["missing"] == missing
        assert [d["path"] for d in folder["size_differs"]] == sizes
        assert [d["path"] for d in folder["hash_differs"]] == contents
    assert data["exit_code"] == 1 and len(smtpd.received) == 2


def test_unreachable_host_gets_its_own_section_and_exit_2(sshd, tmp_path, capsys, smtpd):
    world = build_world(
        tmp_path, sshd, per_night=1, extra=f'[archives.vault]\nlocation = "down.test:{tmp_path}/vault"\n',
        mail=mail_table(smtpd, when="problems"),
    )  # fmt: skip
    with open(world.config_path, "a") as handle:
        handle.write('[[hops]]\nfrom = "cape"\nto = "vault"\n')
    assert main(["verify", "-c", str(world.config_path), *TODAY, "-i", "sha", "--mail"]) == 2
    sections = parse_text(capsys.readouterr().out)
    (line,) = sections[""]["COULD NOT BE CHECKED"]
    assert line.startswith("sha on hop cape:vault: cannot list down.test:") and "cannot reach host" in line
    vault = sections["sha: cape -> vault  (hop cape:vault)"]
    assert all(lines[0].startswith("NOT CHECKED: ") for lines in vault.values())
    assert sections["sha: suth -> cape  (hop suth:cape)"]["FILES ON SUTH THAT ARE NOT ON CAPE"] == ["None"]
    assert smtpd.received[0].message["Subject"].startswith("FAILED: 0 missing, 0 size differs, 1 not checked")


def test_mail_when_problems_stays_quiet_when_all_is_well(sshd, tmp_path, smtpd):
    world = build_world(tmp_path, sshd, per_night=1, mail=mail_table(smtpd, when="problems"))
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--mail", "--hop", "suth:cape"]) == 0
    assert smtpd.received == []


def test_mail_server_down_still_prints_the_report_then_fails(sshd, tmp_path, capsys):
    world = build_world(tmp_path, sshd, per_night=1, mail='[mail]\nserver = "127.0.0.1:1"\nto = ["ops@saao.test"]\n')
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--mail", "--hop", "suth:cape"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("OK: ")
    assert captured.err.startswith("obsflow: error: cannot send mail") and "(smtp 127.0.0.1:1)" in captured.err


def test_dry_run_shows_the_plan_without_connecting(tmp_path, capsys):
    config = tmp_path / "obsflow.toml"
    config.write_text(
        '[instruments.sha]\nsource = "down.test:/data/sha"\npath = "74in/sha"\n'
        '[archives.suth]\nlocation = "down.test:/archive"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    args = ["verify", "-c", str(config), "--since", "2026-11-01", "--until", "2026-11-03", "--dry-run", "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["checks"] == [
        {"hop": "instruments:suth", "instrument": "sha", "source_location": "down.test:/data/sha",
         "dest_location": "down.test:/archive/74in/sha", "folders": 3},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--months", "this", "--since", "2026-11-01"], "give either --months or --since/--until"),
        (["--since", "2026-13-01"], "not a date: '2026-13-01'"),
        (["--until", "2026-11-01"], "--until needs --since"),
        (["--hop", "suth:mars"], "unknown hop 'suth:mars'"),
        (["-i", "spupnic"], "unknown instrument 'spupnic'"),
        (["--rehash"], "--rehash only makes sense with --checksum"),
        (["--months", "later"], "not a month: 'later'"),
        (["--months", ""], "not a month: ''"),  # --months "$M" with M unset: not the default period (review)
        (["--months", "9999-12"], "month 9999-12 is out of range (--months)"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    config = tmp_path / "obsflow.toml"
    config.write_text(
        '[instruments.sha]\nsource = "/x"\n[archives.suth]\nlocation = "/y"\n'
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    assert main(["verify", "-c", str(config), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"obsflow: error: {message}") and err.count("\n") == 1


def test_the_installed_command_exits_1_on_differences(sshd, tmp_path):
    world = build_world(tmp_path, sshd, per_night=1)
    (world.cape("sha") / world.files["sha"][0]).unlink()
    done = subprocess.run(
        [str(OBSFLOW), "verify", "-c", str(world.config_path), *TODAY, "--hop", "suth:cape", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["folders"][0]["missing"] == [world.files["sha"][0]]
    help_text = subprocess.run([str(OBSFLOW), "verify", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Examples:" in help_text and "--checksum" in help_text


def test_an_html_page_that_cannot_be_written_still_saves_and_mails_then_exits_2(sshd, tmp_path, capsys, smtpd):
    world = build_world(tmp_path, sshd, per_night=1, mail=mail_table(smtpd))
    args = ["verify", "-c", str(world.config_path), *TODAY, "--mail", "--html", "/nonexistent/r.html"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("OK: ")
    assert captured.err == "obsflow: error: cannot write: No such file or directory (/nonexistent)\n"
    assert json.loads((tmp_path / "state" / "verify-last.json").read_text())["status"] == "ok"
    (received,) = smtpd.received
    assert received.message["Subject"].startswith("OK: ")


def test_control_characters_in_names_are_escaped_in_text_and_html(sshd, tmp_path, capsys):
    world = build_world(tmp_path, sshd, per_night=1)
    night = world.files["sha"][0].rsplit("/", 1)[0]
    ghost = "x.fits\n2026_1101_GHOST.fits"
    bell = "SHA_\x1b[2Jcleared\t.fits"
    for name in (ghost, bell):
        frame = world.inst("sha") / night / name
        frame.write_bytes(b"x" * 2880)
        os.utime(frame, (time.time() - 86400,) * 2)
    html_path = tmp_path / "verify.html"
    args = ["verify", "-c", str(world.config_path), *TODAY, "--hop", "instruments:suth", "-i", "sha"]
    assert main([*args, "--html", str(html_path)]) == 1
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\t" not in text
    shown = [f"{night}/x.fits\\n2026_1101_GHOST.fits", f"{night}/SHA_\\x1b[2Jcleared\\t.fits"]
    missing_heading = "FILES ON SHA THAT ARE NOT ON SUTH"
    assert sorted(parse_text(text)["sha: sha -> suth  (hop instruments:suth)"][missing_heading]) == sorted(shown)
    html_sections, _ = parse_html(html_path.read_text())
    assert sorted(html_sections["sha: sha -> suth  (hop instruments:suth)"][missing_heading]) == sorted(shown)
    assert main([*args, "--json"]) == 1
    assert sorted(json.loads(capsys.readouterr().out)["folders"][0]["missing"]) == sorted(f"{night}/{n}" for n in (ghost, bell))


def test_verify_since_1980_over_ssh_lists_every_night_in_one_round_trip(sshd, tmp_path, capsys):
    world = build_world(tmp_path, sshd, per_night=1)
    (world.cape("sha") / world.files["sha"][1]).unlink()
    args = ["verify", "-c", str(world.config_path), "--since", "1980-01-01", "--until", "2026-11-23", "-i", "sha", "--json"]
    assert main(args) == 1, capsys.readouterr().err  # 17,000 dated folders, over the argument limit in one script
    report = json.loads(capsys.readouterr().out)
    by_hop = {folder["hop"]: folder for folder in report["folders"]}
    assert by_hop["instruments:suth"]["status"] == "ok" and by_hop["instruments:suth"]["matched"] == 5  # with the night before the period
    assert by_hop["suth:cape"]["missing"] == [world.files["sha"][1]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--since", "00010101", "--until", "00010105"], "the period 0001-01-01 .. 0001-01-05 leaves the calendar"),
        (["--months", "0001-01"], "the period 0001-01-01 .. 0001-01-31 leaves the calendar"),
        (["--since", "99991201", "--until", "99991231", "--today", "99991231"],
         "the period 9999-12-01 .. 9999-12-31 leaves the calendar"),
    ],
)
def test_a_period_at_the_ends_of_the_calendar_is_a_usage_error_for_an_undated_layout(tmp_path, capsys, extra, message):
    # Found by review (sync had just been fixed for this): the window of an undated layout (the filler's
    # products) as unix time failed with "internal error: ValueError: year 0 is out of range" or OverflowError.
    config = tmp_path / "obsflow.toml"
    config.write_text('[instruments.gbt]\nsource = "/x"\nlayout = "*"\n[archives.suth]\nlocation = "/y"\n'
                      '[[hops]]\nfrom = "instruments"\nto = "suth"\n')  # fmt: skip
    assert main(["verify", "-c", str(config), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"obsflow: error: {message}") and err.count("\n") == 1


def test_a_mail_table_without_recipients_is_a_config_problem_not_found_on_a_bad_morning(sshd, tmp_path, capsys, smtpd):
    # With when = "problems", verify --mail exited 0 every good morning (nothing to send) and config check
    # said ok: the missing recipients came out only on the first morning with differences, as an error
    # instead of the report.
    mail = f'[mail]\nserver = "{smtpd.server}"\nsender = "obsflow@suth.test"\nwhen = "problems"\n'
    world = build_world(tmp_path, sshd, per_night=1, mail=mail)
    assert main(["config", "check", "-c", str(world.config_path)]) == 2
    problem = "mail.to: is required: without a recipient verify --mail cannot send the report"
    assert problem in capsys.readouterr().out
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--mail", "--hop", "suth:cape"]) == 2
    assert capsys.readouterr().err.startswith(f"obsflow: error: config: {problem}")
    # only what needs the recipients stops (regression review: every nightly sync failed, exit 2)
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--hop", "suth:cape"]) == 0
    assert main(["sync", "-c", str(world.config_path), "-n"]) == 0
    capsys.readouterr()
    config = world.config_path.read_text().replace('when = "problems"', 'when = "problems"\nto = ["ops@saao.test"]')
    world.config_path.write_text(config)
    (world.cape("shd") / world.files["shd"][0]).unlink()  # a bad morning: the report goes out
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--mail", "--hop", "suth:cape"]) == 1
    assert [m.rcpt_tos for m in smtpd.received] == [["ops@saao.test"]]


def test_a_partial_check_by_hand_does_not_replace_the_daily_result_on_the_page(sshd, tmp_path, capsys, caplog):
    """Found by review: `obsflow verify -i sha` (clean) after the 09:00 check (3 missing) replaced
    verify-last.json, and the status page's "Last verification" read ok."""
    caplog.set_level("INFO", logger="obsflow.cli.verify")
    world = build_world(tmp_path, sshd, per_night=2)
    (world.cape("shd") / world.files["shd"][2]).unlink()
    assert main(["verify", "-c", str(world.config_path), *TODAY]) == 1  # the daily check: every hop and instrument
    last = tmp_path / "state" / "verify-last.json"
    daily = last.read_bytes()
    assert json.loads(daily)["status"] == "differences"
    for partial in (["-i", "sha"], ["--hop", "instruments:suth"], ["--months", "this"], ["--since", "2026-11-20"]):
        assert main(["verify", "-c", str(world.config_path), *TODAY, *partial]) == 0, partial
        assert last.read_bytes() == daily, partial
    assert "not kept as the status page's last verification" in caplog.text
    assert main(["verify", "-c", str(world.config_path), *TODAY, "--months", "last,this", "--checksum"]) == 1
    assert last.read_bytes() != daily  # the whole scope (in any spelling, with --checksum too) is kept
