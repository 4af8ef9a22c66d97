"""Readers polling the products while the filler appends never fail, and other event sources plug in."""

from __future__ import annotations

import io
import multiprocessing
import warnings
from datetime import UTC, datetime
from pathlib import Path

from astropy.io import fits

from obsflow.online import raw as rawmod
from obsflow.online.events import JsonLinesSource, ScanEvent, ScanKey
from obsflow.online.fill import fill_scan
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import index
from obsflow.sdfits.index_fits import index_path_for
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

PROJECT = "AGBT26A_600_01"


def _fill_all(project_dir: str, out: str, seen_it) -> None:  # seen_it: a multiprocessing Event
    layout = OutputLayout(Path(out))
    for scan in rawmod.read_project(Path(project_dir)):
        fill_scan(scan, layout, project=PROJECT)
        # Until the reader has seen this scan's rows: else a scheduling hiccup (one CI run) let it
        # see only 3 states of 11, and "it watched the files grow" could not be told from chance.
        seen_it.wait(timeout=30)
        seen_it.clear()


def _read_once(out: Path) -> int:
    """What GBTIDL or dysh does on each refresh: open the FITS file, then trust the index (its whole
    rows: without waiting for the lock, a reader may see the filler's append of index rows partway,
    as with the GBT filler; one CI run did)."""
    rows = 0
    for fits_path in OutputLayout(out).bank_files(PROJECT):
        index_path = index_path_for(fits_path)
        index_rows = index.next_index(index_path, whole_rows_only=True) if index_path.exists() else 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with fits.open(fits_path, memmap=False) as hdul:
                table = hdul[1].data
                assert len(table) == hdul[1].header["NAXIS2"]
                table["DATA"][-1].sum()  # every row the header counts is really there
        # the index never names a row the FITS file does not have
        assert index_rows <= len(table)
        rows += len(table)
    return rows


def test_astropy_reader_polling_during_fills_never_fails(tmp_path):
    spec = TelescopeSpec(project=PROJECT, scans=10, procedure="OnOff", banks=2, pols=2, channels=8192,
                         integrations=12, seed=21, start=datetime(2026, 11, 22, 3, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, tmp_path / "raw")
    out = tmp_path / "out"
    context = multiprocessing.get_context("fork")
    seen_it = context.Event()
    filler = context.Process(target=_fill_all, args=(str(tmp_path / "raw" / PROJECT), str(out), seen_it))
    filler.start()
    per_scan = 12 * 2 * 2 * 2  # integrations x pols x cal states x banks
    reads, seen, newest = 0, set(), 0
    while filler.is_alive() or reads == 0:
        rows = _read_once(out)  # also while a fill writes: the filler waits only between scans
        seen.add(rows)
        reads += 1
        # a whole scan seen: a state between its two banks (one CI run) must not let the filler on
        if rows > newest and rows % per_scan == 0:
            newest = rows
            seen_it.set()
    filler.join()
    assert filler.exitcode == 0
    final = _read_once(out)
    assert final == 10 * per_scan
    assert {k * per_scan for k in range(1, 11)} <= seen  # the reader really watched the files grow


def test_a_json_lines_feed_drives_the_same_engine(tmp_path):
    spec = TelescopeSpec(project=PROJECT, scans=2, procedure="Track", banks=1, pols=1, channels=1024,
                         integrations=2, seed=3, start=datetime(2026, 11, 22, 5, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, tmp_path / "raw")
    scans = rawmod.read_project(tmp_path / "raw" / PROJECT)
    feed = io.StringIO(
        "\n".join(ScanEvent("finished", PROJECT, ScanKey(s.number, s.timestamp), ("vegas",)).to_json() for s in scans)
        + "\nnot json\n"
    )
    daemon = build_daemon(tmp_path / "raw", tmp_path / "out", poll_s=0.01, source=JsonLinesSource(feed),
                          quicklook=False)  # fmt: skip
    daemon.run(until_idle=True)
    assert {k.scan for k in daemon.engine.project(PROJECT).filled} == {1, 2}
    fits_path = OutputLayout(tmp_path / "out").bank_fits(PROJECT, "A")
    assert index.next_index(index_path_for(fits_path)) == 2 * 2 * 2
