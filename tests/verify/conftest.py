"""Fixtures of the verify tests: a real SMTP server on loopback, test trees of simulated nights."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.verify.smtp_server import SmtpServer, running_smtpd


@pytest.fixture
def smtpd() -> Iterator[SmtpServer]:
    """A real aiosmtpd server on 127.0.0.1 that keeps what it receives."""
    with running_smtpd() as server:
        yield server
