"""The status page only reads the sync's catalog: no file, table or journal setting is made by it.

Real parts: the state folder is made read-only by a read-only bind mount (the suite runs as root,
for which file modes do not stop a write), and the sync's writer is another process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.transfer.conftest import damage_catalog
from tests.web.conftest import Site, serve
from tests.web.reading import fetch_html, fetch_json


@contextmanager
def read_only_mount(folder: Path) -> Iterator[None]:
    """``folder`` bound read-only onto itself for the block."""
    for argv in (["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,ro,bind", str(folder)]):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", str(folder)], check=False, capture_output=True)
            pytest.fail(f"cannot mount {folder} read-only for the test: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def sync_holding(catalog: Path) -> Iterator[None]:
    """Another process with the catalog open, as a running sync has it (its -wal and -shm exist)."""
    script = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute('SELECT count(*) FROM runs')"
              ".fetchall(); print('open', flush=True); sys.stdin.read()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", script, str(catalog)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


def _state_files(site: Site) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in site.config.state_path.iterdir()}


def test_an_empty_catalog_file_reads_as_no_runs_and_stays_empty(empty_site: Site) -> None:
    catalog = empty_site.config.catalog_path
    catalog.parent.mkdir(parents=True)
    catalog.touch()  # e.g. made by hand, or by a sync killed as it started
    for server in serve(empty_site.config):
        sync = fetch_json(server, "/api/sync.json")
        assert not sync["has_runs"] and sync["error"] is None
        assert "no runs yet" in fetch_html(server, "/sync")
    assert catalog.stat().st_size == 0
    assert sorted(p.name for p in catalog.parent.iterdir()) == ["catalog.sqlite"]  # no -wal, no -shm


def test_reading_the_catalog_changes_no_file_of_the_state_folder(site: Site) -> None:
    before = _state_files(site)
    for server in serve(site.config):
        assert fetch_json(server, "/api/sync.json")["has_runs"]
    after = _state_files(site)
    # A reader of a WAL database may leave its index (-shm) and an empty -wal, which it cannot remove.
    assert after.pop("catalog.sqlite-wal", b"") == b""
    after.pop("catalog.sqlite-shm", None)
    assert after == before


def test_a_read_only_state_folder_is_read_while_a_sync_has_the_catalog_open(site: Site) -> None:
    with sync_holding(site.config.catalog_path), read_only_mount(site.config.state_path):
        for server in serve(site.config):
            sync = fetch_json(server, "/api/sync.json")
    assert sync["error"] is None and sync["has_runs"]
    holdings = {h["instrument"]: h["hosts"] for h in sync["holdings"]}
    assert holdings["sha"]["suth"] == {"files": 3, "bytes": 3_000_003}


def test_a_catalog_that_cannot_be_opened_is_a_message_on_the_page(site: Site) -> None:
    # No sync running: no -shm file, and a read-only folder where this reader could make one.
    with read_only_mount(site.config.state_path):
        for server in serve(site.config):
            sync = fetch_json(server, "/api/sync.json")
            page = fetch_html(server, "/")
    assert sync["error"].startswith("cannot read the catalog: ") and not sync["has_runs"]
    assert "read-only" in sync["error"]
    assert "cannot read the catalog" in page and "Verification" in page  # the other parts still shown


def test_a_damaged_catalog_is_a_message_on_the_page(site: Site) -> None:
    """The page read the damaged catalog's pages through sqlite3 itself; now the catalog's own one line."""
    damage_catalog(site.config.catalog_path)
    for server in serve(site.config):
        sync = fetch_json(server, "/api/sync.json")
        page = fetch_html(server, "/")
    assert sync["error"].startswith("cannot read the catalog: catalog damaged (") and not sync["has_runs"]
    assert "move it aside" in sync["error"] and "Verification" in page
