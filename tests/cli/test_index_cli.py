"""``obsflow index``: rebuild and check indexes of real SDFITS files; bad input writes nothing."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from obsflow.cli import main
from obsflow.sdfits import index

AGBT15 = "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A"


@pytest.fixture
def fits_copy(samples: Path, tmp_path: Path) -> Path:
    target = tmp_path / "AGBT22A_325_15.raw.vegas.A.fits"
    shutil.copyfile(samples / f"{AGBT15}.fits", target)
    return target


def _rows(text: str) -> str:
    return text[text.index("[rows]") :]


def test_index_rebuilds_the_real_index(samples: Path, fits_copy: Path, capsys) -> None:
    assert main(["index", str(fits_copy)]) == 0
    written = fits_copy.with_suffix(".index")
    assert _rows(written.read_text()) == _rows((samples / f"{AGBT15}.index").read_text())
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert "32 rows" in capsys.readouterr().out


def test_check_exits_1_when_the_index_differs(fits_copy: Path, capsys) -> None:
    index = fits_copy.with_suffix(".index")
    assert main(["index", "--check", str(fits_copy)]) == 1  # missing
    assert main(["index", str(fits_copy)]) == 0
    capsys.readouterr()
    assert main(["index", "--check", "--json", str(fits_copy)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["status"] == "ok" and report["results"][0]["rows"] == 32

    lines = index.read_text().split("\n")
    index.chmod(0o644)
    index.write_text("\n".join(lines[:-2] + [""]))  # drop the last row
    before = index.read_bytes()
    assert main(["index", "--check", str(fits_copy)]) == 1
    assert "differs" in capsys.readouterr().out
    assert index.read_bytes() == before  # --check never writes


def _not_sdfits(tmp_path: Path) -> Path:
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("X", "J", array=np.arange(3))])]
                 ).writeto(path)  # fmt: skip
    return path


@pytest.mark.parametrize("kind", ["not_fits", "truncated", "not_sdfits", "missing"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(kind: str, fits_copy: Path, tmp_path: Path, capsys) -> None:
    if kind == "not_fits":
        bad = tmp_path / "notes.fits"
        bad.write_text("SIMPLE? no, just text\n")
    elif kind == "truncated":
        bad = tmp_path / "cut.fits"
        bad.write_bytes(fits_copy.read_bytes()[:100_000])
    elif kind == "not_sdfits":
        bad = _not_sdfits(tmp_path)
    else:
        bad = tmp_path / "nowhere.fits"
    capsys.readouterr()
    assert main(["index", str(fits_copy), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("obsflow: error: ") and str(bad) in err
    assert list(tmp_path.glob("*.index")) == []  # not even the good file's index


def test_help_has_an_example(capsys) -> None:
    assert main(["index", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "obsflow index" in out and "--check" in out


def _with_card(fits_path: Path, key: str, value: str) -> None:
    """Replace the card ``key`` of the table header in place (a damaged header, as written by hand)."""
    data = bytearray(fits_path.read_bytes())
    position = data.find(b"XTENSION")
    while data[position : position + 8].rstrip() != key.encode():
        position += 80
    data[position : position + 80] = f"{key:<8}= {value}".ljust(80).encode()
    fits_path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("key", "value"),
    [("TFORM7", "'1024Q'"), ("TFIELDS", "99"), ("TFORM21", "'XJ'"), ("TFORM21", "'2J'"), ("TFORM1", "'32X'")],
)
def test_a_malformed_table_header_is_one_line_exit_2(key: str, value: str, fits_copy: Path, capsys) -> None:
    _with_card(fits_copy, key, value)
    assert main(["index", str(fits_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("obsflow: error: ") and str(fits_copy) in err
    assert not fits_copy.with_suffix(".index").exists()


def test_a_non_ascii_byte_in_a_string_column_keeps_rows_fixed_width(samples: Path, fits_copy: Path) -> None:
    """GBTIDL reads fixed columns: one character per byte, a non-ASCII one written as '?'."""
    with fits.open(fits_copy) as hdul:
        data_start = hdul.fileinfo(1)["datLoc"]
    data = bytearray(fits_copy.read_bytes())
    assert data[data_start : data_start + 4] == b"VANE"  # OBJECT of row 0
    data[data_start + 1] = 0xE9  # 'é' in Latin-1
    fits_copy.write_bytes(bytes(data))
    assert main(["index", str(fits_copy)]) == 0
    written = fits_copy.with_suffix(".index")
    raw_bytes = written.read_bytes()
    assert raw_bytes.isascii()
    real = (samples / f"{AGBT15}.index").read_text().split("\n")
    mine = raw_bytes.decode("ascii").split("\n")
    assert len(mine) == len(real) and all(len(a) == len(b) for a, b in zip(mine[9:], real[9:], strict=True))
    assert index.parse_index_row(mine[11])["SOURCE"] == "V?NE"
    assert index.read_index(written).n_rows == 32
    assert mine[12:] == real[12:]  # the other rows as GBT wrote them


def test_index_of_the_current_folder_is_named_after_it(samples: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "AGBT22A_325_15.raw.vegas"
    folder.mkdir()
    shutil.copyfile(samples / f"{AGBT15}.fits", folder / "AGBT22A_325_15.raw.vegas.A.fits")
    monkeypatch.chdir(folder)
    assert main(["index", "."]) == 0
    assert sorted(p.name for p in folder.glob("*.index")) == ["AGBT22A_325_15.raw.vegas.index"]
    assert not (folder / ".index").exists()


PROJECT = "AGBT26A_520_01"


@pytest.fixture(scope="module")
def raw_project(tmp_path_factory) -> Path:
    from datetime import UTC, datetime

    from obsflow.simulate.telescope import TelescopeSpec, simulate_project

    root = tmp_path_factory.mktemp("raw")
    spec = TelescopeSpec(project=PROJECT, scans=4, procedure="OnOff", banks=2, pols=1, channels=1024,
                         integrations=2, seed=3, start=datetime(2026, 11, 23, 6, 0, tzinfo=UTC))  # fmt: skip
    simulate_project(spec, root)
    return root / PROJECT


def _filled_out_of_order(raw_project: Path, out: Path) -> Path:
    """An output tree where scan 3 was filled before scan 1; its product folder."""
    assert main(["fill", str(raw_project), str(out), "--scans", "3"]) == 0
    assert main(["fill", str(raw_project), str(out), "--scans", "1"]) == 0
    return out / PROJECT / f"{PROJECT}.raw.vegas"


def test_check_accepts_scans_filled_out_of_order(raw_project: Path, tmp_path: Path, capsys) -> None:
    folder = _filled_out_of_order(raw_project, tmp_path / "out")
    capsys.readouterr()
    assert main(["index", "--check", f"{folder}/"]) == 0
    assert capsys.readouterr().out.startswith("ok")


def test_check_still_finds_rows_in_a_wrong_order(raw_project: Path, tmp_path: Path, capsys) -> None:
    folder = _filled_out_of_order(raw_project, tmp_path / "out")
    combined = folder / f"{PROJECT}.raw.vegas.index"
    lines = combined.read_text().split("\n")
    first, second = index.renumbered([lines[11], lines[10]], 0)  # the first two rows of bank A swapped
    combined.write_text("\n".join([*lines[:10], first, second, *lines[12:]]))
    capsys.readouterr()
    assert main(["index", "--check", f"{folder}/"]) == 1
    assert "differs" in capsys.readouterr().out


def test_a_rebuild_keeps_the_fill_order(raw_project: Path, tmp_path: Path) -> None:
    folder = _filled_out_of_order(raw_project, tmp_path / "out")
    combined = folder / f"{PROJECT}.raw.vegas.index"
    before = _rows(combined.read_text())
    assert main(["index", f"{folder}/"]) == 0
    assert _rows(combined.read_text()) == before


def test_a_rebuild_in_an_output_tree_waits_for_the_project_lock(raw_project: Path, tmp_path: Path, capsys) -> None:
    from obsflow.lock import held

    out = tmp_path / "out"
    folder = _filled_out_of_order(raw_project, out)
    combined = folder / f"{PROJECT}.raw.vegas.index"
    before = combined.read_bytes()
    capsys.readouterr()
    with held(out / "locks", PROJECT, purpose="a fill"):
        assert main(["index", "--lock-timeout", "0.3", f"{folder}/"]) == 2
        assert main(["index", "--lock-timeout", "0.3", str(folder / f"{PROJECT}.raw.vegas.A.fits")]) == 2
    err = capsys.readouterr().err
    assert err.count("lock held by") == 2
    assert combined.read_bytes() == before
    assert main(["index", f"{folder}/"]) == 0  # free again


def test_a_tree_without_a_filler_lock_folder_is_indexed_without_creating_one(samples: Path, tmp_path: Path) -> None:
    # GBT's own /home/sdfits/<PROJ>/<PROJ>.raw.vegas/ (or a copy): observers may not write its parent.
    project = "AGBT22A_325_15"
    folder = tmp_path / "top" / project / f"{project}.raw.vegas"
    folder.mkdir(parents=True)
    shutil.copyfile(samples / f"{AGBT15}.fits", folder / f"{project}.raw.vegas.A.fits")
    assert main(["index", str(folder / f"{project}.raw.vegas.A.fits"), f"{folder}/"]) == 0
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == [project]  # no locks/ made beside it


def test_a_negative_lock_timeout_is_refused(fits_copy: Path, capsys) -> None:
    assert main(["index", str(fits_copy), "--lock-timeout", "-5"]) == 2
    assert capsys.readouterr().err == ("obsflow: error: Invalid value for '--lock-timeout': -5.0 is not in the range "
                                       "x>=0 (see 'obsflow index --help')\n")  # fmt: skip
    assert not fits_copy.with_suffix(".index").exists()
