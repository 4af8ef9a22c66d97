"""The filler part of the status page against a real daemon's records: it says what ``online status`` says."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from obsflow.config import Config
from obsflow.online.service import build_daemon
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec
from obsflow.web.server import StatusServer
from obsflow.web.status import fill_history, filler_layout
from tests.web.conftest import serve
from tests.web.reading import fetch_html, fetch_json, table_with
from tests.web.site import write_config

PROJECT = "AGBT26A_301_01"


def _observe(raw: Path, scans: int, start: datetime) -> None:
    spec = TelescopeSpec(project=PROJECT, scans=scans, procedure="Track", banks=1, channels=1024, integrations=2,
                         start=start)  # fmt: skip
    sim = TelescopeSimulator(spec, raw)
    for plan in sim.plans:
        sim.start_scan(plan)
        sim.finish_scan(plan)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return write_config(tmp_path)


@pytest.fixture
def server(config: Config) -> Iterator[StatusServer]:
    yield from serve(config)


def test_the_fill_latency_counts_from_when_the_scan_ended(tmp_path: Path, config: Config, server: StatusServer) -> None:
    # Found by review: the page counted from when the daemon saw the scan end, so a scan filled by a
    # daemon that had been down for 90 s read "0.1 s after scan end" while `online status` said 90 s.
    raw = tmp_path / "raw"
    _observe(raw, 1, start=datetime.now(UTC) - timedelta(seconds=90))  # ended about a minute ago
    build_daemon(raw, filler_layout(config).root, poll_s=0.01, quicklook=False).run(until_idle=True)
    filler = fetch_json(server, "/api/filler.json")
    (project,) = filler["projects"]
    assert 60 < project["latency_s"] < 120 and 60 < filler["recent"][0]["latency_s"] < 120
    row = table_with(fetch_html(server, "/filler"), "Project")[1]
    assert 60 < float(row[5].split(" s after")[0]) < 120
    filler_layout(config).status_path.unlink()  # the plot's history from the fill log alone
    (fill,) = fill_history(config)
    assert 60 < fill["latency_s"] < 120
