"""Mailing the verification report over SMTP (stdlib ``smtplib`` + ``email``).

The subject says at a glance whether all is well (``OK: ...`` or ``FAILED: ...`` with the
counts); the body is the text report, with the HTML page as the alternative part and the
JSON as an attachment.  The mail stays readable and small enough for any server when thousands
of files are missing (an archive disk swapped for an empty one): the text and HTML show the
first lines of each section, and a large JSON attachment, which names every file, is gzipped.  The password, if any, comes from an environment variable or a file
(``MailConfig.password()``), never from the config file.
"""

from __future__ import annotations

import gzip
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from obsflow.config import MailConfig
from obsflow.errors import ConfigError, TransportError
from obsflow.verify.findings import Report
from obsflow.verify.report import render_html, render_json, render_text

__all__ = ["build_message", "send_message", "should_send"]

log = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 60.0

#: files listed per section in the mail's text and HTML parts; the JSON attachment names them all
MAIL_LINES_PER_SECTION = 100

#: a JSON attachment larger than this is sent gzipped (99,000 missing files: 4.4 MB of JSON, 0.25 MB gzipped)
GZIP_ATTACHMENT_BYTES = 1_000_000


def should_send(report: Report, mail: MailConfig) -> bool:
    """``when = "always"``, or ``"problems"`` and the report has some."""
    return mail.when == "always" or report.has_problems


def build_message(report: Report, mail: MailConfig) -> EmailMessage:
    """The message: subject, text body, HTML alternative, JSON attachment."""
    if not mail.to:
        raise ConfigError("mail.to: no recipient configured", "mail.to")
    message = EmailMessage()
    message["Subject"] = f"{report.subject} [obsflow verify]"
    message["From"] = mail.sender
    message["To"] = ", ".join(mail.to)
    message["Date"] = formatdate(report.ended, localtime=False)
    message["Message-ID"] = make_msgid(domain=mail.sender.rpartition("@")[2] or None)
    message["X-Obsflow-Status"] = report.status
    message.set_content(render_text(report, lines_per_section=MAIL_LINES_PER_SECTION))
    message.add_alternative(render_html(report, lines_per_section=MAIL_LINES_PER_SECTION), subtype="html")
    _attach_json(message, render_json(report).encode())
    return message


def _attach_json(message: EmailMessage, data: bytes) -> None:
    """The whole report as JSON; gzipped when large, so the message stays under servers' size limits."""
    if len(data) <= GZIP_ATTACHMENT_BYTES:
        message.add_attachment(data, maintype="application", subtype="json", filename="verify-report.json")
    else:
        message.add_attachment(
            gzip.compress(data), maintype="application", subtype="gzip", filename="verify-report.json.gz"
        )


def send_message(message: EmailMessage, mail: MailConfig, timeout_s: float = SMTP_TIMEOUT_S) -> None:
    """Deliver ``message`` through the configured server; TransportError if it cannot."""
    where = f"smtp {mail.server}"
    password = _password(mail)
    if mail.username and password is None:
        why = (f"{mail.password_env} is not set in this environment" if mail.password_env
               else "set password_env or password_file")  # fmt: skip
        raise ConfigError(f"mail.username is set but no password found: {why}", "mail")
    _check_ascii(mail, password)
    try:
        with smtplib.SMTP(mail.host, mail.port, timeout=timeout_s) as smtp:
            if mail.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if mail.username and password is not None:
                smtp.login(mail.username, password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as err:  # socket.timeout is an OSError
        raise TransportError(f"cannot send mail: {err}", where) from err
    if refused:
        raise TransportError(f"mail refused for {', '.join(sorted(refused))}", where)
    log.info("mailed the report to %s", ", ".join(mail.to))


def _password(mail: MailConfig) -> str | None:
    """The password from the environment or the file, or a one-line ConfigError why it cannot be read."""
    try:
        return mail.password()
    except OSError as err:
        raise ConfigError(f"mail.password_file: cannot read: {err.strerror}", mail.password_file) from err
    except UnicodeDecodeError as err:
        raise ConfigError("mail.password_file: not UTF-8 text", mail.password_file) from err


def _check_ascii(mail: MailConfig, password: str | None) -> None:
    """smtplib sends AUTH credentials as ASCII only: say so before connecting, not with a traceback."""
    if mail.username and not mail.username.isascii():
        raise ConfigError("mail.username: only ASCII characters can be sent with SMTP AUTH here", "mail.username")
    if mail.username and password is not None and not password.isascii():
        source = mail.password_env or mail.password_file
        raise ConfigError("mail password: only ASCII characters can be sent with SMTP AUTH here", source)
