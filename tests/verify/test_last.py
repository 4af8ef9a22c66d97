"""The latest verification, kept for the status page."""

import json
from datetime import date

import pytest

from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.last import LastDamaged, load_last, save_last
from obsflow.verify.period import Period


def test_saved_report_reads_back_and_replaces_the_previous(tmp_path):
    state = tmp_path / "state"
    assert load_last(state) is None
    folder = FolderResult("suth:cape", "sha", "suth", "cape", "/a", "/b", missing=("2026/1101/x.fits",))
    first = Report(Period(date(2026, 10, 1), date(2026, 11, 23)), 0.0, 1.0, 60.0, False, (folder,))
    save_last(first, state)
    assert load_last(state)["folders"][0]["missing"] == ["2026/1101/x.fits"]
    second = Report(first.period, 2.0, 3.0, 60.0, False, (FolderResult("suth:cape", "sha", "suth", "cape", "/a", "/b"),))
    save_last(second, state)
    last = load_last(state)
    assert (last["status"], last["folders"][0]["missing"]) == ("ok", [])
    assert [p.name for p in state.iterdir()] == ["verify-last.json"]  # no temp file left behind


def test_a_file_of_another_shape_is_last_damaged_naming_it(tmp_path):
    folder = FolderResult("suth:cape", "sha", "suth", "cape", "/a", "/b")
    path = save_last(Report(Period(date(2026, 10, 1), date(2026, 11, 23)), 0.0, 1.0, 60.0, False, (folder,)), tmp_path)
    saved = json.loads(path.read_text())
    del saved["folders"][0]["matched"]
    for content, problem in ((json.dumps(saved), "folders[0]: no 'matched'"), ("{", "not JSON"),
                             (b"\xff", "not UTF-8 text")):  # fmt: skip
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(LastDamaged) as caught:
            load_last(tmp_path)
        assert caught.value.problem.startswith(problem) and caught.value.where == str(path)
