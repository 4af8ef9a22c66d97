"""The filler part of the status page against a real daemon's records: it says what ``online status`` says."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import Config
from obsflow.lock import lock_path, release_lock
from obsflow.online.daemon import DAEMON_LOCK
from obsflow.online.service import build_daemon
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec
from obsflow.web.server import StatusServer
from obsflow.web.status import fill_history, filler_layout
from tests.web.conftest import Site, serve
from tests.web.reading import fetch_html, fetch_json, table_with
from tests.web.site import PROJECT as SITE_PROJECT
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
    """A config whose filler has not run yet."""
    return write_config(tmp_path)


@pytest.fixture
def bare_server(config: Config) -> Iterator[StatusServer]:
    yield from serve(config)


def _rewrite_status(site: Site, **changes: object) -> None:
    """The daemon's saved status with ``changes``, as a daemon that stopped saving it would have left it."""
    path = filler_layout(site.config).status_path
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_the_fill_latency_counts_from_when_the_scan_ended(
    tmp_path: Path, config: Config, bare_server: StatusServer
) -> None:
    # Found by review: the page counted from when the daemon saw the scan end, so a scan filled by a
    # daemon that had been down for 90 s read "0.1 s after scan end" while `online status` said 90 s.
    raw = tmp_path / "raw"
    _observe(raw, 1, start=datetime.now(UTC) - timedelta(seconds=90))  # ended about a minute ago
    build_daemon(raw, filler_layout(config).root, poll_s=0.01, quicklook=False).run(until_idle=True)
    filler = fetch_json(bare_server, "/api/filler.json")
    (project,) = filler["projects"]
    assert 60 < project["latency_s"] < 120 and 60 < filler["recent"][0]["latency_s"] < 120
    row = table_with(fetch_html(bare_server, "/filler"), "Project")[1]
    assert 60 < float(row[5].split(" s after")[0]) < 120
    filler_layout(config).status_path.unlink()  # the plot's history from the fill log alone
    (fill,) = fill_history(config)
    assert 60 < fill["latency_s"] < 120


def test_a_daemon_that_stopped_saving_its_status_is_not_shown_up_to_date(
    site: Site, server: StatusServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by review: a daemon alive but hung (or on a read-only output disk) for an hour read
    # "running", its project "(active)" and "up to date" on the page; `online status` warned.
    _rewrite_status(
        site,
        last_poll=time.time() - 3600,
        projects={
            SITE_PROJECT: {
                "last_scan": 3,
                "last_timestamp": "2026_05_01_01:03:00",
                "last_filled_at": time.time() - 3700,
                "pending": 0,
            }
        },
    )
    assert main(["online", "status", "--out-root", str(filler_layout(site.config).root)]) == 0
    assert "WARNING: status not saved for" in capsys.readouterr().out
    filler = fetch_json(server, "/api/filler.json")
    assert filler["running"] and 3500 < filler["unsaved_s"] < 3700
    page = fetch_html(server, "/filler")
    assert "status not saved for 3" in page and "last active project" in page
    row = table_with(page, "Project")[1]
    assert row[0] == SITE_PROJECT and row[4] == "unknown (0 pending at the last poll)"


def test_a_stopped_daemon_leaves_its_projects_lag_unknown(site: Site, server: StatusServer) -> None:
    release_lock(lock_path(filler_layout(site.config).locks_dir, DAEMON_LOCK))
    row = table_with(fetch_html(server, "/filler"), "Project")[1]
    assert row[0] == SITE_PROJECT and row[4] == "unknown (2 pending at the last poll)"


def test_a_daemon_on_another_host_is_running_but_not_checked(site: Site, server: StatusServer) -> None:
    # Found by review: `online status` says "running on host X (cannot check from here)"; the page
    # said "running", and goes on saying it for a host that died, as the lock stays.
    locks = filler_layout(site.config).locks_dir
    release_lock(lock_path(locks, DAEMON_LOCK))
    lock_path(locks, DAEMON_LOCK).write_text(
        json.dumps(
            {
                "pid": 4242,
                "host": "filler1",
                "user": "sdfits",
                "started": time.time() - 7200,
                "purpose": "online daemon",
            }
        )
    )
    _rewrite_status(site, host="filler1")
    filler = fetch_json(server, "/api/filler.json")
    assert filler["running"] and filler["checked"] is False
    assert "running on host filler1 (cannot check from here)" in fetch_html(server, "/")
