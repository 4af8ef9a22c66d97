"""The daemon keeps going through bad scans, busy locks, full disks and a vanishing raw root (found by review)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits

from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec

PROJECT = "AGBT26A_300_01"


def _telescope(raw: Path, scans: int, project: str = PROJECT, **kw) -> TelescopeSimulator:
    spec = {"project": project, "scans": scans, "procedure": "Track", "banks": 1, "channels": 1024,
            "integrations": 2, "start": datetime(2026, 11, 21, 4, tzinfo=UTC), **kw}
    return TelescopeSimulator(TelescopeSpec(**spec), raw)


def _observe(sim: TelescopeSimulator, plans=None) -> None:
    for plan in sim.plans if plans is None else plans:
        sim.start_scan(plan)
        sim.finish_scan(plan)


@pytest.fixture
def roots(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    return raw, out


def _filled(daemon, project: str = PROJECT) -> list[int]:
    return sorted(k.scan for k in daemon.engine.project(project).filled)


def test_a_header_holding_text_for_a_number_fails_that_scan_only(roots):
    raw, out = roots
    sim = _telescope(raw, 3)
    _observe(sim)
    fits.setval(raw / PROJECT / "Antenna" / f"{sim.plans[1].timestamp}.fits", "AMBPRESS", value="n/a")
    daemon = build_daemon(raw, out, poll_s=0.01, retry_limit=2, backoff_s=0.01, quicklook=False)
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 3]
    (failure,) = read_status(OutputLayout(out))["failures"]
    assert failure["scan"] == 2 and failure["given_up"] and failure["attempts"] == 2
    assert "AMBPRESS" in failure["last_error"] or "n/a" in failure["last_error"]


def test_a_failing_quicklook_does_not_stop_the_daemon(roots):
    raw, out = roots
    _observe(_telescope(raw, 2))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.after_fill = lambda action, outcome: 1 / 0
    daemon.run(until_idle=True)
    assert _filled(daemon) == [1, 2]
