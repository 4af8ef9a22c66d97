"""A daemon that runs for months: projects it is finished with are forgotten, and picked up again if they change.

The raw data come from the telescope simulator; what was written is read back with astropy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path

from astropy.io import fits

from obsflow.online.daemon import read_status
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import index, index_fits
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec

PROJECTS = [f"AGBT26A_{n:03d}_01" for n in range(600, 606)]


def _telescope(raw: Path, project: str, hour: int) -> TelescopeSimulator:
    spec = TelescopeSpec(project=project, scans=3, procedure="Track", banks=2, pols=1, channels=1024, integrations=2,
                         start=datetime(2026, 11, 21, tzinfo=UTC) + timedelta(hours=hour))  # fmt: skip
    return TelescopeSimulator(spec, raw)


def _observe(sim: TelescopeSimulator, scans: slice) -> None:
    for plan in sim.plans[scans]:
        sim.start_scan(plan)
        sim.finish_scan(plan)


def _semester(raw: Path) -> dict[str, TelescopeSimulator]:
    """Two scans of each project, one project after the other: the last one observed is the current one."""
    sims = {name: _telescope(raw, name, hour) for hour, name in enumerate(PROJECTS)}
    for sim in sims.values():
        _observe(sim, slice(0, 2))
    return sims


def _run_until_idle(daemon) -> None:
    while daemon.step():
        pass
    daemon.step()  # the poll after the last fill: nothing left to do


ROWS_PER_SCAN = 2 * 2  # per bank: 2 integrations x 2 switching states (cal on, off), one sampler


def _scans_in(layout: OutputLayout, project: str) -> dict[str, list[int]]:
    """Bank letter -> the scans in its SDFITS file in row order, read with astropy, each checked to hold
    one scan's rows once; each index agrees with NAXIS2."""
    out, rows = {}, 0
    for path in layout.bank_files(project):
        with fits.open(path) as hdul:
            runs = [(scan, len(list(group))) for scan, group in groupby(int(s) for s in hdul[1].data["SCAN"])]
            assert len(index.read_index(index_fits.index_path_for(path)).rows) == hdul[1].header["NAXIS2"]
            rows += hdul[1].header["NAXIS2"]
        assert all(count == ROWS_PER_SCAN for _, count in runs), runs
        out[path.name.split(".")[-2]] = [scan for scan, _ in runs]
    assert len(index.read_index(layout.combined_index(project)).rows) == rows
    return out


def test_projects_finished_with_are_forgotten_but_never_the_current_one(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _semester(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, forget_after_s=0)
    daemon.start()
    _run_until_idle(daemon)

    current = PROJECTS[-1]
    assert daemon.engine.active_project == current
    assert set(daemon.engine.projects) == {current}
    assert daemon.source.followed == {current}
    for _ in range(3):
        daemon.step()
    assert set(daemon.engine.projects) == {current}  # however long it stays idle
    layout = OutputLayout(out)
    for name in PROJECTS:
        assert _scans_in(layout, name) == {"A": [1, 2], "B": [1, 2]}
    daemon.close()


def test_projects_are_kept_while_their_log_changed_lately(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _semester(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, forget_after_s=3600)
    daemon.start()
    _run_until_idle(daemon)
    assert set(daemon.engine.projects) == set(PROJECTS)
    assert daemon.source.followed == set(PROJECTS)
    daemon.close()


def test_a_forgotten_project_that_observes_again_is_filled_once(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sims = _semester(raw)
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, forget_after_s=0)
    daemon.start()
    _run_until_idle(daemon)
    reopened = PROJECTS[0]
    assert reopened not in daemon.engine.projects

    _observe(sims[reopened], slice(2, 3))  # the observer comes back: scan 3
    daemon.source.full_listing_s = 0  # a forgotten project is looked at again at the next full listing: now
    _run_until_idle(daemon)

    assert _scans_in(OutputLayout(out), reopened) == {"A": [1, 2, 3], "B": [1, 2, 3]}  # scans 1, 2 not again
    fills = OutputLayout(out).fill_log(reopened).read_text().splitlines()
    assert [line for line in fills if " scan=3 " in line] == fills[2:] and len(fills) == 3
    # It is the current project now; the one before it is finished with.
    assert daemon.engine.active_project == reopened
    assert set(daemon.engine.projects) == {reopened}
    assert daemon.source.followed == {reopened}
    daemon.close()


def test_a_forgotten_project_stays_reported_for_a_scan_never_finished(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    stopped, current = PROJECTS[:2]
    sim = _telescope(raw, stopped, 0)
    _observe(sim, slice(0, 1))
    sim.start_scan(sim.plans[1])  # stopped: no SCAN FINISHED, and the telescope went on with another project
    _observe(_telescope(raw, current, 1), slice(0, 2))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, forget_after_s=0)
    daemon.start()
    _run_until_idle(daemon)

    assert set(daemon.engine.projects) == {current}
    daemon.close()
    status = read_status(OutputLayout(out))
    assert [(e["project"], e["scan"]) for e in status["never_finished"]] == [(stopped, 2)]
    assert status["unfinished"] == [stopped]  # the next daemon follows it, as it did before forgetting


def test_forget_after_hours_comes_from_the_config_and_the_command_line_wins(tmp_path, caplog):
    from obsflow.cli import main

    raw, out = tmp_path / "raw", tmp_path / "out"
    _semester(raw)
    config = tmp_path / "filler.toml"
    config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\nforget_after_hours = 0\n')

    def forgotten() -> set[str]:
        return {r.getMessage().split(":")[0] for r in caplog.records if "no longer followed" in r.getMessage()}

    with caplog.at_level("INFO", logger="obsflow"):
        assert main(["online", "-c", str(config), "--until-idle", "--forget-after-hours", "6"]) == 0
    assert forgotten() == set()  # the command line's 6 hours win over the file's 0
    caplog.clear()
    with caplog.at_level("INFO", logger="obsflow"):
        assert main(["online", "-c", str(config), "--until-idle"]) == 0
    assert forgotten() == set(PROJECTS[:-1])  # all but the current one: the first run filled them

