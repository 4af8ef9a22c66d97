"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives.

Used by the mail and CLI tests; optional AUTH (PLAIN/LOGIN without TLS, loopback only) lets
tests check that the password really comes from the environment or a file.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.fixtures.sshd import free_port


@dataclass
class Received:
    """One delivered message: envelope and parsed content."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # each successful AUTH

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: _Handler

    @property
    def server(self) -> str:
        """What goes into ``[mail] server``."""
        return f"{self.host}:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def logins(self) -> list[str]:
        return self.handler.logins


@contextmanager
def running_smtpd(
    credentials: tuple[str, str] | None = None, data_size_limit: int = 33_554_432
) -> Iterator[SmtpServer]:
    """Run aiosmtpd on a free loopback port; with ``credentials`` it offers AUTH (no TLS: loopback only).

    ``data_size_limit``: the largest message it accepts (aiosmtpd's default, 32 MiB; Postfix's is 10 MB).
    """
    handler = _Handler()
    kwargs: dict[str, Any] = {"data_size_limit": data_size_limit}
    if credentials is not None:

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (
                (auth_data.login.decode(), auth_data.password.decode()) == credentials
            )
            if ok:
                handler.logins.append(credentials[0])
            return AuthResult(success=ok, handled=False)

        kwargs |= {"authenticator": authenticator, "auth_require_tls": False}
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()
