"""GBTIDL flag files: the real filler's spur rows, the empty file, its link, and appends that keep user rows."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from obsflow.sdfits import flag
from obsflow.sdfits.index_fits import read_sdfits_tables

AGBT15 = "testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A"


def _columns(path: Path) -> dict[str, np.ndarray]:
    with fits.open(path) as hdul:
        data = hdul[1].data
        return {name: np.array(data[name]) for name in data.columns.names if name != "DATA"}


def test_spur_rows_reproduce_the_real_filler_flag_file(samples: Path) -> None:
    real = (samples / f"{AGBT15}.flag").read_text()
    rows = flag.vegas_spur_rows(_columns(samples / f"{AGBT15}.fits"))
    assert rows == flag.flag_rows(samples / f"{AGBT15}.flag")
    # the whole file, byte for byte, given the filler's creation time and name
    created = datetime(2024, 8, 20, 9, 38, 32)
    assert flag.empty_flag_text(created, created_by="sdfits") + "".join(r + "\n" for r in rows) == real


def test_spur_rows_from_read_sdfits_tables_equal_those_from_full_columns(samples: Path) -> None:
    table = read_sdfits_tables(samples / f"{AGBT15}.fits")[0]
    assert flag.vegas_spur_rows(table.columns) == flag.vegas_spur_rows(_columns(samples / f"{AGBT15}.fits"))


def test_spur_channels_drop_the_centre_and_out_of_range() -> None:
    assert flag.spur_channels(32, 16, 513, 1024) == [c for c in range(0, 993, 32) if c != 512]
    assert flag.spur_channels(32, 16, 513, 512) == list(range(0, 512, 32))
    assert flag.spur_channels(0, 16, 513, 1024) == [] and flag.spur_channels(np.nan, 16, 513, 1024) == []


def test_empty_flag_file_has_no_padding_and_no_blank_line() -> None:
    text = flag.empty_flag_text(datetime(2024, 4, 5, 13, 52, 30))
    assert text.split("\n") == [
        "[header]", "created = Fri Apr  5 13:52:30 2024", "version = 1.0", "created_by = obsflow", "[flags]",
        flag.FLAG_COLUMN_ROW, "",
    ]  # fmt: skip


def test_flag_file_lives_in_flags_dir_linked_beside_the_fits_file(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdfits" / "AGBT22A_325_15"
    out.mkdir(parents=True)
    fits_path = out / "AGBT22A_325_15.raw.vegas.A.fits"
    shutil.copyfile(samples / f"{AGBT15}.fits", fits_path)
    target = flag.flag_target_path(fits_path, tmp_path / "sdfits", tmp_path / "flags")
    assert target == tmp_path / "flags" / "AGBT22A_325_15" / "AGBT22A_325_15.raw.vegas.A.flag"

    for same in (out / ".." / out.name / fits_path.name, Path(os.path.relpath(fits_path))):  # the same file
        assert flag.flag_target_path(same, tmp_path / "sdfits", tmp_path / "flags") == target

    columns = _columns(fits_path)
    first_scans = {k: v[:4] for k, v in columns.items()}
    used = flag.ensure_flag_file(fits_path, target, rows=flag.vegas_spur_rows(first_scans))
    link = fits_path.with_suffix(".flag")
    assert used == target and link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == target.resolve()
    assert stat.S_IMODE(target.stat().st_mode) == flag.FLAG_MODE == 0o664
    assert len(flag.flag_rows(link)) == 2

    # a user flags something and unflags a spur row (GBTIDL comments it out)
    text = target.read_text().replace("*|281|*|*|0|10|", "#*|281|*|*|0|10|")
    target.write_text(text + " *|281|42:51|*|*|*|2299|*|unspecified\n")
    before = target.read_text()

    flag.ensure_flag_file(fits_path, target, rows=flag.vegas_spur_rows(columns))
    after = target.read_text()
    assert after.startswith(before)  # nothing removed or rewritten
    added = after[len(before) :].splitlines()
    assert [row.split("|")[1] for row in added] == ["282", "282", "289", "289", "290", "290"]
    assert "\n\n" not in after
    # running again adds nothing (recovery may repeat a step)
    assert flag.append_flag_rows(target, flag.vegas_spur_rows(columns)) == []


def test_existing_regular_flag_file_is_kept(tmp_path: Path) -> None:
    fits_path = tmp_path / "X.fits"
    fits_path.write_bytes(b"")
    user_file = tmp_path / "X.flag"
    user_file.write_text(flag.empty_flag_text() + "*|1|*|*|*|*|5|9|mine")  # no final newline
    used = flag.ensure_flag_file(fits_path, tmp_path / "flags" / "X.flag", rows=["*|2|*|*|0|0|1|1|VEGAS_SPUR"])
    assert used == user_file and not user_file.is_symlink()
    assert flag.flag_rows(user_file) == ["*|1|*|*|*|*|5|9|mine", "*|2|*|*|0|0|1|1|VEGAS_SPUR"]
    assert not (tmp_path / "flags" / "X.flag").exists()
