"""Kill, fail and fill the disk during fills: every file stays old-or-new, never damaged.

Each trial forks a filler (already imported, so the kill lands in the fill itself),
SIGKILLs it at a random instant, then "restarts" (recovers the journal) and checks:
every FITS file opens, every index has NAXIS2 rows and equals a freshly built index,
and every scan present is present exactly once.  Then the restarted filler catches up.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits

from obsflow.cli import main
from obsflow.errors import OutputError
from obsflow.online import raw as rawmod
from obsflow.online.fill import fill_scan, filled_scans
from obsflow.online.layout import OutputLayout
from obsflow.sdfits import index_fits, writer
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

PROJECT = "AGBT26A_400_01"
TRIALS = 100


@pytest.fixture(scope="module")
def raw_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    spec = TelescopeSpec(project=PROJECT, scans=12, procedure="OnOff", banks=2, pols=2, channels=4096,
                         integrations=16, seed=11, start=datetime(2026, 11, 22, 1, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, root)
    return root / PROJECT


def _fill_all(project_dir: Path, out: Path, flush: bool = True) -> None:
    layout = OutputLayout(out)
    for scan in rawmod.read_project(project_dir):
        fill_scan(scan, layout, lock_timeout_s=5, project=PROJECT, flush=flush)


def check_consistent(out: Path, expected_scans: set[int] | None = None) -> set[int]:
    """Every product file is whole and agrees with the others; return the scans present."""
    layout = OutputLayout(out)
    assert layout.recover_all() == []  # callers recover first: nothing may be left to roll back
    present: set[int] = set()
    banks = layout.bank_files(PROJECT)
    for fits_path in banks:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even a warning about trailing bytes
            with fits.open(fits_path) as hdul:
                hdul.verify("exception")
                table = hdul[1].data
                keys = list(zip(table["SCAN"].tolist(), table["TIMESTAMP"].tolist(), strict=True))
        rows_per_key: dict[tuple, int] = {}
        for key in keys:
            rows_per_key[key] = rows_per_key.get(key, 0) + 1
        assert len(set(rows_per_key.values())) <= 1, "a scan is in the file twice or partly"
        present |= {int(k[0]) for k in rows_per_key}
        index_path = index_fits.index_path_for(fits_path)
        assert index_fits.index_mismatch(index_path, fits_path) is None
        assert _rows(index_path.read_text()) == _rows(index_fits.build_index_for_fits(fits_path))
    combined = layout.combined_index(PROJECT)
    if banks:
        assert index_fits.index_mismatch(combined, *banks) is None
        link = banks[0].with_suffix(".flag")
        assert link.is_symlink() and "[flags]" in link.read_text()
    if expected_scans is not None:
        assert present == expected_scans
    return present


def _rows(text: str) -> str:
    return text.split("[rows]\n", 1)[1]


def _child(project_dir: str, out: str, flush: bool) -> None:
    _fill_all(Path(project_dir), Path(out), flush)
    os._exit(0)


def _whole_run_seconds(ctx, raw_project: Path, out: Path, flush: bool) -> float:
    """How long one filler takes to fill every scan from nothing, here and now: the kills are drawn
    within it (a fixed window missed the fills on a faster machine)."""
    child = ctx.Process(target=_child, args=(str(raw_project), str(out), flush))
    started = time.perf_counter()
    child.start()
    child.join()
    assert child.exitcode == 0
    return time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.parametrize("flush", [True, False], ids=["flushed-per-scan", "flush-deferred"])
def test_sigkill_at_random_instants_never_damages_files(raw_project, tmp_path, flush):
    """Deferred: the kills land in fills and between them, with the last fill written but not flushed;
    the restart keeps such a fill (the same boot) and the next fill flushes it first."""
    out = tmp_path / "out"
    rng = random.Random(20261123)
    ctx = multiprocessing.get_context("fork")
    all_scans = {s.number for s in rawmod.read_project(raw_project)}
    whole_run = _whole_run_seconds(ctx, raw_project, tmp_path / "timed", flush)  # this machine's pace, not a constant
    killed_mid_fill = 0
    trials = TRIALS if flush else TRIALS // 2
    for trial in range(trials):
        child = ctx.Process(target=_child, args=(str(raw_project), str(out), flush))
        child.start()
        child.join(rng.uniform(0.0, whole_run))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            killed_mid_fill += 1
        child.join()
        OutputLayout(out).recover_all()  # the restart (the dead child's lock is stale: cleared on next take)
        present = check_consistent(out)
        assert present <= all_scans
        if present == all_scans:
            shutil.rmtree(out)  # start over: more fills to interrupt
    assert killed_mid_fill > trials // 3, f"only {killed_mid_fill} of {trials} kills landed before the filler ended"
    # Finally a clean restart catches up, and dysh loads the project.
    _fill_all(raw_project, out)
    check_consistent(out, all_scans)
    from dysh.fits.gbtfitsload import GBTFITSLoad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdf = GBTFITSLoad(str(OutputLayout(out).product_dir(PROJECT)))
    assert set(sdf.get_summary()["SCAN"]) == all_scans


def test_failure_midway_rolls_back_every_file(raw_project, tmp_path, monkeypatch):
    out = tmp_path / "out"
    scans = rawmod.read_project(raw_project)
    layout = OutputLayout(out)
    for scan in scans[:2]:
        fill_scan(scan, layout, project=PROJECT)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    real_write = writer.write_at
    written: set[str] = set()

    def fail_on_second_bank(fd, data, offset):  # the seam: bank A is written, bank B hits an I/O error
        name = os.readlink(f"/proc/self/fd/{fd}")
        written.add(Path(name).name)
        if name.endswith(".B.fits"):
            raise OSError(5, "Input/output error")
        real_write(fd, data, offset)

    monkeypatch.setattr(writer, "write_at", fail_on_second_bank)
    with pytest.raises(OutputError):
        fill_scan(scans[2], layout, project=PROJECT)
    assert written == {f"{PROJECT}.raw.vegas.A.fits", f"{PROJECT}.raw.vegas.B.fits"}  # A was appended to, then B failed
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    assert after == before
    check_consistent(out, {1, 2})


def test_a_failure_after_the_index_appends_rolls_back_the_indexes_too(raw_project, tmp_path):
    """The fill fails at its last step, the flag file (its folder is a file), after the FITS rows and
    the bank index rows of bank A were written: every FITS and index file is back to its old bytes."""
    out, not_a_folder = tmp_path / "out", tmp_path / "flags"
    scans = rawmod.read_project(raw_project)
    layout = OutputLayout(out)
    for scan in scans[:2]:
        fill_scan(scan, layout, project=PROJECT)
    for link in out.rglob("*.flag"):
        link.unlink()  # gone: the next fill makes the flag file again, and fails to
    not_a_folder.write_text("a file where the flag folder should be\n")
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    assert len([p for p in before if p.suffix == ".index"]) == 3  # two bank indexes and the combined one
    with pytest.raises(OutputError):
        fill_scan(scans[2], OutputLayout(out, flags_root=not_a_folder / "sub"), project=PROJECT)
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    assert after == before
    banks = layout.bank_files(PROJECT)
    for fits_path in banks:
        assert index_fits.index_mismatch(index_fits.index_path_for(fits_path), fits_path) is None
    assert index_fits.index_mismatch(layout.combined_index(PROJECT), *banks) is None


def test_truncated_backend_file_fails_before_any_write(raw_project, tmp_path):
    project = tmp_path / PROJECT
    shutil.copytree(raw_project, project)
    out = tmp_path / "out"
    assert main(["fill", str(project), str(out), "--scans", "1"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    scan2 = rawmod.read_project(project)[1]
    bank = rawmod.bank_file(scan2, "B")
    bank.write_bytes(bank.read_bytes()[:5000])
    assert main(["fill", str(project), str(out), "--scans", "2"]) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.fixture
def small_disk(tmp_path):
    """A real, tiny filesystem (tmpfs of 3 MiB) that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the full-disk test: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_leaves_files_as_they_were(raw_project, small_disk):
    out = small_disk / "out"
    layout = OutputLayout(out)
    scans = rawmod.read_project(raw_project)
    filled_ok = []
    failure = None
    for scan in scans:
        snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
        try:
            fill_scan(scan, layout, project=PROJECT)
            filled_ok.append(scan.number)
        except OutputError as err:
            failure = err
            after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".obsflow" not in p.parts}
            assert after == {p: b for p, b in snapshot.items() if ".obsflow" not in p.parts}
            break
    assert failure is not None, "the 3 MiB disk never filled up"
    assert "disk full" in str(failure) or "No space" in str(failure)
    assert len(str(failure).splitlines()) == 1
    check_consistent(out, set(filled_ok))
    assert {k.scan for k in filled_scans(layout, PROJECT)} == set(filled_ok)


def test_recovery_leaves_a_running_fill_alone_and_clears_a_dead_fillers_lock(raw_project: Path, tmp_path: Path) -> None:
    from obsflow.lock import LockInfo, held, live_locks, lock_path
    from obsflow.online.journal import Journal, undo_for

    layout = OutputLayout(tmp_path / "out")
    fill_scan(rawmod.read_project(raw_project)[0], layout, project=PROJECT)
    fits_path = layout.bank_fits(PROJECT, "A")
    before = fits_path.read_bytes()
    # A fill under way: its journal is saved, and rows are being written past the old end.
    journal = Journal(layout.journal_path(PROJECT))
    journal.record(undo_for(fits_path, [(0, 2880)]))
    journal.save()
    with open(fits_path, "ab") as handle:
        handle.write(b"\0" * 28800)
    with held(layout.locks_dir, PROJECT, purpose="an offline fill in another process"):
        assert layout.recover_all() == []  # a live holder: its fill is left alone
        assert fits_path.stat().st_size == len(before) + 28800 and layout.journal_path(PROJECT).exists()
    # The filler dies holding the lock: its lock file stays behind with a pid that is gone.
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    lock = lock_path(layout.locks_dir, PROJECT)
    lock.write_text(json.dumps(asdict(LockInfo(dead.pid, socket.gethostname(), "obs", 0.0, "fill"))))
    assert layout.recover_all() == [str(fits_path)]
    assert fits_path.read_bytes() == before
    assert not lock.exists() and PROJECT not in live_locks(layout.locks_dir)
    assert not layout.journal_path(PROJECT).exists()


def _crash_at_naxis2(raw_project: Path, layout: OutputLayout, scan_index: int, missing_banks_ok: bool = False) -> None:
    """Fill one more scan in a forked filler that dies (os._exit) just before its NAXIS2 write."""

    def child() -> None:
        real = writer.write_at

        def die_at_naxis2(fd, data, offset):  # the rows are written and flushed; the count is not
            if len(data) == 80 and bytes(data).startswith(b"NAXIS2"):
                os._exit(9)
            real(fd, data, offset)

        writer.write_at = die_at_naxis2
        fill_scan(rawmod.read_project(raw_project)[scan_index], layout, project=PROJECT,
                  missing_banks_ok=missing_banks_ok)  # fmt: skip
        os._exit(0)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()
    assert proc.exitcode == 9 and layout.journal_path(PROJECT).exists()


def test_recovery_after_a_crash_leaves_the_observers_flag_edits_alone(raw_project: Path, tmp_path: Path) -> None:
    layout = OutputLayout(tmp_path / "out")
    fill_scan(rawmod.read_project(raw_project)[0], layout, project=PROJECT)
    products = {p: p.read_bytes() for p in layout.bank_files(PROJECT)}
    _crash_at_naxis2(raw_project, layout, 1)
    # Between the crash and the filler's restart, an observer flags a channel range in bank A's
    # file and removes bank B's spur rows (the file gets shorter).
    flag_a, flag_b = (layout.flag_target(p) for p in layout.bank_files(PROJECT))
    with open(flag_a, "a") as handle:
        handle.write("1|2026-12-01 22:00:00.000|observer|1|*|*|*|100:200|RFI\n")
    flag_b.write_text(flag_b.read_text().split("\n", 2)[0] + "\n")
    edited = {flag_a: flag_a.read_bytes(), flag_b: flag_b.read_bytes()}
    assert layout.recover_all()  # the fill is rolled back ...
    assert {p: p.read_bytes() for p in layout.bank_files(PROJECT)} == products
    assert {p: p.read_bytes() for p in edited} == edited  # ... the observer's edits are not
    check_consistent(layout.root, {1})


def _products(layout: OutputLayout) -> dict[Path, bytes]:
    """Every file a fill writes, not the daemon's state nor the locks (clearing a dead filler's leaves a file)."""
    return {p: p.read_bytes() for p in sorted(layout.root.rglob("*"))
            if p.is_file() and not {".obsflow", "locks"} & set(p.relative_to(layout.root).parts)}  # fmt: skip


def test_crashes_while_a_scan_is_filled_without_a_bank_and_when_the_bank_comes_roll_back_whole(raw_project: Path,
                                                                                              tmp_path: Path) -> None:
    """Both fills that touch only some banks (the banks that came; later the one that came late) are rolled
    back to the files' previous complete state, the bank indexes and the combined index with them."""
    project = tmp_path / PROJECT
    shutil.copytree(raw_project, project)
    layout = OutputLayout(tmp_path / "out")
    fill_scan(rawmod.read_project(project)[0], layout, project=PROJECT)
    late = rawmod.bank_file(rawmod.read_project(project)[1], "B")
    aside = late.rename(tmp_path / late.name)  # scan 2's bank B never came
    before = _products(layout)
    _crash_at_naxis2(project, layout, 1, missing_banks_ok=True)  # dies filling scan 2 into bank A only
    assert layout.recover_all() and _products(layout) == before
    check_consistent(layout.root, {1})
    fill_scan(rawmod.read_project(project)[1], layout, project=PROJECT, missing_banks_ok=True)
    fill_scan(rawmod.read_project(project)[2], layout, project=PROJECT)
    before = _products(layout)
    aside.rename(late)  # it comes late
    _crash_at_naxis2(project, layout, 1)  # dies appending scan 2 to bank B, after scan 3
    assert layout.recover_all() and _products(layout) == before
    check_consistent(layout.root, {1, 2, 3})
    fill_scan(rawmod.read_project(project)[1], layout, project=PROJECT)  # the restart fills it again
    check_consistent(layout.root, {1, 2, 3})
    with fits.open(layout.bank_fits(PROJECT, "B")) as hdul:
        scans = hdul[1].data["SCAN"].tolist()
    assert [n for i, n in enumerate(scans) if i == 0 or scans[i - 1] != n] == [1, 3, 2]


def test_reading_which_scans_are_filled_waits_for_the_fill_that_holds_the_lock(raw_project: Path,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    from obsflow.errors import LockError
    from obsflow.lock import held

    layout = OutputLayout(tmp_path / "out")
    fill_scan(rawmod.read_project(raw_project)[0], layout, project=PROJECT)
    _crash_at_naxis2(raw_project, layout, 1)  # a journal, as a fill under way leaves it
    fits_path = layout.bank_fits(PROJECT, "A")
    mid_fill = fits_path.read_bytes()
    with held(layout.locks_dir, PROJECT, purpose="an offline fill in another process"):
        with pytest.raises(LockError):
            filled_scans(layout, PROJECT, lock_timeout_s=0.3)
        assert fits_path.read_bytes() == mid_fill and layout.journal_path(PROJECT).exists()  # not rolled back
    assert {k.scan for k in filled_scans(layout, PROJECT)} == {1}  # the lock is free: rolled back, then read
    check_consistent(layout.root, {1})


def test_ctrl_c_during_a_fill_rolls_it_back(raw_project: Path, tmp_path: Path, monkeypatch) -> None:
    layout = OutputLayout(tmp_path / "out")
    scans = rawmod.read_project(raw_project)
    fill_scan(scans[0], layout, project=PROJECT)
    before = {p: p.read_bytes() for p in sorted(layout.root.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    real = writer.write_at

    def interrupted(fd, data, offset):
        if len(data) == 80 and bytes(data).startswith(b"NAXIS2"):
            raise KeyboardInterrupt
        real(fd, data, offset)

    monkeypatch.setattr(writer, "write_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fill_scan(scans[1], layout, project=PROJECT)
    after = {p: p.read_bytes() for p in sorted(layout.root.rglob("*")) if p.is_file() and ".obsflow" not in p.parts}
    assert after == before and not layout.journal_path(PROJECT).exists()


def test_a_status_file_that_cannot_be_read_does_not_fail_a_fill(raw_project: Path, tmp_path: Path, caplog) -> None:
    layout = OutputLayout(tmp_path / "out")
    scans = rawmod.read_project(raw_project)
    fill_scan(scans[0], layout, project=PROJECT)
    (layout.root / "sdfitsStatus.txt").write_text("not, a, status, line\n")  # damaged from outside
    result = fill_scan(scans[1], layout, project=PROJECT)  # the scan goes in; the status is reported
    assert not result.skipped and {k.scan for k in filled_scans(layout, PROJECT)} == {1, 2}
    assert any("was not updated" in r.getMessage() for r in caplog.records)
    check_consistent(layout.root, {1, 2})


@pytest.mark.parametrize("fails", ["formatting", "journal"])
def test_a_failure_to_journal_or_to_format_leaves_the_files_and_no_journal(
    raw_project: Path, tmp_path: Path, monkeypatch, fails: str
) -> None:
    """Saving the journal fails (a full disk: nothing written yet), or formatting the index rows fails
    (a bug: while the rows are written): the error is raised, every file is as it was, no journal is
    left, and the scan is filled later."""
    from obsflow.online import fill as fill_module
    from obsflow.online import journal as journal_module

    layout = OutputLayout(tmp_path / "out")
    scans = rawmod.read_project(raw_project)
    fill_scan(scans[0], layout, project=PROJECT)
    before = _products(layout)

    def fail(*args, **kwargs):
        if fails == "journal":
            raise OutputError("disk full", args[0])
        raise ValueError("cannot format an index row")

    monkeypatch.setattr(fill_module if fails == "formatting" else journal_module,
                        "_index_rows" if fails == "formatting" else "write_atomic", fail)  # fmt: skip
    with pytest.raises(ValueError if fails == "formatting" else OutputError):
        fill_scan(scans[1], layout, project=PROJECT)
    monkeypatch.undo()
    journal = layout.journal_path(PROJECT)
    assert _products(layout) == before and not journal.exists() and not journal.with_suffix(".written").exists()
    fill_scan(scans[1], layout, project=PROJECT)
    check_consistent(layout.root, {1, 2})
