"""The three renderings of one Report carry the same content in the observatory's shape."""

from __future__ import annotations

import json
import unicodedata
from datetime import date

from obsflow.transfer.listing import escape_controls
from obsflow.verify.compare import HashDiff, SizeDiff
from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.period import Period
from obsflow.verify.report import render_html, render_json, render_text
from tests.verify.reading import parse_html, parse_text, paths_in

PERIOD = Period(date(2026, 10, 1), date(2026, 11, 23))


def folder(hop: str, instrument: str, **findings) -> FolderResult:
    source, dest = hop.split(":")
    return FolderResult(
        hop=hop, instrument=instrument, source=instrument if source == "instruments" else source, dest=dest,
        source_location=f"{source}.test:/data/{instrument}", dest_location=f"{dest}.test:/archive/{instrument}",
        **{"hash_checked": True, **findings},
    )  # fmt: skip


def sample_report() -> Report:
    return Report(
        PERIOD, 1_795_000_000.0, 1_795_000_004.5, 120.0, True,
        (
            folder("instruments:suth", "sha", missing=("2026/1101/b.fits", "2026/1102/a.fits"), matched=7,
                   in_flight=("2026/1123/new.fits",)),
            folder("suth:cape", "sha", size_differs=(SizeDiff("2026/1101/c.fits", 5760, 2880),),
                   hash_differs=(HashDiff("2026/1101/d.fits", "aa" * 16, "bb" * 16),), matched=6),
            folder("suth:cape", "shd", error="cannot list cape.test:/archive/shd: cannot reach host: timeout"),
        ),
    )  # fmt: skip


def test_text_has_ruled_sections_none_and_not_checked():
    sections = parse_text(render_text(sample_report()))
    hop1 = sections["sha: sha -> suth  (hop instruments:suth)"]
    assert paths_in(hop1["FILES ON SHA THAT ARE NOT ON SUTH"]) == ["2026/1101/b.fits", "2026/1102/a.fits"]
    assert hop1["FILES WHOSE SIZE DIFFERS BETWEEN SHA AND SUTH"] == ["None"]
    assert hop1["FILES WHOSE CONTENT DIFFERS BETWEEN SHA AND SUTH"] == ["None"]
    assert paths_in(hop1["FILES STILL IN FLIGHT (NOT ALARMS: CHANGING OR COPIED WHILE CHECKED)"]) == [
        "2026/1123/new.fits"
    ]
    hop2 = sections["sha: suth -> cape  (hop suth:cape)"]
    assert hop2["FILES ON SUTH THAT ARE NOT ON CAPE"] == ["None"]
    sizes = hop2["FILES WHOSE SIZE DIFFERS BETWEEN SUTH AND CAPE"]
    assert sizes == ["2026/1101/c.fits  (suth 5760 bytes, cape 2880 bytes)"]
    assert paths_in(hop2["FILES WHOSE CONTENT DIFFERS BETWEEN SUTH AND CAPE"]) == ["2026/1101/d.fits"]
    down = sections["shd: suth -> cape  (hop suth:cape)"]
    for lines in down.values():  # an unreachable host is never "None"
        assert lines == ["NOT CHECKED: cannot list cape.test:/archive/shd: cannot reach host: timeout"]
    assert sections[""]["COULD NOT BE CHECKED"] == [
        "shd on hop suth:cape: cannot list cape.test:/archive/shd: cannot reach host: timeout"
    ]


def test_first_line_is_the_verdict_with_counts():
    first = render_text(sample_report()).splitlines()[0]
    assert first == "FAILED: 2 missing, 1 size differs, 1 checksum differs, 1 not checked, 2026-10-01 .. 2026-11-23"


def test_all_well_says_ok_and_none_everywhere():
    report = Report(PERIOD, 0.0, 1.0, 120.0, False, (folder("suth:cape", "sha", matched=12, hash_checked=False),))
    text = render_text(report)
    assert text.startswith("OK: 12 files present and equal (size), 1 hops x 1 instruments")
    sections = parse_text(text)
    hop = sections["sha: suth -> cape  (hop suth:cape)"]
    assert hop["FILES ON SUTH THAT ARE NOT ON CAPE"] == ["None"]
    assert "FILES WHOSE CONTENT DIFFERS BETWEEN SUTH AND CAPE" not in hop  # said once, at the top
    assert text.splitlines()[3] == "file contents not compared, only sizes (use --checksum)"
    assert sections[""]["COULD NOT BE CHECKED"] == ["None"]
    assert report.exit_code == 0


def test_without_checksum_the_report_says_so_once_not_per_folder():
    """Found by review: "NOT CHECKED: not compared (use --checksum)" came once per folder, flooding the report."""
    report = Report(
        PERIOD, 0.0, 1.0, 120.0, False,
        (
            folder("instruments:suth", "sha", matched=3, hash_checked=False),
            folder("instruments:suth", "shd", missing=("2026/1101/a.fits",), hash_checked=False),
            folder("suth:cape", "sha", matched=3, hash_checked=False),
            folder("suth:cape", "shd", missing=("2026/1101/a.fits",), hash_checked=False),
        ),
    )  # fmt: skip
    text = render_text(report)
    assert text.count("use --checksum") == 1 and "NOT CHECKED" not in text
    sections = parse_text(text)
    assert sections["sha: sha -> suth  (hop instruments:suth)"]["FILES ON SHA THAT ARE NOT ON SUTH"] == ["None"]
    assert sections["shd: shd -> suth  (hop instruments:suth)"]["FILES ON SHD THAT ARE NOT ON SUTH"] == [
        "2026/1101/a.fits"
    ]
    assert sections["shd: suth -> cape  (hop suth:cape)"]["FILES ON SUTH THAT ARE NOT ON CAPE"] == ["2026/1101/a.fits"]
    page = render_html(report)
    assert page.count("use --checksum") == 1 and "NOT CHECKED" not in page
    assert json.loads(render_json(report))["folders"][0]["checksum"] is False  # the JSON says it per folder, as before


def test_json_carries_the_same_findings():
    data = json.loads(render_json(sample_report()))
    assert (data["status"], data["exit_code"]) == ("not checked", 2)
    assert data["counts"] == {
        "missing": 2, "size_differs": 1, "hash_differs": 1, "not_checked": 1, "matched": 13, "in_flight": 1,
        "refused": 0, "locked": 0, "locked_gone": 0, "grown": 0,
    }  # fmt: skip
    first, second, third = data["folders"]
    assert first["missing"] == ["2026/1101/b.fits", "2026/1102/a.fits"]
    assert second["size_differs"] == [{"path": "2026/1101/c.fits", "size_a": 5760, "size_b": 2880, "kind_b": "f"}]
    assert second["hash_differs"][0]["path"] == "2026/1101/d.fits"
    assert third["status"] == "not checked" and "cannot reach host" in third["error"]


def test_html_is_self_contained_and_carries_the_same_findings():
    page = render_html(sample_report())
    sections, external = parse_html(page)
    assert external == []
    hop1 = sections["sha: sha -> suth  (hop instruments:suth)"]
    assert paths_in(hop1["FILES ON SHA THAT ARE NOT ON SUTH"]) == ["2026/1101/b.fits", "2026/1102/a.fits"]
    assert hop1["FILES WHOSE SIZE DIFFERS BETWEEN SHA AND SUTH"] == ["None"]
    hop2 = sections["sha: suth -> cape  (hop suth:cape)"]
    assert paths_in(hop2["FILES WHOSE CONTENT DIFFERS BETWEEN SUTH AND CAPE"]) == ["2026/1101/d.fits"]
    down = sections["shd: suth -> cape  (hop suth:cape)"]
    assert all(lines[0].startswith("NOT CHECKED: ") for lines in down.values())
    assert "FAILED: 2 missing" in page


def test_names_are_escaped_in_html():
    report = Report(PERIOD, 0.0, 1.0, 1.0, False, (folder("suth:cape", "sha", missing=("2026/1101/<b>&.fits",)),))
    page = render_html(report)
    assert "<b>&" not in page and "&lt;b&gt;&amp;.fits" in page
    sections, _ = parse_html(page)
    missing = sections["sha: suth -> cape  (hop suth:cape)"]["FILES ON SUTH THAT ARE NOT ON CAPE"]
    assert missing == ["2026/1101/<b>&.fits"]


def test_exactly_the_control_characters_and_line_and_bidi_marks_are_escaped():
    # the separators and bidi marks: found by the mail review (U+2028 may break a mail line; an
    # override shows a name reordered)
    marks = [chr(c) for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))]
    controls = [chr(i) for i in range(0x110000) if unicodedata.category(chr(i)) == "Cc"] + marks
    assert [escape_controls(c) for c in marks[:3]] == ["\\u2028", "\\u2029", "\\u202a"]
    assert escape_controls("SHA_\u202egol.fits") == "SHA_\\u202egol.fits"
    assert [escape_controls(c) for c in controls[:3]] == ["\\x00", "\\x01", "\\x02"]
    assert (escape_controls("\n"), escape_controls("\t"), escape_controls("\x1b"), escape_controls("\x9b")) == ("\\n", "\\t", "\\x1b", "\\x9b")
    assert all(escape_controls(c).startswith("\\") for c in controls)
    assert sum(escape_controls(chr(i)) != chr(i) for i in range(0x110000)) == len(controls)


def test_without_checksum_the_totals_leave_out_the_checksum_count():
    """Found by review: the totals said "0 checksum differs" where no checksum was compared (the subject did not)."""
    unchecked = Report(PERIOD, 0.0, 1.0, 120.0, False,
                       (folder("suth:cape", "sha", missing=("2026/1101/a.fits",), matched=3, hash_checked=False),))  # fmt: skip
    totals = render_text(unchecked).splitlines()[-1]
    assert totals == "3 present and equal, 1 missing, 0 size differs, 0 not checked, 0 in flight"
    assert "<th>hash differs</th>" not in render_html(unchecked) and "<th>size differs</th>" in render_html(unchecked)
    assert json.loads(render_json(unchecked))["counts"]["hash_differs"] == 0  # the JSON as before
    checked = sample_report()
    assert "1 size differs, 1 checksum differs, 1 not checked" in render_text(checked).splitlines()[-1]
    assert "<th>hash differs</th><td>1</td>" in render_html(checked)
