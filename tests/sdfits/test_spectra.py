"""VEGAS spectra left in the raw file until the writer puts them in their rows: same values, same bytes, same guarantees."""

from __future__ import annotations

import dataclasses
import errno
import mmap
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from obsflow import writeback
from obsflow.errors import InputError, OutputError
from obsflow.online import raw
from obsflow.online.fitsfile import open_fits, read_cells
from obsflow.online.rows import scan_header, scan_rows
from obsflow.sdfits import spectra, writer
from obsflow.sdfits.spectra import SpectraInFile
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

SPEC = TelescopeSpec(project="TSPEC_01", scans=2, procedure="Track", banks=2, pols=2, channels=1024, integrations=4,
                     seed=3)  # fmt: skip
NOW = writer.datetime(2026, 11, 24, 1, 2, 3)


@pytest.fixture()
def scans(tmp_path: Path) -> list[raw.Scan]:
    simulate_project(SPEC, tmp_path / "raw")
    return raw.read_project(tmp_path / "raw" / SPEC.project)


def _in_memory(rows: dict) -> dict:
    """The same rows with the spectra read into an array (the path every other caller of the writer takes)."""
    return {**rows, "DATA": np.asarray(rows["DATA"])}


def _fill(path: Path, scans: list[raw.Scan], in_memory: bool) -> bytes:
    for scan in scans:
        rows = scan_rows(scan, "A")
        rows = _in_memory(rows) if in_memory else rows
        if path.exists():
            writer.apply_append(writer.plan_append(path, rows, scan_header(scan, "A")))
        else:
            writer.create_file(path, rows, scan_header(scan, "A"), now=NOW)
    return path.read_bytes()


def test_a_bank_file_read_without_its_spectra_has_every_other_value(scans: list[raw.Scan]) -> None:
    path = raw.bank_file(scans[0], "A")
    whole, sparse = open_fits(path), open_fits(path, unread=("DATA",))
    assert [dict(h.header) for h in whole] == [dict(h.header) for h in sparse]
    for full, lazy in zip(whole, sparse, strict=True):
        if full.table is None:
            continue
        for name in full.table.names:
            if name == "DATA":
                offsets, cell = lazy.table.cell_offsets(name)
                assert np.array_equal(read_cells(path, offsets, cell), full.table.column(name))
                with pytest.raises(ValueError, match="left in the file"):
                    lazy.table.column(name)
            else:
                assert np.array_equal(lazy.table.column(name), full.table.column(name)), name


def test_sdfits_spectra_are_the_raw_ones_with_the_centre_spur_smoothed(scans: list[raw.Scan]) -> None:
    rows = scan_rows(scans[0], "B")
    spectra = rows["DATA"]
    assert isinstance(spectra, SpectraInFile) and spectra.changed  # the simulator puts a spur at the centre
    vegas = raw.read_vegas_bank(raw.bank_file(scans[0], "B"))
    expected = np.array(vegas.data).reshape(-1, vegas.nchan)  # rows: integration, sampler, state
    centre = int(vegas.crpix1) - 1
    expected[:, centre] = 0.5 * (expected[:, centre - 1] + expected[:, centre + 1])  # every row has VSPRVAL 16
    got = spectra.read()
    assert got.dtype == np.dtype(">f4") and got.tobytes() == expected.tobytes()
    assert np.array_equal(spectra[3:5], expected[3:5])


def _second_scan_planned(scans: list[raw.Scan], out: Path) -> tuple[bytes, writer.AppendPlan]:
    """``out`` holding the first scan (its bytes), and the planned append of the second."""
    _fill(out, scans[:1], in_memory=False)
    return out.read_bytes(), writer.plan_append(out, scan_rows(scans[1], "A"), scan_header(scans[1], "A"))


def _unmappable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files cannot be mapped (a file system without mmap); anonymous memory still can."""
    real = mmap.mmap

    def refuse(fileno: int, *args: object, **kwargs: object) -> mmap.mmap:
        if fileno != -1:
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return real(fileno, *args, **kwargs)

    monkeypatch.setattr(mmap, "mmap", refuse)


def test_the_file_is_the_same_whether_spectra_are_mapped_read_in_batches_row_by_row_or_held(
    scans: list[raw.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapped = _fill(tmp_path / "mapped.fits", scans, in_memory=False)
    held = _fill(tmp_path / "held.fits", scans, in_memory=True)
    _unmappable(monkeypatch)
    batched = _fill(tmp_path / "batched.fits", scans, in_memory=False)
    monkeypatch.setattr(spectra, "BATCH_BYTES", 1)  # one row per batch
    one_by_one = _fill(tmp_path / "one.fits", scans, in_memory=False)
    monkeypatch.setattr(spectra, "BATCH_BYTES", 3 * SPEC.channels * 4)  # batches that end inside an integration
    monkeypatch.setattr(spectra, "_in_order_and_close", lambda *args: False)  # each spectrum read on its own
    scattered = _fill(tmp_path / "scattered.fits", scans, in_memory=False)
    assert mapped == held == batched == one_by_one == scattered
    assert writer.read_state(tmp_path / "mapped.fits").nrows == 2 * 4 * 2 * 2  # scans x ints x pols x cal


@pytest.mark.parametrize("mappable", [True, False], ids=["mapped", "read"])
def test_a_scans_rows_are_one_write_and_the_raw_rows_one_read_or_none(
    scans: list[raw.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mappable: bool
) -> None:
    _, plan = _second_scan_planned(scans, tmp_path / "out.fits")
    if not mappable:
        _unmappable(monkeypatch)
    reads, writes = [], []
    real_preadv, real_pwritev = os.preadv, os.pwritev
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: reads.append(offset) or real_preadv(fd, buffers, offset))
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, offset: writes.append(offset) or real_pwritev(fd, buffers, offset))
    writer.apply_append(plan)
    rows = len(plan.rows)  # 16 rows of 4 KiB spectra: one batch
    assert len(reads) == (0 if mappable else 1) and len(writes) == 1 + 2  # the rows; the padding, the NAXIS2 card
    assert writes[0] == plan.data_offset and rows * 4096 < 2**20
    # the other 73 columns were encoded on their own: no row-sized array was filled for the spectra
    assert "DATA" not in plan.rows.dtype.names and plan.rows.dtype.itemsize + 4096 == plan.row_bytes


def test_the_rows_go_in_calls_of_about_two_mib_and_the_file_is_the_same(
    scans: list[raw.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One big write makes the kernel fill the page cache with 2 MiB folios (slow on memory handed back to
    the VM's host): the rows go in calls of ROWS_PER_CALL_BYTES, here 3 rows' worth."""
    _, plan = _second_scan_planned(scans, tmp_path / "one-call.fits")
    writer.apply_append(plan)
    _, plan = _second_scan_planned(scans, tmp_path / "calls.fits")
    monkeypatch.setattr(writer, "ROWS_PER_CALL_BYTES", 3 * plan.row_bytes + 1)
    calls: list[int] = []
    real_pwritev = os.pwritev
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, offset: calls.append(sum(map(len, buffers)))
                        or real_pwritev(fd, buffers, offset))  # fmt: skip
    writer.apply_append(plan)
    rows_calls = calls[:-2]  # then the padding and the NAXIS2 card
    assert rows_calls == [3 * plan.row_bytes] * 5 + [plan.row_bytes]  # 16 rows
    assert (tmp_path / "calls.fits").read_bytes() == (tmp_path / "one-call.fits").read_bytes()


@pytest.mark.parametrize("when", ["before-the-append", "under-its-mapping"])
def test_a_raw_file_cut_short_after_it_was_read_leaves_the_sdfits_file_as_it_was(
    scans: list[raw.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    out = tmp_path / "out.fits"
    before, plan = _second_scan_planned(scans, out)
    bank = raw.bank_file(scans[1], "A")
    if when == "before-the-append":  # rewritten under us after it was read: the spectra are gone
        with open(bank, "r+b") as handle:
            handle.truncate(bank.stat().st_size // 2)
    else:
        real_write = writer.write_at

        def cut_then_write(fd: int, data, offset: int) -> None:  # mapped already: the kernel finds the pages gone
            if isinstance(data, list):
                os.truncate(bank, 2880)
            real_write(fd, data, offset)

        monkeypatch.setattr(writer, "write_at", cut_then_write)
    with pytest.raises(InputError, match="shorter than its spectra") as err:
        writer.apply_append(plan)
    assert str(bank) in err.value.one_line()
    assert out.read_bytes() == before


@pytest.mark.parametrize("where", ["within-the-first-batch", "after-some-batches"])
def test_a_full_disk_while_spectra_are_copied_leaves_the_file_as_it_was(
    scans: list[raw.Scan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    out = tmp_path / "out.fits"
    before, plan = _second_scan_planned(scans, out)
    monkeypatch.setattr(writeback, "STEP", 1)  # a write per row (a flush follows: writes of ~STEP bytes)
    room = 5 * plan.row_bytes // 4 if where == "within-the-first-batch" else 5 * plan.row_bytes
    written = [0]

    def full_after_some_rows(fd: int, data, offset: int) -> None:
        parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        size = sum(memoryview(part).nbytes for part in parts)
        if written[0] + size > room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += size
        writer._pwrite_all(fd, data, offset)

    monkeypatch.setattr(writer, "write_at", full_after_some_rows)
    with pytest.raises(OutputError, match="^disk full while appending 16 rows"):
        writer.apply_append(plan)
    assert out.read_bytes() == before


def test_a_new_file_from_spectra_in_a_raw_file_that_vanished_leaves_nothing(
    scans: list[raw.Scan], tmp_path: Path
) -> None:
    rows = scan_rows(scans[0], "A")
    moved = tmp_path / "moved.fits"
    shutil.move(raw.bank_file(scans[0], "A"), moved)
    with pytest.raises(InputError, match="cannot read VEGAS spectra"):
        writer.create_file(tmp_path / "new.fits", rows, scan_header(scans[0], "A"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.fits", "raw"]
    rows["DATA"] = dataclasses.replace(rows["DATA"], path=moved)
    writer.create_file(tmp_path / "new.fits", rows, scan_header(scans[0], "A"))
    assert writer.read_state(tmp_path / "new.fits").nrows == 16
