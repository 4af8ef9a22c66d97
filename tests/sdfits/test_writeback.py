"""Write-out started while an append is still copying: same bytes, ranges in order, harmless where unsupported."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import pytest

from obsflow import writeback
from obsflow.online import raw
from obsflow.online.rows import scan_header, scan_rows
from obsflow.sdfits import writer
from obsflow.simulate.telescope import TelescopeSpec, simulate_project

SPEC = TelescopeSpec(project="TWB_01", scans=2, procedure="Track", banks=1, pols=2, channels=4096, integrations=8,
                     seed=4)  # fmt: skip
NOW = writer.datetime(2026, 12, 3, 4, 5, 6)


def _fill(path: Path, scans: list[raw.Scan]) -> bytes:
    for scan in scans:
        rows = scan_rows(scan, "A")
        if path.exists():
            writer.apply_append(writer.plan_append(path, rows, scan_header(scan, "A")))
        else:
            writer.create_file(path, rows, scan_header(scan, "A"), now=NOW)
    return path.read_bytes()


def test_an_append_starts_writing_out_its_rows_in_order_and_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_project(SPEC, tmp_path / "raw")
    scans = raw.read_project(tmp_path / "raw" / SPEC.project)
    real = writeback._sync_file_range()
    if real is None:
        pytest.skip("no sync_file_range on this system")
    asked: list[tuple[int, int]] = []

    def spy(fd: int, offset: int, nbytes: int, flags: int) -> int:
        asked.append((offset, nbytes))
        return real(fd, offset, nbytes, flags)

    monkeypatch.setattr(writeback, "STEP", 64 * 1024)  # a scan's rows are 8 x 2 x 2 x 16 KiB = 512 KiB
    monkeypatch.setattr(writeback, "_call", spy)
    started = _fill(tmp_path / "started.fits", scans)
    breaks = [i + 1 for i, ((a, n), (b, _)) in enumerate(pairwise(asked)) if a + n != b]
    assert len(breaks) == 1  # one contiguous, ascending run for the new file, one for the append
    new_file, append = asked[: breaks[0]], asked[breaks[0] :]
    assert append[0][0] > new_file[-1][0]
    for ranges in (new_file, append):
        assert len(ranges) >= 4 and all(nbytes >= 64 * 1024 for _, nbytes in ranges)
        # never the page the next row goes on: a page under write-out makes its next write wait for the disk
        assert all((offset + nbytes) % writeback.PAGE == 0 for offset, nbytes in ranges[:-1])
    state = writer.read_state(tmp_path / "started.fits")
    assert append[-1][0] + append[-1][1] <= state.data_end <= append[-1][0] + append[-1][1] + 64 * 1024

    monkeypatch.setattr(writeback, "_call", None)
    assert _fill(tmp_path / "plain.fits", scans) == started


def test_a_file_that_cannot_be_written_out_early_is_simply_flushed_at_the_end() -> None:
    if writeback._sync_file_range() is None:
        pytest.skip("no sync_file_range on this system")
    read_end, write_end = os.pipe()  # sync_file_range refuses a pipe (ESPIPE)
    try:
        started = writeback.Writeback(write_end, 0, step=1)
        os.write(write_end, b"x" * writeback.PAGE)
        started.written_to(writeback.PAGE)  # no exception: the hint is dropped for this file
        assert started.started_to == 0 and started._call is None
        started.written_to(2 * writeback.PAGE)
    finally:
        os.close(read_end)
        os.close(write_end)
