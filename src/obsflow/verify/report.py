"""Rendering one :class:`~obsflow.verify.findings.Report` as text, JSON and a self-contained HTML page.

The text keeps the shape of the observatory's existing check: per instrument folder and hop a
ruled heading ``FILES ON <A> THAT ARE NOT ON <B>`` then the relative paths, sorted, or
``None``; then the size and (with ``--checksum``; without, the top says so once) checksum sections;
at the end a section for everything that could not be checked.  A folder that was not checked never says ``None``: it says why.  All three
renderings carry the same content; the mail's text and HTML parts may show only the first lines
of each section (``lines_per_section``) and say how many more its JSON attachment names.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from obsflow.transfer.listing import escape_controls
from obsflow.verify.compare import Locked
from obsflow.verify.findings import FolderResult, Report

__all__ = ["render_html", "render_json", "render_text", "report_dict"]

WIDTH = 78
NONE = "None"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sections(folder: FolderResult) -> list[tuple[str, list[str], str | None]]:
    """``(heading, lines, reason_not_checked)`` for each section of a folder, in order."""
    a, b = folder.source.upper(), folder.dest.upper()
    sizes = [
        f"{d.path}  ({folder.source} {d.size_a} bytes, {folder.dest} "
        + (f"{d.size_b} bytes)" if d.kind_b == "f" else f"not a regular file, type {d.kind_b})")
        for d in folder.size_differs
    ]
    hashes = [
        f"{d.path}  ({folder.source} xxh128 {d.xxh128_a}, {folder.dest} {d.xxh128_b})" for d in folder.hash_differs
    ]
    sections = [
        (f"FILES ON {a} THAT ARE NOT ON {b}", list(folder.missing), folder.error),
        (f"FILES WHOSE SIZE DIFFERS BETWEEN {a} AND {b}", sizes, folder.error),
    ]
    if not _contents_left_out(folder):  # without --checksum the report says so once, at the top
        content_reason = folder.error or folder.hash_error
        sections.append((f"FILES WHOSE CONTENT DIFFERS BETWEEN {a} AND {b}", hashes, content_reason))
    if folder.unhashed and not folder.hash_error:
        sections.append((f"FILES WHOSE CONTENT COULD NOT BE COMPARED ({a}, {b})", list(folder.unhashed), None))
    if folder.in_flight:
        heading = "FILES STILL IN FLIGHT (NOT ALARMS: CHANGING OR COPIED WHILE CHECKED)"
        sections.append((heading, list(folder.in_flight), None))
    if folder.grown:
        heading = f"FILES THAT GREW ON {a} SINCE THEIR COPY (NOT ALARMS: THE NEXT SYNC REPLACES IT)"
        sections.append((heading, list(folder.grown), None))
    if folder.locked:
        heading = f"FILES ON {a} THE FILLER HOLDS LOCKED (COPIED ONCE THE FILL ENDS)"
        sections.append((heading, [_locked_line(item) for item in folder.locked], None))
    if folder.refused:
        heading = f"ENTRIES ON {a} THAT THE SYNC REFUSES (NOT COPIED, FOR THE REASON GIVEN)"
        sections.append((heading, [f"{r.path}  ({r.reason})" for r in folder.refused], None))
    if folder.skipped:
        heading = f"ENTRIES ON {a} THAT ARE NOT REGULAR FILES (NOT COPIED, NOT COMPARED)"
        sections.append((heading, list(folder.skipped), None))
    return sections


def _contents_left_out(folder: FolderResult) -> bool:
    """Contents not compared because no ``--checksum`` asked for it (not because they could not be)."""
    return not folder.hash_checked and folder.error is None and folder.hash_error is None


def _bounded(lines: list[str], limit: int | None) -> list[str]:
    """The first ``limit`` lines, and one saying how many more there are (None: all of them)."""
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more: the attached JSON report names them all"]


def _locked_line(item: Locked) -> str:
    if item.gone:
        return (f"{item.path}  (lock {item.lock}: its filler is gone, {item.holder}; restart the filler: "
                "it rolls back the cut-off fill, then the sync copies the project)")  # fmt: skip
    return f"{item.path}  (lock {item.lock}: {item.holder})"


def _not_checked_lines(report: Report) -> list[str]:
    lines = []
    for folder in report.folders:
        where = f"{folder.instrument} on hop {folder.hop}"
        if folder.error:
            lines.append(f"{where}: {folder.error}")
        elif folder.hash_error:
            lines.append(f"{where}: contents not compared: {folder.hash_error}")
        elif folder.unhashed:
            lines.append(f"{where}: {len(folder.unhashed)} files whose content could not be compared")
    return lines


def _title(folder: FolderResult) -> str:
    return f"{folder.instrument}: {folder.source} -> {folder.dest}  (hop {folder.hop})"


def _intro(report: Report) -> list[str]:
    lines = [
        f"checked {_when(report.started)} .. {_when(report.ended)[11:]}, nights {report.period}",
        f"files younger than {_settle_text(report)}, or changing while checked, are in flight, not alarms",
    ]
    if any(_contents_left_out(folder) for folder in report.folders):
        lines.append("file contents not compared, only sizes (use --checksum)")
    return lines


def _settle_text(report: Report) -> str:
    """``60 s``, or each instrument's own where they differ: ``their instrument's settle time (sha 60 s, shd 600 s)``."""
    if len({seconds for _name, seconds in report.settle_by_instrument}) <= 1:
        return f"{report.settle_s:g} s"
    each = ", ".join(f"{name} {seconds:g} s" for name, seconds in report.settle_by_instrument)
    return f"their instrument's settle time ({each})"


def render_text(report: Report, *, lines_per_section: int | None = None) -> str:
    """The plain-text report (stdout, and the mail body, which shows ``lines_per_section`` lines at most)."""
    heavy, light = "=" * WIDTH, "-" * WIDTH
    out = [report.subject, *_intro(report), ""]
    for folder in report.folders:
        out += [heavy, _title(folder), f"  A: {folder.source_location}", f"  B: {folder.dest_location}", heavy, ""]
        for heading, lines, reason in _sections(folder):
            out += [light, heading, light]
            if reason:
                out.append(f"NOT CHECKED: {reason}")
            else:
                out += _bounded(lines, lines_per_section) or [NONE]
            out.append("")
    out += [heavy, "COULD NOT BE CHECKED", heavy]
    out += _not_checked_lines(report) or [NONE]
    counts = report.counts
    out += [
        "",
        f"{counts['matched']} present and equal, {counts['missing']} missing, {counts['size_differs']} size differs, "
        + (f"{counts['hash_differs']} checksum differs, " if report.hash_checked else "")  # none compared: no count
        + f"{counts['not_checked']} not checked, {counts['in_flight']} in flight"
        + (f", {counts['refused']} refused" if counts["refused"] else "")
        + (f", {counts['locked']} locked by the filler" if counts["locked"] else "")
        + (f", {counts['grown']} grown since their copy" if counts["grown"] else ""),
    ]
    return "\n".join(escape_controls(line) for line in out) + "\n"


def report_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data (``--json``, the mail attachment, the status page)."""
    return {
        "status": report.status,
        "exit_code": report.exit_code,
        "subject": report.subject,
        "started": _when(report.started),
        "ended": _when(report.ended),
        "period": {"first": report.period.first.isoformat(), "last": report.period.last.isoformat()},
        "settle_seconds": report.settle_s,
        "settle_seconds_by_instrument": dict(report.settle_by_instrument),
        "checksum": report.hash_checked,
        "counts": report.counts,
        "not_checked": _not_checked_lines(report),
        "folders": [_folder_dict(folder) for folder in report.folders],
    }


def _folder_dict(folder: FolderResult) -> dict[str, Any]:
    return {
        "hop": folder.hop,
        "instrument": folder.instrument,
        "source": folder.source,
        "dest": folder.dest,
        "source_location": folder.source_location,
        "dest_location": folder.dest_location,
        "status": folder.status,
        "error": folder.error,
        "hash_error": folder.hash_error,
        "checksum": folder.hash_checked,
        "matched": folder.matched,
        "missing": list(folder.missing),
        "size_differs": [
            {"path": d.path, "size_a": d.size_a, "size_b": d.size_b, "kind_b": d.kind_b} for d in folder.size_differs
        ],
        "hash_differs": [
            {"path": d.path, "xxh128_a": d.xxh128_a, "xxh128_b": d.xxh128_b} for d in folder.hash_differs
        ],
        "unhashed": list(folder.unhashed),
        "in_flight": list(folder.in_flight),
        "skipped": list(folder.skipped),
        "refused": [{"path": r.path, "reason": r.reason} for r in folder.refused],
        "grown": list(folder.grown),
        "locked": [
            {"path": item.path, "lock": item.lock, "holder": item.holder, "filler_gone": item.gone}
            for item in folder.locked
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
h1{font-size:1.3em;padding:.4em .6em;border-radius:4px}
h1.ok{background:#d9f2d9}h1.bad{background:#f8d7d7}h1.unchecked{background:#fde8c8}
h2{font-size:1.1em;border-bottom:3px double #888;margin-top:2em}
h3{font-size:.95em;border-bottom:1px solid #aaa;margin-bottom:.3em}
pre{margin:.2em 0 .8em 0;font-size:.9em;white-space:pre-wrap}
.none{color:#2a7a2a}.notchecked{color:#b35900;font-weight:bold}.loc{color:#555;font-size:.9em}
table{border-collapse:collapse}td,th{padding:.1em .8em;text-align:right}th{text-align:left}
"""


def render_html(report: Report, *, lines_per_section: int | None = None) -> str:
    """A self-contained HTML page (no external files, scripts or fonts); ``lines_per_section`` as in the text."""
    def esc(text: str) -> str:
        return html.escape(escape_controls(text))

    css_class = {0: "ok", 1: "bad"}.get(report.exit_code, "unchecked")
    counts = {name: value for name, value in report.counts.items() if report.hash_checked or name != "hash_differs"}
    rows = "".join(f"<tr><th>{esc(name.replace('_', ' '))}</th><td>{value}</td></tr>" for name, value in counts.items())
    body = [
        f'<h1 class="{css_class}">{esc(report.subject)}</h1>',
        *(f"<p>{esc(line)}</p>" for line in _intro(report)),
        f"<table>{rows}</table>",
    ]
    for folder in report.folders:
        body.append(f"<h2>{esc(_title(folder))}</h2>")
        body.append(
            f'<p class="loc">A: {esc(folder.source_location)}<br>B: {esc(folder.dest_location)}</p>'
        )
        for heading, lines, reason in _sections(folder):
            body.append(f"<h3>{esc(heading)}</h3>")
            if reason:
                body.append(f'<pre class="notchecked">NOT CHECKED: {esc(reason)}</pre>')
            elif lines:
                body.append("<pre>" + "\n".join(esc(line) for line in _bounded(lines, lines_per_section)) + "</pre>")
            else:
                body.append(f'<pre class="none">{NONE}</pre>')
    body.append("<h2>COULD NOT BE CHECKED</h2>")
    lines = _not_checked_lines(report)
    if lines:
        body.append('<pre class="notchecked">' + "\n".join(esc(line) for line in lines) + "</pre>")
    else:
        body.append(f'<pre class="none">{NONE}</pre>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(report.subject)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
