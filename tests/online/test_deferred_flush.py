"""Fills that leave their flush for later (``[filler] flush = "deferred"``): complete at once, flushed by the
next holder of the project's lock, kept after a crash of the process, rolled back whole after one of the machine."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsflow.cli import main
from obsflow.config import load_config
from obsflow.lock import held
from obsflow.online import journal as journal_module
from obsflow.online import raw as rawmod
from obsflow.online.fill import fill_scan, scans_in_files
from obsflow.online.journal import FileUndo, Journal, written_path
from obsflow.online.layout import OutputLayout
from obsflow.online.service import build_daemon
from obsflow.sdfits import index_fits
from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec, simulate_project
from obsflow.web.pages import filler_section
from obsflow.web.status import filler_status

PROJECT = "AGBT26A_410_01"
SPEC = TelescopeSpec(project=PROJECT, scans=4, procedure="OnOff", banks=2, pols=2, channels=2048, integrations=8,
                     seed=12, start=datetime(2026, 12, 3, 2, 0, tzinfo=UTC))  # fmt: skip


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[rawmod.Scan]:
    root = tmp_path_factory.mktemp("raw")
    simulate_project(SPEC, root)
    return rawmod.read_project(root / PROJECT)


def _products(layout: OutputLayout) -> dict[Path, bytes]:
    """Every FITS and index file of the project (what the journal guards), by path."""
    folder = layout.product_dir(PROJECT)
    return {path: path.read_bytes() for path in sorted(folder.iterdir()) if path.suffix in (".fits", ".index")}


def _agree(layout: OutputLayout) -> None:
    banks = layout.bank_files(PROJECT)
    for fits_path in banks:
        assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None
    assert index_fits.index_mismatch(layout.combined_index(PROJECT), *banks) is None


def _two_scans_then_a_deferred_one(scans: list[rawmod.Scan], out: Path) -> OutputLayout:
    layout = OutputLayout(out)
    for scan in scans[:2]:
        fill_scan(scan, layout, project=PROJECT)
    fill_scan(scans[2], layout, project=PROJECT, flush=False)
    return layout


def _flushed_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    flushed: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return flushed


def test_a_deferred_fill_is_complete_at_once_and_flushed_by_the_next_holder_of_the_lock(
    scans: list[rawmod.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed = _flushed_paths(monkeypatch)
    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    fits_flushed_by_fills = {p for p in flushed if p.endswith(".fits")}
    flushed.clear()
    journal = layout.journal_path(PROJECT)
    assert written_path(journal).exists() and not journal.exists()
    assert layout.unflushed(PROJECT) and layout.has_journal(PROJECT)
    assert {key.scan for key in scans_in_files(layout, PROJECT)} == {1, 2, 3}  # readers see it at once
    _agree(layout)
    written = _products(layout)

    layout.settle(PROJECT, timeout_s=5)
    assert not layout.has_journal(PROJECT) and _products(layout) == written
    banks = layout.bank_files(PROJECT)
    wanted = {str(p) for p in banks} | {str(index_fits.index_path_for(p)) for p in banks}
    assert wanted | {str(layout.combined_index(PROJECT))} <= set(flushed)
    assert fits_flushed_by_fills  # the two fills before flushed their own rows; the deferred one did not
    flushed.clear()
    fill_scan(scans[3], layout, project=PROJECT, flush=False)
    assert not any(p.endswith(".fits") for p in flushed)  # its rows wait for the next holder of the lock


def test_the_next_fill_flushes_a_written_fill_before_it_journals_its_own(
    scans: list[rawmod.Scan], tmp_path: Path
) -> None:
    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    fill_scan(scans[3], layout, project=PROJECT, flush=False)
    # One written journal: the fourth scan's (the third's was flushed and deleted under the lock first).
    assert json.loads(written_path(layout.journal_path(PROJECT)).read_text())["boot"] == journal_module.boot_id()
    assert layout.recover_all() == []  # the same boot: kept, flushed
    assert {key.scan for key in scans_in_files(layout, PROJECT)} == {1, 2, 3, 4}
    _agree(layout)


def _deferred_fill_then_die(project_dir: str, out: str) -> None:
    scan = rawmod.read_project(Path(project_dir))[2]
    fill_scan(scan, OutputLayout(Path(out)), project=PROJECT, flush=False)
    os._exit(0)  # no flush, no cleanup: as a process killed after the fill


def test_a_written_fill_is_kept_when_its_process_dies_on_the_same_boot(scans: list[rawmod.Scan], tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    for scan in scans[:2]:
        fill_scan(scan, layout, project=PROJECT)
    child = multiprocessing.get_context("fork").Process(target=_deferred_fill_then_die,
                                                        args=(str(scans[0].project_dir), str(out)))  # fmt: skip
    child.start()
    child.join()
    assert child.exitcode == 0 and layout.unflushed(PROJECT)
    assert layout.recover_all() == []  # nothing rolled back: the kernel holds every byte the process wrote
    assert not layout.has_journal(PROJECT)
    assert {key.scan for key in scans_in_files(layout, PROJECT)} == {1, 2, 3}
    _agree(layout)


def test_a_written_fill_of_an_earlier_boot_is_rolled_back_whole_and_filled_again(
    scans: list[rawmod.Scan], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    layout = OutputLayout(out)
    for scan in scans[:2]:
        fill_scan(scan, layout, project=PROJECT)
    before = _products(layout)
    fill_scan(scans[2], layout, project=PROJECT, flush=False)
    assert _products(layout) != before
    written = written_path(layout.journal_path(PROJECT))
    record = json.loads(written.read_text())
    written.write_text(json.dumps({**record, "boot": "a-boot-before-the-power-cut"}))
    restored = layout.recover_all()  # its unflushed bytes may be lost: back to the last flushed state
    assert len(restored) == len(record["files"]) and _products(layout) == before
    assert not layout.has_journal(PROJECT)
    fill_scan(scans[2], layout, project=PROJECT, flush=False)  # as the restarted daemon does: the files are the state
    layout.settle(PROJECT, timeout_s=5)
    assert {key.scan for key in scans_in_files(layout, PROJECT)} == {1, 2, 3}
    _agree(layout)


def test_without_a_boot_id_a_fill_flushes_at_once(
    scans: list[rawmod.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a written fill could not be told from one a reboot lost, it would be rolled back: flush instead."""
    monkeypatch.setattr(journal_module, "_BOOT_ID", tmp_path / "no-such-file")
    flushed = _flushed_paths(monkeypatch)
    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    assert not layout.has_journal(PROJECT)
    assert str(layout.bank_files(PROJECT)[0]) in flushed[-8:]  # the third fill's rows, flushed by the fill itself


def test_an_unreadable_written_journal_is_kept_and_no_file_touched(scans: list[rawmod.Scan], tmp_path: Path) -> None:
    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    written = written_path(layout.journal_path(PROJECT))
    written.write_text('{"files": "not a list"}')
    files = _products(layout)
    assert layout.recover_all() == []  # logged, not raised: one damaged project must not stop the filler
    assert written.exists() and _products(layout) == files


def test_rollback_of_a_failed_fill_leaves_a_written_fill_before_it_flushed_and_kept(
    scans: list[rawmod.Scan], tmp_path: Path
) -> None:
    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    journal = Journal(layout.journal_path(PROJECT))  # a fill that fails after the lock flushed the written one
    journal.rollback()
    assert {key.scan for key in scans_in_files(layout, PROJECT)} == {1, 2, 3} and not layout.has_journal(PROJECT)


def test_the_daemon_leaves_each_flush_for_its_idle_moments_and_flushes_before_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    sim = TelescopeSimulator(SPEC, raw)
    for plan in sim.plans[:3]:
        sim.start_scan(plan)
        sim.finish_scan(plan)
    marked: list[str] = []
    real_mark = Journal.mark_written
    monkeypatch.setattr(Journal, "mark_written", lambda self: marked.append(self.path.stem) or real_mark(self))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False)
    daemon.start()
    try:
        while daemon.step():
            pass  # filling: three scans, each written and reported without waiting for the disk
        assert marked == [PROJECT] * 3
        assert not OutputLayout(out).has_journal(PROJECT)  # the idle poll flushed the last one
        sim.start_scan(sim.plans[3])
        sim.finish_scan(sim.plans[3])
        assert daemon.step() and OutputLayout(out).unflushed(PROJECT)
        (line,), _ = _status(out, capsys)  # as the operator sees it meanwhile, and the status page
        assert line.startswith(f"NOT FLUSHED YET: {PROJECT}: ") and "the daemon flushes it when idle" in line
        config = tmp_path / "obsflow.toml"
        config.write_text(f'[filler]\nraw_root = "{raw}"\nout_root = "{out}"\n')
        (entry,) = filler_status(load_config(config))["fills_not_ended"]
        assert (entry["project"], entry["state"]) == (PROJECT, "written") and entry["message"].startswith("NOT FLUSHED")
        assert "NOT FLUSHED YET" in filler_section(filler_status(load_config(config)), time.time())
    finally:
        daemon.close()
    assert not OutputLayout(out).has_journal(PROJECT)  # flushed before the daemon stopped
    assert {key.scan for key in scans_in_files(OutputLayout(out), PROJECT)} == {1, 2, 3, 4}


def test_the_daemon_flushes_each_scan_when_told_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    sim = TelescopeSimulator(SPEC, raw)
    sim.start_scan(sim.plans[0])
    sim.finish_scan(sim.plans[0])
    marked: list[str] = []
    monkeypatch.setattr(Journal, "mark_written", lambda self: marked.append(self.path.stem))
    daemon = build_daemon(raw, out, poll_s=0.01, quicklook=False, flush_each_scan=True)
    daemon.run(until_idle=True)
    assert marked == [] and not OutputLayout(out).has_journal(PROJECT)
    assert {key.scan for key in scans_in_files(OutputLayout(out), PROJECT)} == {1}


def test_a_flush_that_fails_keeps_the_written_journal_and_says_so(
    scans: list[rawmod.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from obsflow.errors import OutputError

    layout = _two_scans_then_a_deferred_one(scans, tmp_path / "out")
    files = _products(layout)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OutputError, match="cannot flush the written fill: Input/output error"):
        layout.settle(PROJECT, timeout_s=5)
    assert layout.unflushed(PROJECT) and _products(layout) == files  # tried again by the next holder
    monkeypatch.undo()
    layout.settle(PROJECT, timeout_s=5)
    assert not layout.has_journal(PROJECT)


def _status(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[dict[str, object]]]:
    """``online status``'s lines about fills not ended, and its --json's entries."""
    assert main(["online", "status", "--out-root", str(out)]) == 0
    text = capsys.readouterr().out
    assert main(["online", "status", "--out-root", str(out), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["fills_not_ended"]
    starts = ("NOT FLUSHED YET: ", "INTERRUPTED: ", "filling ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(starts)], entries


def test_online_status_tells_a_fill_not_yet_flushed_and_one_interrupted(
    scans: list[rawmod.Scan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator asks whether the last scans are on disk: a written fill is complete but not flushed
    yet, an interrupted one will be rolled back; neither is a fill under way."""
    out = tmp_path / "out"
    layout = _two_scans_then_a_deferred_one(scans, out)
    (line,), entries = _status(out, capsys)  # no daemon ever ran here: an offline fill left it
    assert line.startswith(f"NOT FLUSHED YET: {PROJECT}: its last fill was written ")
    assert "the next fill of the project or a daemon start flushes it" in line
    assert [(e["project"], e["state"]) for e in entries] == [(PROJECT, "written")]

    layout.settle(PROJECT, timeout_s=5)
    assert _status(out, capsys) == ([], [])

    journal = Journal(layout.journal_path(PROJECT))  # a fill that journaled, then died before it ended
    journal.record(FileUndo(str(layout.bank_files(PROJECT)[0]), layout.bank_files(PROJECT)[0].stat().st_size))
    journal.save()
    (line,), entries = _status(out, capsys)
    assert line.startswith(f"INTERRUPTED: a fill of {PROJECT} stopped midway") and line.endswith("rolls it back")
    assert [(e["project"], e["state"]) for e in entries] == [(PROJECT, "interrupted")]
    with held(layout.locks_dir, PROJECT, timeout_s=5, purpose="fill scan 9"):  # its fill still running
        assert [e["state"] for e in _status(out, capsys)[1]] == ["filling"]
    assert layout.recover_all() == [str(layout.bank_files(PROJECT)[0])]
    assert _status(out, capsys) == ([], [])
    _agree(layout)
