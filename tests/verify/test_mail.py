"""Mailing the report through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import gzip
import json
from datetime import date

import pytest

from obsflow.config import MailConfig
from obsflow.errors import ConfigError, TransportError
from obsflow.verify.compare import SizeDiff
from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.mail import build_message, send_message, should_send
from obsflow.verify.period import Period
from tests.fixtures.sshd import free_port
from tests.verify.reading import parse_text, paths_in
from tests.verify.smtp_server import running_smtpd

PERIOD = Period(date(2026, 10, 1), date(2026, 11, 23))


def report(missing: tuple[str, ...] = ()) -> Report:
    folder = FolderResult(
        hop="suth:cape", instrument="sha", source="suth", dest="cape", source_location="/a", dest_location="c:/b",
        missing=missing, size_differs=(SizeDiff("2026/1101/s.fits", 2, 1),) if missing else (), matched=3,
    )  # fmt: skip
    return Report(PERIOD, 0.0, 1.0, 60.0, False, (folder,))


def test_the_received_message_names_the_missing_files(smtpd):
    mail = MailConfig(server=smtpd.server, sender="obsflow@suth.test", to=("ops@saao.test", "night@saao.test"))
    send_message(build_message(report(("2026/1101/x.fits",)), mail), mail)
    (got,) = smtpd.received
    assert got.mail_from == "obsflow@suth.test"
    assert got.rcpt_tos == ["ops@saao.test", "night@saao.test"]
    message = got.message
    assert message["Subject"].startswith("FAILED: 1 missing, 1 size differs, 0 not checked")
    text = message.get_body(("plain",)).get_content()
    section = parse_text(text)["sha: suth -> cape  (hop suth:cape)"]
    assert paths_in(section["FILES ON SUTH THAT ARE NOT ON CAPE"]) == ["2026/1101/x.fits"]
    assert "2026/1101/x.fits" in message.get_body(("html",)).get_content()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "verify-report.json"
    assert json.loads(attachment.get_content())["folders"][0]["missing"] == ["2026/1101/x.fits"]


def test_ok_subject(smtpd):
    mail = MailConfig(server=smtpd.server, to=("ops@saao.test",))
    send_message(build_message(report(), mail), mail)
    assert smtpd.received[0].message["Subject"].startswith("OK: 3 files present and equal")


def test_when_problems_sends_only_on_problems():
    problems = MailConfig(when="problems", to=("a@b",))
    assert not should_send(report(), problems)
    assert should_send(report(("x",)), problems)
    assert should_send(report(), MailConfig(when="always", to=("a@b",)))


def test_password_comes_from_the_environment(monkeypatch):
    with running_smtpd(credentials=("obsflow", "s3cret")) as server:
        mail = MailConfig(server.server, to=("ops@saao.test",), username="obsflow", password_env="OBSFLOW_SMTP_PW")
        monkeypatch.setenv("OBSFLOW_SMTP_PW", "wrong")
        with pytest.raises(TransportError, match="cannot send mail"):
            send_message(build_message(report(), mail), mail)
        monkeypatch.setenv("OBSFLOW_SMTP_PW", "s3cret")
        send_message(build_message(report(), mail), mail)
        assert server.logins == ["obsflow"]
        assert len(server.received) == 1


def test_password_from_a_file(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    with running_smtpd(credentials=("obsflow", "s3cret")) as server:
        mail = MailConfig(server=server.server, to=("o@p",), username="obsflow", password_file=str(tmp_path / "pw"))
        send_message(build_message(report(), mail), mail)
        assert server.logins == ["obsflow"] and len(server.received) == 1


def test_server_down_is_a_transport_error():
    mail = MailConfig(server=f"127.0.0.1:{free_port()}", to=("ops@saao.test",))
    with pytest.raises(TransportError, match=r"cannot send mail.*\(smtp 127.0.0.1:\d+\)"):
        send_message(build_message(report(), mail), mail)


def test_no_recipient_is_a_config_error():
    with pytest.raises(ConfigError, match="mail.to"):
        build_message(report(), MailConfig(to=()))


def test_a_password_smtplib_cannot_send_is_one_config_error(monkeypatch):
    with running_smtpd(credentials=("obsflow", "pässwörd")) as server:
        mail = MailConfig(server.server, to=("ops@saao.test",), username="obsflow", password_env="OBSFLOW_SMTP_PW")
        monkeypatch.setenv("OBSFLOW_SMTP_PW", "pässwörd")
        with pytest.raises(ConfigError) as caught:
            send_message(build_message(report(), mail), mail)
        assert caught.value.one_line() == (
            "mail password: only ASCII characters can be sent with SMTP AUTH here (OBSFLOW_SMTP_PW)"
        )
        assert server.received == []


def test_a_password_file_that_is_not_utf8_is_one_config_error(tmp_path):
    (tmp_path / "pw").write_bytes(b"s3cr\xe9t\n")  # Latin-1
    with running_smtpd(credentials=("obsflow", "s3cret")) as server:
        mail = MailConfig(server=server.server, to=("o@p",), username="obsflow", password_file=str(tmp_path / "pw"))
        with pytest.raises(ConfigError) as caught:
            send_message(build_message(report(), mail), mail)
        assert caught.value.one_line() == f"mail.password_file: not UTF-8 text ({tmp_path / 'pw'})"
        assert server.received == []


def test_a_password_file_serves_when_the_environment_variable_is_not_set(tmp_path, monkeypatch):
    # Both set: the variable for runs by hand, the file for cron (which passes no such variable).  The file
    # was never read: "mail.username is set but no password found (password_env or password_file)".
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.delenv("OBSFLOW_SMTP_PW", raising=False)
    with running_smtpd(credentials=("obsflow", "s3cret")) as server:
        mail = MailConfig(server.server, to=("o@p",), username="obsflow", password_env="OBSFLOW_SMTP_PW",
                          password_file=str(tmp_path / "pw"))  # fmt: skip
        send_message(build_message(report(), mail), mail)
        assert server.logins == ["obsflow"] and len(server.received) == 1
        monkeypatch.setenv("OBSFLOW_SMTP_PW", "wrong")  # set: it comes first
        with pytest.raises(TransportError, match="cannot send mail"):
            send_message(build_message(report(), mail), mail)
    with pytest.raises(ConfigError) as caught:  # neither: the message says which variable was looked for
        unset = MailConfig(server.server, to=("o@p",), username="obsflow", password_env="OBSFLOW_SMTP_UNSET")
        send_message(build_message(report(), unset), unset)
    assert caught.value.one_line() == (
        "mail.username is set but no password found: OBSFLOW_SMTP_UNSET is not set in this environment (mail)"
    )


def test_a_mail_port_beyond_65535_is_a_config_problem_not_another_port(tmp_path, capsys):
    # The resolver takes a port modulo 65536: "host:<port + 65536>" passed config check and the report went
    # to <port>, a server the config does not name (and "host:0" failed only when the report was due).
    from obsflow.cli import main
    from obsflow.config import check_config, load_config

    with running_smtpd() as server:
        path = tmp_path / "obsflow.toml"
        for port in (server.port + 65536, 0):
            path.write_text(f'[mail]\nserver = "127.0.0.1:{port}"\nto = ["ops@saao.test"]\n')
            assert [str(p) for p in check_config(path)] == [
                f"mail.server: port must be 1 to 65535 in '127.0.0.1:{port}' (line 2)"
            ]
        assert main(["verify", "-c", str(path), "--mail"]) == 2
        assert capsys.readouterr().err.startswith("obsflow: error: config: mail.server: port must be 1 to 65535")
        path.write_text(f'[mail]\nserver = "127.0.0.1:{server.port}"\nto = ["ops@saao.test"]\n')
        mail = load_config(path).mail
        send_message(build_message(report(), mail), mail)
        assert len(server.received) == 1


POSTFIX_SIZE_LIMIT = 10_240_000  # Postfix's default message_size_limit


def test_a_report_of_thousands_of_missing_files_is_still_delivered_and_readable():
    # An archive disk swapped for an empty one: every file of two months missing on cape, 33,000 per
    # instrument.  The mail listed all 99,000 in the body, the HTML part and the JSON: 13.8 MB, which a
    # server at Postfix's default limit refuses, so on the worst morning nobody got a report.
    nights = [f"2026/{month}{day:02d}" for month in ("10", "11") for day in range(1, 31)]
    missing = tuple(sorted(f"{nights[i % 60]}/SHA_{i:06d}.fits" for i in range(33_000)))
    folders = tuple(
        FolderResult(
            hop="suth:cape", instrument=name, source="suth", dest="cape", source_location="/a", dest_location="c:/b",
            missing=missing,
        )
        for name in ("sha", "shd", "spu")
    )
    big = Report(PERIOD, 0.0, 1.0, 60.0, False, folders)
    with running_smtpd(data_size_limit=POSTFIX_SIZE_LIMIT) as server:
        mail = MailConfig(server=server.server, to=("ops@saao.test",))
        send_message(build_message(big, mail), mail)
        (got,) = server.received
    message = got.message
    assert message["Subject"].startswith("FAILED: 99000 missing, 0 size differs, 0 not checked")
    text = message.get_body(("plain",)).get_content()
    assert len(text.splitlines()) < 1000  # a page one can read, not 99,000 lines
    lines = parse_text(text)["sha: suth -> cape  (hop suth:cape)"]["FILES ON SUTH THAT ARE NOT ON CAPE"]
    assert lines[:3] == list(missing[:3])
    assert lines[-1] == f"... and {33_000 - len(lines) + 1} more: the attached JSON report names them all"
    html_part = message.get_body(("html",)).get_content()
    assert f"... and {33_000 - len(lines) + 1} more" in html_part and missing[-1] not in html_part
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "verify-report.json.gz"
    whole = json.loads(gzip.decompress(attachment.get_content()))
    assert [folder["missing"] for folder in whole["folders"]] == [list(missing)] * 3
