"""sdfitsStatus.txt: seven fields per line, one line per (backend, project), read by dysh's own parser."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from obsflow.errors import InputError
from obsflow.sdfits import status


def _entry(project: str, scan: int, index: int, updated: datetime, backend: str = "vegas") -> status.StatusEntry:
    return status.StatusEntry(backend, project, scan, "2023_04_24_09:06:04", updated, f"{project}.raw.{backend}", index)


def test_one_line_per_backend_and_project_kept_current(tmp_path: Path) -> None:
    then = datetime(2025, 3, 9, 13, 32, 44)
    status.update_status(tmp_path, _entry("AGBT22A_325_15", 281, 3, then))
    status.update_status(tmp_path, _entry("AGBT22A_325_15", 281, 3, then, backend="acs"))
    status.update_status(tmp_path, _entry("AGBT22A_325_15", 290, 31, then + timedelta(minutes=5)))

    lines = [line for line in (tmp_path / "sdfitsStatus.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        "acs,AGBT22A_325_15,281,2023_04_24_09:06:04,Sun Mar  9 13:32:44 2025,AGBT22A_325_15.raw.acs,3",
        "vegas,AGBT22A_325_15,290,2023_04_24_09:06:04,Sun Mar  9 13:37:44 2025,AGBT22A_325_15.raw.vegas,31",
    ]
    assert status.read_status(tmp_path) == [
        _entry("AGBT22A_325_15", 281, 3, then, backend="acs"),
        _entry("AGBT22A_325_15", 290, 31, then + timedelta(minutes=5)),
    ]


def test_dysh_reads_our_status_file(tmp_path: Path) -> None:
    from dysh.fits.gbtfitsload import _parse_sdfits_status_file

    now = datetime.now().replace(microsecond=0)
    status.update_status(tmp_path, _entry("AGBT26A_001_01", 7, 41, now))
    found = _parse_sdfits_status_file(str(tmp_path / "sdfitsStatus.txt"), backend="vegas")
    assert found is not None
    assert (found["project"], found["scan"], found["index"]) == ("AGBT26A_001_01", "7", "41")
    assert found["file"] == "AGBT26A_001_01.raw.vegas" and 0 <= found["age_minutes"] < 5


def test_bad_status_lines_and_fields_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "sdfitsStatus.txt").write_text("# comment\nvegas,P,1,T,Wed Mar 19 13:32:44 2025,f\n")
    with pytest.raises(InputError, match="6 fields, expected 7") as caught:
        status.read_status(tmp_path)
    assert caught.value.where.endswith("sdfitsStatus.txt:2")
    with pytest.raises(InputError, match="comma"):
        status.write_status(tmp_path, [_entry("A,B", 1, 0, datetime(2025, 1, 1))])
    with pytest.raises(InputError, match="unknown backend"):
        status.write_status(tmp_path, [_entry("P", 1, 0, datetime(2025, 1, 1), backend="gbt")])
    assert status.read_status(tmp_path / "missing") == []


def _update_many(root: str, project: str, times: int) -> None:
    for scan in range(times):
        status.update_status(Path(root), _entry(project, scan, scan, datetime(2026, 12, 1, 22, 0, 0)))


def test_two_fillers_updating_at_once_never_drop_each_others_line(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_update_many, args=(str(tmp_path), f"AGBT26A_00{i}_01", 150)) for i in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert {(e.project, e.scan) for e in status.read_status(tmp_path)} == {("AGBT26A_001_01", 149),
                                                                          ("AGBT26A_002_01", 149)}  # fmt: skip
