"""The SDFITS writer on real GBT filler rows: byte-exact output, O(scan) appends, rollback, bad files, full disk."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from obsflow.errors import InputError, IntegrityError, ObsflowError, OutputError
from obsflow.online.journal import FileUndo, Journal, recover
from obsflow.sdfits import writer
from obsflow.sdfits.columns import BLOCK, CARD, COLUMN_NAMES

REAL = "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A.fits"
FIRST, SECOND = (281, 282), (289, 290)


@pytest.fixture(scope="module")
def real(samples):
    """(path, rows by column as the row builder hands them over, the real file's keyword values)."""
    path = samples / REAL
    with fits.open(path) as hdus:
        data, table, primary = hdus[1].data, hdus[1].header, hdus[0].header
        rows = {}
        for name in COLUMN_NAMES:
            column = np.array(data[name])
            rows[name] = np.char.decode(column, "ascii") if column.dtype.kind == "S" else column
        keywords = {k: table[k] for k in ("PROJID", "BACKEND", "TELESCOP", "SITELONG", "SITELAT", "SITEELEV")}
        keywords.update({k: primary[k] for k in ("DATE", "ORIGIN", "INSTRUME", "SDFITVER", "FITSVER")})
    return path, rows, keywords


def _scans(rows: dict[str, np.ndarray], scans: tuple[int, ...]) -> dict[str, np.ndarray]:
    keep = np.isin(rows["SCAN"], scans)
    return {name: values[keep] for name, values in rows.items()}


def _count(rows: dict[str, np.ndarray], scans: tuple[int, ...]) -> int:
    return int(np.isin(rows["SCAN"], scans).sum())


def _ours(keywords: dict[str, object]) -> dict[str, object]:
    """The keywords rows.scan_header gives: no DATE or SDFITVER, so obsflow's defaults apply."""
    return {k: v for k, v in keywords.items() if k not in ("DATE", "SDFITVER")}


def _narrow(rows: dict[str, np.ndarray], nchan: int) -> dict[str, np.ndarray]:
    out = dict(rows)
    out["DATA"] = np.ascontiguousarray(rows["DATA"][:, :nchan])
    out["TDIM7"] = np.full(len(rows["SCAN"]), f"({nchan},1,1,1)")
    return out


@pytest.fixture
def two_scans(real, tmp_path):
    """A file we created from the real file's first two scans."""
    _, rows, keywords = real
    path = tmp_path / "AGBT22A_325_15.raw.vegas.A.fits"
    writer.create_file(path, _scans(rows, FIRST), _ours(keywords))
    return path


def _one_line(err: pytest.ExceptionInfo[ObsflowError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ----------------------------------------------------------------------------- round trip


def test_create_then_append_reproduces_the_real_file_byte_for_byte(real, tmp_path):
    path, rows, keywords = real
    out = tmp_path / "copy.fits"
    assert writer.append_rows(out, _scans(rows, FIRST), keywords) == 0
    assert writer.append_rows(out, _scans(rows, SECOND), keywords) == _count(rows, FIRST)
    assert out.read_bytes() == path.read_bytes()


def test_round_trip_keeps_every_value_and_keyword(real, two_scans):
    path, rows, keywords = real
    writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    with fits.open(path) as original, fits.open(two_scans) as ours:
        ours.verify("exception")
        assert ours[1].name == "SINGLE DISH" and len(ours) == 2
        for name in COLUMN_NAMES:
            a, b = original[1].data[name], ours[1].data[name]
            if a.dtype.kind == "f":
                assert np.array_equal(a, b, equal_nan=True), name
            else:
                assert np.array_equal(a, b), name
        for hdu in (0, 1):
            for key in original[hdu].header:
                if key in ("DATE", "SDFITVER", "COMMENT"):
                    continue
                assert ours[hdu].header[key] == original[hdu].header[key], key
        assert list(ours[1].header["COMMENT"]) == list(original[1].header["COMMENT"])
        assert ours[0].header["SDFITVER"].startswith("obsflow ")


def test_fitsio_reads_what_we_wrote(real, two_scans):
    fitsio = pytest.importorskip("fitsio")
    _, rows, keywords = real
    writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    with fitsio.FITS(str(two_scans)) as handle:
        table = handle[1]
        assert table.get_nrows() == 32 and handle[1].get_extname() == "SINGLE DISH"
        data = table.read(columns=["DATA", "SCAN", "OBJECT"])
    assert np.array_equal(data["DATA"], rows["DATA"], equal_nan=True)
    assert list(data["SCAN"]) == list(rows["SCAN"])


def test_dysh_summary_lists_the_four_scans(real, two_scans, capsys):
    gbtfitsload = pytest.importorskip("dysh.fits.gbtfitsload")
    _, rows, keywords = real
    writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdfits = gbtfitsload.GBTFITSLoad(str(two_scans))
        sdfits.summary()  # prints the table
        summary = sdfits.get_summary()
    assert sorted(set(summary["SCAN"])) == [281, 282, 289, 290]
    printed = capsys.readouterr().out
    assert all(re.search(rf"^\s*{scan}\s", printed, re.M) for scan in (281, 282, 289, 290)), printed
    assert sdfits.projectID == "AGBT22A_325_15"


def test_scans_in_file_are_the_scan_timestamp_pairs(real, two_scans):
    path, rows, keywords = real
    expected = {(int(s), str(t).rstrip()) for s, t in zip(rows["SCAN"], rows["TIMESTAMP"], strict=True)}
    assert writer.scans_in_file(path) == expected  # the real filler's file
    assert writer.scans_in_file(two_scans) == {p for p in expected if p[0] in FIRST}


def test_state_says_where_things_are(real, two_scans):
    state = writer.read_state(two_scans)
    nrows = _count(real[1], FIRST)
    assert (state.nrows, state.nchan, state.row_bytes) == (nrows, 1024, 4722)
    assert state.file_size == two_scans.stat().st_size == state.data_start + nrows * 4722 + (-nrows * 4722) % BLOCK
    raw = two_scans.read_bytes()
    assert raw[state.naxis2_offset : state.naxis2_offset + CARD].startswith(b"NAXIS2  = %20d /" % nrows)
    assert raw[state.header_start : state.header_start + 8] == b"XTENSION"
    assert state.keywords["PROJID"] == "AGBT22A_325_15" and state.keywords["SITELONG"] == pytest.approx(-79.83983)


def test_a_file_with_no_rows_can_be_created_and_grown(real, tmp_path):
    _, rows, keywords = real
    path = tmp_path / "empty.fits"
    writer.create_file(path, _scans(rows, ()), _ours(keywords))
    assert writer.read_state(path).nrows == 0 and writer.scans_in_file(path) == set()
    writer.append_rows(path, _scans(rows, FIRST), _ours(keywords))
    with fits.open(path) as hdus:
        assert list(np.unique(hdus[1].data["SCAN"])) == list(FIRST)


def test_wide_spectra_round_trip(real, tmp_path):
    _, rows, keywords = real
    wide = {name: values[:3] for name, values in rows.items()}
    wide["DATA"] = np.arange(3 * 32768, dtype=np.float32).reshape(3, 32768)
    wide["TDIM7"] = np.full(3, "(32768,1,1,1)")
    path = tmp_path / "wide.fits"
    writer.append_rows(path, wide, _ours(keywords))
    writer.append_rows(path, wide, _ours(keywords))
    with fits.open(path) as hdus:
        hdus.verify("exception")
        assert hdus[1].header["TFORM7"] == "32768E" and hdus[1].header["NAXIS2"] == 6
        assert np.array_equal(hdus[1].data["DATA"][3:], wide["DATA"])


# ----------------------------------------------------------------------------- O(scan), ordering, rollback


def test_append_changes_no_byte_before_the_old_end_of_data_but_naxis2(real, two_scans):
    _, rows, keywords = real
    before = two_scans.read_bytes()
    state = writer.read_state(two_scans)
    writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    after = two_scans.read_bytes()
    changed = np.flatnonzero(np.frombuffer(before[: state.data_end], np.uint8)
                             != np.frombuffer(after[: state.data_end], np.uint8))  # fmt: skip
    assert changed.size > 0
    assert changed.min() >= state.naxis2_offset and changed.max() < state.naxis2_offset + CARD


def test_rows_are_durable_before_the_row_count_names_them(real, two_scans, monkeypatch):
    """Watch each write: when NAXIS2 is rewritten, every new row is already in the file and readable."""
    _, rows, keywords = real
    state = writer.read_state(two_scans)
    seen: list[tuple[int, int, int]] = []

    def watching_write(fd: int, data, offset: int) -> None:
        with fits.open(two_scans, memmap=False) as hdus:
            seen.append((offset, hdus[1].header["NAXIS2"], two_scans.stat().st_size))
        writer._pwrite_all(fd, data, offset)

    monkeypatch.setattr(writer, "write_at", watching_write)
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    writer.apply_append(plan)
    assert [offset for offset, _, _ in seen] == [state.data_end, state.data_end + plan.rows.nbytes, state.naxis2_offset]
    assert seen[-1][1:] == (plan.old_nrows, plan.new_size)  # old count, all new bytes already there
    assert writer.read_state(two_scans).nrows == plan.new_nrows == 32


@pytest.mark.parametrize("flush", [True, False], ids=["beside the flush", "beside the copy"])
def test_work_done_beside_the_append_sees_the_rows_and_the_old_count(real, two_scans, flush):
    _, rows, keywords = real
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    seen: list[tuple[int, int]] = []

    def work() -> str:
        seen.append(_naxis2(plan))
        return "formatted"

    assert writer.apply_appends([plan], flush, work) == "formatted"
    assert seen == [plan.old_nrows] and writer.read_state(two_scans).nrows == plan.new_nrows


def test_without_a_flush_the_work_runs_while_the_rows_are_written(real, two_scans, monkeypatch):
    """The rows' system calls run in a thread: a write that waits for the work goes on once it has run."""
    _, rows, keywords = real
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    work_ran, waited = threading.Event(), []

    def waiting_write(fd: int, data, offset: int) -> None:
        if not waited:
            waited.append(work_ran.wait(timeout=10))  # in turn: the work has not run, False after 10 s
        writer._pwrite_all(fd, data, offset)

    monkeypatch.setattr(writer, "write_at", waiting_write)
    writer.apply_appends([plan], False, work_ran.set)
    assert waited == [True] and writer.read_state(two_scans).nrows == plan.new_nrows


@pytest.mark.parametrize("flush", [True, False])
def test_a_failure_of_the_work_beside_leaves_the_row_count_alone(real, two_scans, flush):
    _, rows, keywords = real
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))

    def fail() -> None:
        raise OutputError("index rows do not fit", two_scans)

    with pytest.raises(OutputError, match="do not fit"):
        writer.apply_appends([plan], flush, fail)
    assert _naxis2(plan) == plan.old_nrows and two_scans.stat().st_size == plan.new_size  # rows there, not counted
    writer.rollback(two_scans, plan.old_size, plan.undo)
    assert writer.read_state(two_scans).nrows == plan.old_nrows and two_scans.stat().st_size == plan.old_size


def _naxis2(plan: writer.AppendPlan) -> int:
    """The row count as the file says it now (read_state refuses a file in the middle of an append)."""
    with open(plan.path, "rb") as handle:
        handle.seek(plan.naxis2_offset)
        card = handle.read(CARD)
    assert card.startswith(b"NAXIS2  = ")
    return int(card[10:30])


def test_rollback_restores_the_exact_old_bytes_and_is_idempotent(real, two_scans):
    _, rows, keywords = real
    before = two_scans.read_bytes()
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    assert plan.old_size == len(before) and {o for o, _ in plan.undo} == {plan.naxis2_offset, plan.data_offset}
    writer.apply_append(plan)
    assert two_scans.read_bytes() != before
    writer.rollback(two_scans, plan.old_size, plan.undo)
    assert two_scans.read_bytes() == before
    writer.rollback(two_scans, plan.old_size, plan.undo)
    assert two_scans.read_bytes() == before


def test_the_journal_restores_an_append_from_undo_patches(real, two_scans, tmp_path):
    """The fill's path: journal (old size + undo_patches) -> append -> crash -> recover."""
    _, rows, keywords = real
    before = two_scans.read_bytes()
    state = writer.read_state(two_scans)
    journal = Journal(tmp_path / ".journal" / "P.json")
    journal.record(FileUndo(str(two_scans), state.file_size, writer.undo_patches(state)))
    journal.save()
    writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    assert recover(journal.path) == [str(two_scans)]
    assert two_scans.read_bytes() == before


_APPEND_THEN_DIE = """
import os, signal, sys
import numpy as np
from obsflow.sdfits import writer
path, rows_file, die_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = []
def write_then_die(fd, data, offset):
    writer._pwrite_all(fd, data, offset)
    calls.append(offset)
    if len(calls) == die_after:
        os.kill(os.getpid(), signal.SIGKILL)
writer.write_at = write_then_die
writer.append_rows(path, dict(np.load(rows_file)))
"""


@pytest.mark.parametrize("die_after", [1, 2, 3], ids=["after-rows", "after-padding", "after-naxis2"])
def test_a_killed_append_shows_readers_old_or_new_rows_and_rolls_back(real, two_scans, tmp_path, die_after):
    """SIGKILL the writer after each of its writes: readers see a complete table, and rollback restores the bytes."""
    _, rows, keywords = real
    before = two_scans.read_bytes()
    state = writer.read_state(two_scans)
    undo = writer.undo_patches(state)
    rows_file = tmp_path / "rows.npz"
    np.savez(rows_file, **_scans(rows, SECOND))
    child = subprocess.run([sys.executable, "-c", _APPEND_THEN_DIE, str(two_scans), str(rows_file), str(die_after)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy notes the bytes past the table before NAXIS2 moves
        with fits.open(two_scans) as hdus:
            scans = set(hdus[1].data["SCAN"])
    assert scans == (set(FIRST) | set(SECOND) if die_after == 3 else set(FIRST))
    writer.rollback(two_scans, state.file_size, undo)
    assert two_scans.read_bytes() == before


# ----------------------------------------------------------------------------- full disk


def _full_disk_after(limit: int):
    """A write seam that writes up to ``limit`` bytes in all, then fails like a full disk."""
    budget = [limit]

    def write(fd: int, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        room = min(budget[0], len(view))
        writer._pwrite_all(fd, view[:room], offset)
        budget[0] -= room
        if room < len(view):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


@pytest.mark.parametrize("where", ["no-room", "mid-rows", "in-padding", "at-naxis2"])
def test_full_disk_leaves_the_file_byte_identical(real, two_scans, monkeypatch, where):
    _, rows, keywords = real
    before = two_scans.read_bytes()
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    room = {"no-room": 0, "mid-rows": plan.rows.nbytes // 2, "in-padding": plan.rows.nbytes + plan.pad_bytes // 2,
            "at-naxis2": plan.rows.nbytes + plan.pad_bytes + CARD // 2}[where]  # fmt: skip
    monkeypatch.setattr(writer, "write_at", _full_disk_after(room))
    with pytest.raises(OutputError) as err:
        writer.apply_append(plan)
    rows_added = _count(rows, SECOND)
    assert re.search(rf"^disk full while appending {rows_added} rows; the file was left as it was \(.*\)$",
                     _one_line(err))  # fmt: skip
    assert two_scans.read_bytes() == before


@pytest.fixture
def two_banks(real, two_scans):
    """Two files holding the first two scans, each with a plan to append the next ones (a scan's bank files)."""
    _, rows, keywords = real
    other = two_scans.with_name("AGBT22A_325_15.raw.vegas.B.fits")
    shutil.copyfile(two_scans, other)
    return [writer.plan_append(path, _scans(rows, SECOND), _ours(keywords)) for path in (two_scans, other)]


def test_files_appended_together_count_their_rows_only_once_all_rows_are_durable(two_banks, monkeypatch):
    order: list[tuple[str, int]] = []
    names = {}
    real_fdatasync = os.fdatasync

    def watching_write(fd: int, data, offset: int) -> None:
        names.setdefault(fd, len(names))
        order.append(("write", names[fd], offset))
        writer._pwrite_all(fd, data, offset)

    def watching_flush(fd: int) -> None:
        order.append(("flush", names.get(fd)))
        real_fdatasync(fd)

    monkeypatch.setattr(writer, "write_at", watching_write)
    monkeypatch.setattr(os, "fdatasync", watching_flush)
    writer.apply_appends(two_banks)
    counts = [
        i for i, event in enumerate(order) if event[0] == "write" and event[2] == two_banks[event[1]].naxis2_offset
    ]
    rows_written = [i for i, event in enumerate(order) if event[0] == "write" and i not in counts]
    flushes = [i for i, event in enumerate(order) if event[0] == "flush"]
    assert len(counts) == 2 and len(flushes) == 4  # rows of both, flush both, both counts, flush both
    for file in (0, 1):  # each file: its rows, then its flush, then its count, then its flush
        flushed = [i for i in flushes if order[i][1] == file]
        assert max(i for i in rows_written if order[i][1] == file) < flushed[0] < counts[file] < flushed[1]
    assert [writer.read_state(plan.path).nrows for plan in two_banks] == [plan.new_nrows for plan in two_banks]


@pytest.mark.parametrize("where", ["rows of the second", "flush of the second"])
def test_a_failure_in_one_of_files_appended_together_leaves_both_as_they_were(two_banks, monkeypatch, where):
    before = [plan.path.read_bytes() for plan in two_banks]
    second = os.open(two_banks[1].path, os.O_RDONLY)  # to know the second file's flushes by its inode
    inode = os.fstat(second).st_ino
    os.close(second)
    if where == "rows of the second":
        room = two_banks[0].rows.nbytes + two_banks[0].pad_bytes + 100  # the first file's rows, then the disk is full
        monkeypatch.setattr(writer, "write_at", _full_disk_after(room))
    else:
        real_fdatasync, failed = os.fdatasync, []

        def failing_flush(fd: int) -> None:
            if os.fstat(fd).st_ino == inode and not failed:  # once: the rollback's own flushes succeed
                failed.append(fd)
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_fdatasync(fd)

        monkeypatch.setattr(os, "fdatasync", failing_flush)
    with pytest.raises(OutputError) as err:
        writer.apply_appends(two_banks)
    assert _one_line(err).endswith(f"the file was left as it was ({two_banks[1].path})")
    monkeypatch.undo()
    assert [plan.path.read_bytes() for plan in two_banks] == before


def test_a_new_file_that_cannot_be_written_leaves_nothing(real, tmp_path):
    """A new file goes through write_atomic: a failure leaves neither the file nor a temp behind."""
    _, rows, keywords = real
    with pytest.raises(OutputError) as err:
        writer.create_file(tmp_path / "no-such-folder" / "new.fits", _scans(rows, FIRST), _ours(keywords))
    assert "cannot write" in _one_line(err)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad files, bad rows


def test_a_file_cut_mid_row_is_refused_and_left_alone(real, two_scans):
    _, rows, keywords = real
    state = writer.read_state(two_scans)
    with open(two_scans, "r+b") as handle:
        handle.truncate(state.data_start + 7 * state.row_bytes + 100)
    before = two_scans.read_bytes()
    with pytest.raises(IntegrityError) as err:
        writer.append_rows(two_scans, _scans(rows, SECOND), _ours(keywords))
    assert "truncated" in _one_line(err) and "inside row 7" in str(err.value)
    assert two_scans.read_bytes() == before


def test_a_file_cut_inside_its_header_is_refused(two_scans):
    with open(two_scans, "r+b") as handle:
        handle.truncate(BLOCK + 1000)
    with pytest.raises(IntegrityError) as err:
        writer.read_state(two_scans)
    assert "truncated inside a header" in _one_line(err)


def test_bytes_past_the_last_row_block_mean_an_interrupted_append(real, two_scans):
    with open(two_scans, "ab") as handle:
        handle.write(b"\0" * BLOCK)
    with pytest.raises(IntegrityError) as err:
        writer.read_state(two_scans)
    assert f"2880 bytes past its {_count(real[1], FIRST)} rows" in _one_line(err)


def test_a_fits_file_that_is_not_sdfits_is_refused_and_left_alone(real, tmp_path):
    _, rows, keywords = real
    path = tmp_path / "image.fits"
    fits.BinTableHDU.from_columns([fits.Column(name="SCAN", format="J", array=np.arange(3))]).writeto(path)
    before = path.read_bytes()
    with pytest.raises(InputError) as err:
        writer.append_rows(path, _scans(rows, FIRST), _ours(keywords))
    assert "not an SDFITS file" in _one_line(err)
    assert path.read_bytes() == before


def test_a_gbtidl_keep_file_is_not_the_filler_layout(samples):
    with pytest.raises(InputError) as err:
        writer.read_state(samples / "testdata/TSCAL_220105_W/TSCAL_220105_W.cal.vegas.fits")
    assert "not the GBT filler's SDFITS layout" in _one_line(err)


def test_a_file_that_is_not_fits_is_refused(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("hello\n")
    with pytest.raises(InputError) as err:
        writer.read_state(path)
    assert _one_line(err).startswith("not a FITS file (")
    with pytest.raises(InputError, match="not found"):
        writer.read_state(tmp_path / "missing.fits")


def test_rows_of_another_width_are_refused_and_the_file_left_alone(real, two_scans):
    _, rows, keywords = real
    before = two_scans.read_bytes()
    with pytest.raises(InputError) as err:
        writer.append_rows(two_scans, _narrow(_scans(rows, SECOND), 512), _ours(keywords))
    assert "rows have 512 channels but the file holds 1024-channel spectra" in _one_line(err)
    assert two_scans.read_bytes() == before


def test_rows_of_another_project_are_refused(real, two_scans):
    _, rows, keywords = real
    other = {**_ours(keywords), "PROJID": "AGBT26A_999_01"}
    with pytest.raises(InputError) as err:
        writer.plan_append(two_scans, _scans(rows, SECOND), other)
    assert "PROJID='AGBT26A_999_01' but the file holds 'AGBT22A_325_15'" in _one_line(err)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("SCAN"), "missing SCAN"),
        (lambda r: r.update(INT=r["SCAN"]), "unknown INT"),
        (lambda r: r.update(TDIM7=np.full(len(r["SCAN"]), "(1,1,1,1)")), "TDIM7 must be '(1024,1,1,1)'"),
        (lambda r: r.update(DATA=r["DATA"].astype(np.float64)), "DATA must be a (rows, channels) float32"),
        (lambda r: r.update(SCAN=r["SCAN"][:3]), "SCAN has"),
        (lambda r: r.update(OBJECT=np.full(len(r["SCAN"]), "Ω Cen")), "OBJECT holds a non-ASCII string"),
        (lambda r: r.update(OBSID=np.full(len(r["SCAN"]), b"\xe9t\xe9")), "OBSID holds a non-ASCII string"),
        (lambda r: r.update(FEED=r["FEED"].astype(np.int32) + 70000), "FEED has a value out of range"),
        (lambda r: r.update(SCAN=r["SCAN"].astype(float)), "SCAN must hold integers"),
    ],
    ids=["missing", "extra", "tdim7", "float64", "short", "non-ascii", "non-ascii-bytes", "overflow", "float-int"],
)
def test_bad_rows_are_one_line_input_errors(real, two_scans, change, message):
    _, rows, keywords = real
    bad = _scans(rows, SECOND)
    change(bad)
    before = two_scans.read_bytes()
    with pytest.raises(InputError) as err:
        writer.append_rows(two_scans, bad, _ours(keywords))
    assert message in _one_line(err)
    assert two_scans.read_bytes() == before


def test_long_strings_are_cut_to_the_column_width(real, tmp_path):
    _, rows, keywords = real
    some = _scans(rows, FIRST)
    some["OBJECT"] = np.full(len(some["SCAN"]), "X" * 40)
    path = tmp_path / "long.fits"
    writer.create_file(path, some, _ours(keywords))
    with fits.open(path) as hdus:
        assert set(hdus[1].data["OBJECT"]) == {"X" * 32}


@pytest.mark.parametrize("values", [["W3OH", "", " lead", "a\x00b", "X" * 20], [b"W3OH", b"", b" lead", b"a\x00b", b"X" * 20]],
                         ids=["str", "bytes"])  # fmt: skip
def test_text_cells_are_space_padded_and_cut_to_their_width(values):
    cells = writer._ascii(np.array(values), 8, "OBJECT")
    assert cells.dtype == np.dtype("S8")
    assert cells.tobytes() == b"W3OH    " + b" " * 8 + b" lead   " + b"a\x00b     " + b"X" * 8


def test_create_refuses_an_existing_file(real, two_scans):
    _, rows, keywords = real
    before = two_scans.read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        writer.create_file(two_scans, _scans(rows, SECOND), _ours(keywords))
    assert two_scans.read_bytes() == before


def test_a_plan_made_stale_by_another_writer_writes_nothing(real, two_scans):
    _, rows, keywords = real
    plan = writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords))
    writer.apply_append(writer.plan_append(two_scans, _scans(rows, SECOND), _ours(keywords)))
    after_other = two_scans.read_bytes()
    with pytest.raises(IntegrityError) as err:
        writer.apply_append(plan)
    assert "changed since the append was planned" in _one_line(err)
    assert two_scans.read_bytes() == after_other


def test_rollback_refuses_a_file_shorter_than_before(two_scans):
    size = two_scans.stat().st_size
    with open(two_scans, "r+b") as handle:
        handle.truncate(size - BLOCK)
    with pytest.raises(IntegrityError, match="shorter"):
        writer.rollback(two_scans, size, [])
    assert two_scans.stat().st_size == size - BLOCK


def test_state_paths_are_paths(two_scans):
    assert isinstance(writer.read_state(str(two_scans)).path, Path)


def test_every_real_bank_file_reads_as_sdfits(samples):
    banks = sorted((samples / "testdata/AGBT22A_325_23/AGBT22A_325_23.raw.vegas").glob("*.fits"))
    assert len(banks) == 8
    for path in banks:
        state = writer.read_state(path)
        with fits.open(path) as hdus:
            table = hdus[1]
            assert (state.nrows, state.row_bytes) == (table.header["NAXIS2"], table.header["NAXIS1"])
            expected = {(int(s), str(t)) for s, t in zip(table.data["SCAN"], table.data["TIMESTAMP"], strict=True)}
        assert writer.scans_in_file(path) == expected
        assert state.keywords["PROJID"] == "AGBT22A_325_23"


def test_a_file_the_real_filler_wrote_can_be_continued(real, tmp_path):
    path, rows, keywords = real
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    again = {name: values[:8] for name, values in rows.items()}
    assert writer.append_rows(copy, again, _ours(keywords)) == 32
    original = path.read_bytes()
    grown = copy.read_bytes()
    state = writer.read_state(path)
    assert grown[: state.naxis2_offset] == original[: state.naxis2_offset]
    assert grown[state.naxis2_offset + CARD : state.data_end] == original[state.naxis2_offset + CARD : state.data_end]
    with fits.open(copy) as hdus:
        hdus.verify("exception")
        assert len(hdus[1].data) == 40
        assert np.array_equal(hdus[1].data["DATA"][32:], rows["DATA"][:8])
