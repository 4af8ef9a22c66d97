"""GBTIDL index files: against the real filler's and GBTIDL's files, an independent reader, and dysh."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from obsflow.errors import IntegrityError, OutputError
from obsflow.sdfits import index as ix
from obsflow.sdfits import index_fits as ixf
from obsflow.sdfits.flag import ensure_flag_file

AGBT15 = "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A"
GBTIDL_FILES = (
    "testdata/TSCAL_220105_W/TSCAL_220105_W.raw.vegas/TSCAL_220105_W.raw.vegas",
    "testdata/TSCAL_220105_W/TSCAL_220105_W.cal.vegas",
    "testdata/AGBT05B_047_01/gbtidl/AGBT05B_047_01.getps.acs",
)
OLD = datetime(2024, 8, 20, 13, 38, 32, tzinfo=UTC)


def _rows_part(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[lines.index("[rows]") :]


def _copy_fits(samples: Path, stem: str, tmp_path: Path) -> Path:
    target = tmp_path / Path(stem).name
    target = target.with_name(target.name + ".fits")
    shutil.copyfile(samples / f"{stem}.fits", target)
    return target


def _columns(fits_path: Path) -> tuple[dict[str, np.ndarray], str]:
    with fits.open(fits_path) as hdul:
        data = hdul[1].data
        return {name: np.array(data[name]) for name in data.columns.names}, hdul[1].header["PROJID"]


# -------------------------------------------------------------------------------- real files


def test_rebuild_reproduces_the_real_filler_index(samples: Path, tmp_path: Path) -> None:
    fits_copy = _copy_fits(samples, AGBT15, tmp_path)
    text = ixf.build_index_for_fits(fits_copy)
    real = (samples / f"{AGBT15}.index").read_text()

    assert _rows_part(text) == _rows_part(real)  # the column row and all 32 rows, character for character
    ours_header = text.split("\n")[1:9]
    real_header = real.split("\n")[1:9]
    assert [len(line) for line in ours_header] == [256] * 8 == [len(line) for line in real_header]
    assert [line.split("=")[0].strip() for line in ours_header] == [line.split("=")[0].strip() for line in real_header]
    assert ours_header[2].rstrip() == "version = 1.7" and ours_header[6].rstrip() == "sprotect = 1"
    assert ours_header[7].rstrip() == "created_by = obsflow"
    assert re.fullmatch(r"created = \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} *", ours_header[0])


def test_header_dates_keep_the_space_padded_day_of_days_1_to_9() -> None:
    early = ix.IndexHeader.new(now=datetime(2026, 12, 1, 20, 42, 22, tzinfo=UTC))
    created, modified = early.lines()[:2]
    assert created == "created = Tue Dec  1 20:42:22 2026".ljust(256)
    assert modified == "last_modified = Tue Dec  1 20:42:22 2026".ljust(256)
    late = ix.IndexHeader.new(now=datetime(2026, 12, 10, 1, 2, 3, tzinfo=UTC))
    assert late.lines()[0] == "created = Thu Dec 10 01:02:03 2026".ljust(256)
    assert ix.IndexHeader.new(observer="A\nB").lines()[3].startswith("observer = A B ")


@pytest.mark.parametrize("stem", GBTIDL_FILES)
def test_rebuild_matches_gbtidl_keep_indexes_except_dateobs_and_centfreq(samples: Path, stem: str) -> None:
    """GBTIDL keep files index spectra from memory: DATEOBS is the date only and CENTFREQ is one
    channel off (its data container's centre convention).  Every other column, including INT
    and NSAVE taken from the keep file's own columns, is identical."""
    ours = _rows_part(ixf.build_index_for_fits(samples / f"{stem}.fits"))
    real = _rows_part((samples / f"{stem}.index").read_text())
    assert ours[:2] == real[:2] and len(ours) == len(real) and len(ours) > 3
    for mine, theirs in zip(ours[2:-1], real[2:-1], strict=True):
        a, b = ix.parse_index_row(mine), ix.parse_index_row(theirs)
        assert {name for name in a if a[name] != b[name]} <= {"DATEOBS", "CENTFREQ"}
        assert a["DATEOBS"][:10] == b["DATEOBS"]
        one_channel = abs(float(a["FREQINT"]))
        assert abs(float(a["CENTFREQ"]) - float(b["CENTFREQ"])) == pytest.approx(one_channel, abs=float(b["CENTFREQ"]) * 1e-9)  # e16.9: 10 digits


def test_read_index_parses_filler_and_gbtidl_files(samples: Path) -> None:
    a6 = ix.read_index(samples / "testdata/AGBT20B_014_03.raw.vegas/AGBT20B_014_03.raw.vegas.A6.index")
    assert a6.header["version"] == "1.7" and a6.header["created_by"] == "gbtidl"
    # 58 409 bytes = [header] + 8 x 257 + [rows] + (column row + rows) x 633
    assert a6.n_rows == (58409 - 9 - 8 * 257 - 7) // 633 - 1 == 88
    assert [entry.index for entry in a6.rows] == list(range(a6.n_rows))
    real = ix.read_index(samples / f"{AGBT15}.index")
    assert real.header["created_by"] == "index_writer" and real.n_rows == 32
    assert [e.scan for e in real.rows[:5]] == [281, 281, 281, 281, 282]
    assert [e.intnum for e in real.rows[8:20]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


# -------------------------------------------------------------------------------- independent reader

# The rows format written from GBT_FORMATS.md §1.3 in Fortran notation, independently of
# obsflow's column table.  SHORT is used while INDEX and ROW are below 1e6, LONG when both are
# 1e6 or more (the blank after i6 is then taken by the 7th digit).
_TAIL = ("a32,1x,a9,1x,a32,1x,i5,1x,i5,1x,i10,1x,a3,1x,i5,1x,i5,1x,i5,1x,i5,1x,i10,1x,i6,1x,a3,1x,a3,1x,a12,"
         "6(1x,e16.9),1x,i3,6(1x,e16.9),2(1x,a22),3(1x,e16.9),1x,i10,3(1x,a16)")  # fmt: skip
SHORT = "i6,1x,a16,1x,a64,1x,i3,1x,i6,1x," + _TAIL
LONG = "i7,a16,1x,a64,1x,i3,1x,i7," + _TAIL
NAMES = ("INDEX PROJECT FILE EXT ROW SOURCE PROCEDURE OBSID E2ESCAN PROCSEQN SCAN POL PLNUM IFNUM FEED FDNUM INT "
         "NUMCHN SIG CAL SAMPLER AZIMUTH ELEVATION LONGITUDE LATITUDE TRGTLONG TRGTLAT SUBREF LST CENTFREQ RESTFREQ "
         "VELOCITY FREQINT FREQRES DATEOBS TIMESTAMP BANDWIDTH EXPOSURE TSYS NSAVE PROCSCAN PROCTYPE WCALPOS").split()


def _expand(fmt: str) -> list[str]:
    items: list[str] = []
    for match in re.finditer(r"(\d+)\(([^)]*)\)|([^,()]+)", fmt):
        if match.group(1):
            items.extend(_expand(match.group(2)) * int(match.group(1)))
        else:
            items.append(match.group(3).strip())
    return items


def fortran_read(line: str, fmt: str) -> list[object]:
    """Read one record with a Fortran edit list (iW, aW, eW.D, nX); the record must be used up."""
    values: list[object] = []
    pos = 0
    for item in _expand(fmt):
        kind, width = item[0] if not item.endswith("x") else "x", int(re.match(r"[a-z]?(\d+)", item).group(1))
        field = line[pos : pos + width]
        assert len(field) == width, f"record too short at {item}"
        pos += width
        if kind == "x":
            assert field == " " * width, f"expected blank at {pos - width}: {field!r}"
        elif kind == "i":
            assert re.fullmatch(r" *-?\d+", field), f"bad integer {field!r}"
            values.append(int(field))
        elif kind == "e":
            assert re.fullmatch(r" *-?\d\.\d{9}e[+-]\d\d", field), f"bad e16.9 {field!r}"
            values.append(float(field))
        else:
            assert field == field.rjust(width), "strings are right-aligned"
            values.append(field.strip())
    assert pos == len(line), f"record has {len(line) - pos} extra characters"
    return values


def test_index_reads_back_with_an_independent_fortran_format_reader(samples: Path, tmp_path: Path) -> None:
    fits_copy = _copy_fits(samples, AGBT15, tmp_path)
    text = ixf.build_index_for_fits(fits_copy)
    lines = text.split("\n")
    assert lines[0] == "[header]" and lines[9] == "[rows]" and lines[-1] == ""
    assert all(len(line) == 256 for line in lines[1:9])
    assert lines[10].split() == ["#INDEX#"] + NAMES[1:4] + ["ROW"] + [
        {"E2ESCAN": "E2ESC", "PROCSEQN": "PROCS", "SUBREF": "SUB"}.get(n, n) for n in NAMES[5:]
    ]
    columns, _ = _columns(fits_copy)
    for number, line in enumerate(lines[11:-1]):
        record = dict(zip(NAMES, fortran_read(line, SHORT), strict=True))
        assert record["INDEX"] == record["ROW"] == number
        assert record["FILE"] == fits_copy.name and record["EXT"] == 1 and record["PROJECT"] == "AGBT22A_325_15"
        assert record["SCAN"] == columns["SCAN"][number] and record["FDNUM"] == columns["FDNUM"][number]
        assert record["SAMPLER"] == columns["SAMPLER"][number].strip() and record["NUMCHN"] == 1024
        assert record["TIMESTAMP"] == columns["TIMESTAMP"][number].strip() and record["POL"] == "XX"
        assert record["LST"] == pytest.approx(columns["LST"][number], rel=1e-9)
        assert record["NSAVE"] == -1 and record["E2ESCAN"] == 0


def test_index_and_row_switch_to_seven_digits_at_one_million(samples: Path) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    part = {name: values[:4] for name, values in columns.items()}
    near = ix.build_index_rows(part, projid=projid, file_name="f.fits", first_row=999_998, first_index=999_998)
    short = [fortran_read(line, SHORT) for line in near[:2]]
    long = [fortran_read(line, LONG) for line in near[2:]]
    assert [r[0] for r in short + long] == [999_998, 999_999, 1_000_000, 1_000_001]
    assert [r[4] for r in short + long] == [999_998, 999_999, 1_000_000, 1_000_001]
    assert {len(line) for line in near} == {ix.ROW_WIDTH} == {632}


def test_each_row_shows_its_own_values_however_the_column_repeats_them(samples: Path) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    part = {name: values[:4] for name, values in columns.items()}
    part["VELOCITY"] = [-0.0, 0.0, -0.0, 0.0]  # equal as numbers, apart in print
    part["OBJECT"] = ["W3OH", "W3OH", "W3 OH", "W3\x00OH"]
    cells = [ix.parse_index_row(line) for line in ix.build_index_rows(part, projid=projid, file_name="f.fits")]
    assert [c["VELOCITY"] for c in cells] == ["-0.000000000e+00", "0.000000000e+00"] * 2
    assert [c["SOURCE"] for c in cells] == ["W3OH", "W3OH", "W3 OH", "W3?OH"]


def test_values_that_repeat_out_of_order_stay_with_their_rows(samples: Path) -> None:
    """Each distinct value is formatted once and gathered back: rows must get their own, in order."""
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    part = {name: values[:6] for name, values in columns.items()}
    part["TSYS"] = np.array([20.5, np.nan, 18.25, 20.5, np.nan, 1e300], dtype=">f8")  # big-endian, as FITS
    part["SCAN"] = np.array([7, 5, 7, 6, 5, 7], dtype=">i4")
    part["OBJECT"] = np.array([b"B", b"A", b"B ", b"C", b"A", b"B"])
    cells = [ix.parse_index_row(line) for line in ix.build_index_rows(part, projid=projid, file_name="f.fits")]
    assert [c["TSYS"] for c in cells] == ["2.050000000e+01", "nan", "1.825000000e+01", "2.050000000e+01", "nan",
                                          "1.000000000e+300"]  # fmt: skip
    assert [c["SCAN"] for c in cells] == ["7", "5", "7", "6", "5", "7"]
    assert [c["SOURCE"] for c in cells] == ["B", "A", "B", "C", "A", "B"]


def test_a_file_name_that_is_not_ascii_keeps_every_column_in_place(samples: Path) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    part = {name: values[:2] for name, values in columns.items()}
    rows = ix.build_index_rows(part, projid=projid, file_name="sp\u00e9ctra.fits", first_row=0, first_index=0)
    assert {len(row.encode()) for row in rows} == {ix.ROW_WIDTH}
    assert [ix.parse_index_row(row)["FILE"] for row in rows] == ["sp?ctra.fits"] * 2
    assert [ix.parse_index_row(row)["SCAN"] for row in rows] == [str(int(v)) for v in part["SCAN"]]


@pytest.mark.parametrize("first_index", [0, 17, 999_998, 9_999_996])
def test_renumbered_rows_equal_rows_built_with_that_index(samples: Path, first_index: int) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    part = {name: values[:4] for name, values in columns.items()}
    built = ix.build_index_rows(part, projid=projid, file_name="f.fits", first_row=3, first_index=5)
    expected = ix.build_index_rows(part, projid=projid, file_name="f.fits", first_row=3, first_index=first_index)
    assert ix.renumbered(built, first_index) == expected
    assert [ix.parse_index_row(line)["ROW"] for line in expected] == ["3", "4", "5", "6"]
    assert [int(line[:7]) for line in expected] == list(range(first_index, first_index + 4))
    with pytest.raises(OutputError):
        ix.renumbered(built, 9_999_997)


# -------------------------------------------------------------------------------- appending


def test_rows_of_an_appended_scan_equal_a_full_rebuild(samples: Path) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    full = ix.build_index_rows(columns, projid=projid, file_name="x.fits")
    first = ix.build_index_rows({k: v[:8] for k, v in columns.items()}, projid=projid, file_name="x.fits")
    later = ix.build_index_rows({k: v[8:] for k, v in columns.items()}, projid=projid, file_name="x.fits",
                                first_row=8, first_index=8)  # fmt: skip
    assert first + later == full
    assert [ix.parse_index_row(line)["INT"] for line in later[:12]] == [str(i // 2) for i in range(12)]


def test_append_keeps_old_bytes_and_rewrites_only_last_modified(samples: Path, tmp_path: Path) -> None:
    columns, projid = _columns(samples / f"{AGBT15}.fits")
    name = "AGBT22A_325_15.raw.vegas.A.fits"
    path = tmp_path / "AGBT22A_325_15.raw.vegas.A.index"
    header = ix.IndexHeader.new(now=OLD)
    ix.write_index(path, header, ix.build_index_rows({k: v[:20] for k, v in columns.items()}, projid=projid,
                                                     file_name=name))  # fmt: skip
    before = path.read_bytes()
    later = ix.build_index_rows({k: v[20:] for k, v in columns.items()}, projid=projid, file_name=name,
                                first_row=20, first_index=20)  # fmt: skip
    ix.append_index_rows(path, later, now=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    after = path.read_bytes()

    start = before.index(b"last_modified")
    assert after[:start] == before[:start]
    assert after[start : start + 256] == b"last_modified = Thu Jan  2 03:04:05 2025".ljust(256)
    assert after[start + 256 : len(before)] == before[start + 256 :]
    assert _rows_part(after.decode()) == _rows_part((samples / f"{AGBT15}.index").read_text())
    assert ix.read_index(path).n_rows == 32 == ix.next_index(path)
    with open(path, "ab") as handle:  # a torn append is detected, not counted
        handle.write(later[0][:100].encode())
    with pytest.raises(IntegrityError, match="not whole"):
        ix.next_index(path)
    assert ix.next_index(path, whole_rows_only=True) == 32  # a reader without the lock: an append under way
    with pytest.raises(IntegrityError, match="complete line"):
        ix.append_index_rows(path, later[:1])


# -------------------------------------------------------------------------------- agreement with FITS


def test_index_mismatch_names_what_disagrees(samples: Path, tmp_path: Path) -> None:
    fits_copy = _copy_fits(samples, AGBT15, tmp_path)
    index_path = ixf.index_path_for(fits_copy)
    columns, projid = _columns(fits_copy)
    ix.write_index(index_path, ix.IndexHeader.new(), ix.build_index_rows(columns, projid=projid,
                                                                          file_name=fits_copy.name))  # fmt: skip
    assert ixf.index_matches_fits(index_path, fits_copy)
    ixf.require_index_matches_fits(index_path, fits_copy)

    ix.write_index(index_path, ix.IndexHeader.new(),
                   ix.build_index_rows({k: v[:30] for k, v in columns.items()}, projid=projid,
                                       file_name=fits_copy.name))  # fmt: skip
    assert not ixf.index_matches_fits(index_path, fits_copy)
    with pytest.raises(IntegrityError) as caught:
        ixf.require_index_matches_fits(index_path, fits_copy)
    message = caught.value.one_line()
    assert "\n" not in message and "30 rows" in message and "has 32" in message and str(index_path) in message

    ix.write_index(index_path, ix.IndexHeader.new(), ix.build_index_rows(columns, projid=projid, file_name="other.fits"))
    assert "other.fits" in (ixf.index_mismatch(index_path, fits_copy) or "")


def test_multi_extension_file_gets_one_row_per_row_of_each_bintable(samples: Path, tmp_path: Path) -> None:
    with fits.open(samples / f"{AGBT15}.fits") as hdul:
        table = hdul[1]
        first = fits.BinTableHDU(data=table.data[:8], header=table.header)
        second = fits.BinTableHDU(data=table.data[8:], header=table.header)
        two = tmp_path / "two.fits"
        fits.HDUList([fits.PrimaryHDU(header=hdul[0].header), first, second]).writeto(two)
    text = ixf.build_index_for_fits(two)
    ix.write_index_text(ixf.index_path_for(two), text)
    entries = ix.read_index(ixf.index_path_for(two)).rows
    assert [(e.index, e.ext, e.row) for e in entries] == [(i, 1, i) for i in range(8)] + [
        (8 + i, 2, i) for i in range(24)
    ]
    assert ixf.index_matches_fits(ixf.index_path_for(two), two)
    real = _rows_part((samples / f"{AGBT15}.index").read_text())[2:-1]
    for ours, theirs in zip(_rows_part(text)[2:-1], real, strict=True):
        a, b = ix.parse_index_row(ours), ix.parse_index_row(theirs)
        assert {k for k in a if a[k] != b[k]} <= {"FILE", "EXT", "ROW"}


def test_combined_index_over_bank_files(samples: Path, tmp_path: Path) -> None:
    folder = tmp_path / "AGBT22A_325_23.raw.vegas"
    folder.mkdir()
    source = samples / "testdata/AGBT22A_325_23/AGBT22A_325_23.raw.vegas"
    banks = []
    for letter in "ABC":
        banks.append(folder / f"AGBT22A_325_23.raw.vegas.{letter}.fits")
        shutil.copyfile(source / banks[-1].name, banks[-1])
    combined = ixf.combined_index_path(folder)
    assert combined.name == "AGBT22A_325_23.raw.vegas.index"
    ix.write_index_text(combined, ixf.build_combined_index(banks))

    entries = ix.read_index(combined).rows
    assert [e.index for e in entries] == list(range(len(entries)))
    assert ixf.index_matches_fits(combined, *banks)
    assert not ixf.index_matches_fits(combined, *banks[:2])
    # scan by scan, then bank by bank, as the online filler appends them
    timestamps = [e.timestamp for e in entries]
    assert timestamps == sorted(timestamps)
    first_scan = [e.file[-6] for e in entries if e.timestamp == timestamps[0]]
    assert first_scan == sorted(first_scan) and set(first_scan) == set("ABC")
    # each bank's rows are its own index rows, only INDEX differs
    for bank in banks:
        own = _rows_part(ixf.build_index_for_fits(bank))[2:-1]
        mine = [line for line in _rows_part(combined.read_text())[2:-1] if ix.parse_index_row(line)["FILE"] == bank.name]
        rows = sorted(mine, key=lambda line: int(ix.parse_index_row(line)["ROW"]))
        assert [line[7:] for line in rows] == [line[7:] for line in own]


# -------------------------------------------------------------------------------- dysh


def test_dysh_loads_our_index_and_honours_a_user_flag(samples: Path, tmp_path: Path, capsys) -> None:
    from dysh.fits.gbtfitsload import GBTFITSLoad

    data = tmp_path / "AGBT22A_325_15"
    data.mkdir()
    fits_copy = _copy_fits(samples, AGBT15, data)
    ix.write_index_text(ixf.index_path_for(fits_copy), ixf.build_index_for_fits(fits_copy))
    flag_file = ensure_flag_file(fits_copy, tmp_path / "flags" / "AGBT22A_325_15" / "AGBT22A_325_15.raw.vegas.A.flag")

    sdf = GBTFITSLoad(fits_copy)
    assert sdf._sdf[0]._index_source == "index_file"  # dysh really read our .index, not the FITS
    capsys.readouterr()
    summary = sdf.summary()
    shown = capsys.readouterr().out + ("" if summary is None else str(summary))
    scan_lines = [line.split()[0] for line in shown.splitlines() if line.strip()[:3].isdigit()]
    assert scan_lines == ["281", "282", "289", "290"]

    with open(flag_file, "a") as handle:
        handle.write("*|281|*|*|0|8|100|200|user_flag\n")
    flagged = GBTFITSLoad(fits_copy, skipflags=False)
    assert flagged._sdf[0]._index_source == "index_file"
    assert len(flagged.flags._table) == 1
    flagged.apply_flags(flag_outer=False)
    mask = np.asarray(flagged._sdf[0]._flagmask[0])
    assert list(np.where(mask.any(axis=1))[0]) == [0, 2]  # scan 281, fdnum 8
    assert list(np.where(mask[0])[0]) == list(range(100, 201))
