"""Fixtures of the status-page tests: a populated site, and the real server on a free loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from obsflow.config import Config
from obsflow.web.server import StatusServer, make_server
from tests.web.site import FillerSite, RunSpec, fill_catalog, save_verification, write_config, write_filler


@dataclass(frozen=True)
class Site:
    root: Path
    config: Config
    runs: list[RunSpec]
    filler: FillerSite


@pytest.fixture
def site(tmp_path: Path, samples: Path) -> Site:
    """A config with secrets, a catalog with runs, a saved verification, a filler root with fills."""
    config = write_config(tmp_path)
    runs = fill_catalog(config)
    save_verification(config)
    filler = write_filler(samples, config)
    return Site(tmp_path, config, runs, filler)


@pytest.fixture
def empty_site(tmp_path: Path) -> Site:
    """The same config, nothing recorded yet: no catalog, no verification, no filler status."""
    return Site(tmp_path, write_config(tmp_path), [], FillerSite([], []))


def serve(config: Config, host: str = "127.0.0.1") -> Iterator[StatusServer]:
    server = make_server(config, host, 0, refresh_s=30, cache_s=0.0)
    thread = threading.Thread(target=server.serve_forever, name="status-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(site: Site) -> Iterator[StatusServer]:
    yield from serve(site.config)


@pytest.fixture
def empty_server(empty_site: Site) -> Iterator[StatusServer]:
    yield from serve(empty_site.config)
