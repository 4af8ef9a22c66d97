"""The status pages as self-contained HTML (inline CSS, no scripts); each renders one status dict.

Pages refresh themselves with ``<meta http-equiv="refresh">``.  Every value is escaped; the
pages show only what :mod:`obsflow.web.status` returns, which holds nothing secret.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.filesize import decimal

__all__ = ["PAGES", "human_bytes", "render_page"]

#: path -> (title, the JSON beside it)
PAGES = {
    "/": ("Overview", "/api/status.json"),
    "/sync": ("Sync", "/api/sync.json"),
    "/verify": ("Verification", "/api/verify.json"),
    "/filler": ("Filler", "/api/filler.json"),
}
NO_RUNS = "no runs yet"
QUICKLOOKS_SHOWN = 6

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2228;background:#f4f6f8}
header{background:#22303c;color:#fff;padding:.6em 1.5em;display:flex;align-items:baseline;gap:2em;flex-wrap:wrap}
header h1{font-size:1.2em;margin:0}header nav a{color:#cfe3f5;margin-right:1.2em;text-decoration:none}
header nav a.here{color:#fff;font-weight:600;border-bottom:2px solid #fff}
header .meta{color:#aab8c5;font-size:.85em;margin-left:auto}
main{padding:.5em 1.5em 2em;max-width:80em}
section{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.4em 1.2em 1em;margin:1em 0}
h2{font-size:1.1em;margin:.6em 0}h3{font-size:.95em;margin:1em 0 .3em}
table{border-collapse:collapse;font-size:.92em;margin:.3em 0;width:100%}
th,td{padding:.3em .8em;border-bottom:1px solid #e4e8ec;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}.muted{color:#6e7781}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.85em;font-weight:600}
.badge.ok{background:#dafbe1}.badge.warn{background:#fff8c5}.badge.bad{background:#ffebe9}
.badge.muted{background:#eaeef2}
.empty{color:#6e7781;font-style:italic}
img.plot{max-width:100%;border:1px solid #e4e8ec;border-radius:4px;margin:.5em 0}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(28em,1fr));gap:1em}
.gallery figure{margin:0}.gallery img{width:100%;border:1px solid #e4e8ec}
pre{font-size:.85em;white-space:pre-wrap;margin:.2em 0;background:#f6f8fa;padding:.4em .6em}
a{color:#0969da}
"""

_STATUS_CLASS = {"ok": "ok", "incomplete": "warn", "running": "warn", "failed": "bad", "interrupted": "bad",
                 "differences": "bad", "not checked": "warn"}  # fmt: skip


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def human_bytes(size: int | float) -> str:
    """``1.5 MB`` style: rich's decimal units (like rsync --human-readable), as the sync prints sizes."""
    return decimal(int(size))


def _when(seconds: object) -> str:
    """Local time with the zone, e.g. ``2026-05-03 08:12:40 SAST``."""
    if not isinstance(seconds, (int, float)):
        return "never"
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _ago(seconds: object, now: float) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    delta = now - seconds
    if delta < 0:
        return "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if delta >= size:
            return f"{delta / size:.1f} {unit} ago" if unit != "min" else f"{delta / size:.0f} min ago"
    return f"{delta:.0f} s ago"


def _badge(status: object, text: str | None = None) -> str:
    """A coloured label: the colour from ``status``, the words ``text`` (default: the status)."""
    css = _STATUS_CLASS.get(str(status), "muted")
    return f'<span class="badge {css}">{_e(status if text is None else text)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bytes_cell(size: int) -> str:
    return f'<span title="{size} bytes">{_e(human_bytes(size))}</span>'


# ---- sections ------------------------------------------------------------------------------------------


def _opening(anchor: str, title: str, part: dict[str, Any]) -> list[str]:
    """A section's heading and, when its data could not all be read, what went wrong."""
    out = [f'<section id="{anchor}"><h2>{title}</h2>']
    if part.get("error"):
        out.append(f'<p class="bad">{_e(part["error"])}</p>')
    return out


def _closed_empty(out: list[str], message: str) -> str:
    """The section so far, ended with ``message`` (HTML) saying there is nothing to show yet."""
    out.append(f'<p class="empty">{message}</p></section>')
    return "\n".join(out)


def sync_section(sync: dict[str, Any], now: float, with_plot: bool = True) -> str:
    out = _opening("sync", "Sync", sync)
    if not sync["hops"]:
        out.append('<p class="empty">no hops configured</p>')
    elif not sync["has_runs"]:
        out.append(f'<p class="empty">{NO_RUNS}</p>')
    for hop in sync["hops"] if sync["has_runs"] else []:
        rows = [_last_sync_row(entry, now) for entry in hop["instruments"]]
        out.append(f'<h3>{_e(hop["source"])} &rarr; {_e(hop["dest"])}</h3>')
        out.append(_table(["Instrument", "Last sync", "Status", "Files copied", "Bytes", "Left undone", "Message"],
                          rows, numeric=(3, 4)))  # fmt: skip
    window = sync["window"]
    out.append(f'<h3>Files of the last {window["days"]} nights ({_e(window["first"])} .. {_e(window["last"])}) '
               "on each host, as the last sync listed them</h3>")  # fmt: skip
    out.append(_holdings_table(sync) if sync["holdings"] else f'<p class="empty">{NO_RUNS}</p>')
    if with_plot:
        out.append('<h3>Bytes copied per day</h3><img class="plot" src="/plots/bytes_per_day.png" '
                   'alt="bytes copied per day and instrument">')  # fmt: skip
    out.append("</section>")
    return "\n".join(out)


def _last_sync_row(entry: dict[str, Any], now: float) -> list[str]:
    """One instrument's last sync on a hop: when, how it ended, what it copied and left undone."""
    run = entry["last_run"]
    if run is None:
        return [_e(entry["instrument"]), f'<span class="empty">{NO_RUNS}</span>', "", "", "", "", ""]
    undone = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in run["undone"].items() if v)
    return [
        _e(entry["instrument"]),
        f'{_e(_when(run["started"]))} <span class="muted">({_e(_ago(run["started"], now))})</span>',
        _badge(run["status"]), str(run["copied"]), _bytes_cell(run["bytes"]),
        f'{run["left_undone"]}' + (f' <span class="muted">({_e(undone)})</span>' if undone else ""),
        _e(run["message"]),
    ]  # fmt: skip


def _holdings_table(sync: dict[str, Any]) -> str:
    """Files and bytes of each instrument on each host; a host holding fewer than the first is marked."""
    hosts = sync["hosts"]
    rows = []
    for holding in sync["holdings"]:
        cells = [_e(holding["instrument"])]
        upstream = holding["hosts"].get(hosts[0], {}).get("files", 0)
        for host in hosts:
            count = holding["hosts"][host]
            css = "warn" if count["files"] < upstream else ""
            cells.append(f'<span class="{css}">{count["files"]} files</span> / {_bytes_cell(count["bytes"])}')
        rows.append(cells)
    return _table(["Instrument", *hosts], rows, numeric=tuple(range(1, len(hosts) + 1)))


def verify_section(verify: dict[str, Any], now: float, full: bool = False) -> str:
    out = _opening("verify", "Last verification", verify)
    if not verify["has_run"]:
        return _closed_empty(out, "no verification yet")
    period = verify.get("period") or {}
    out.append(f'<p>{_badge(verify["status"])} <strong>{_e(verify["subject"])}</strong></p>')
    ago = _ago(verify.get("ended_s"), now)  # a daily check that stopped running shows its age
    # in the page's one zone, as every other time on it (the report writes UTC)
    started, ended = (_when(verify.get(k + "_s")) if verify.get(k + "_s") else verify[k] for k in ("started", "ended"))
    out.append(f'<p class="muted">checked {_e(started)} .. {_e(ended)}'
               f'{f" ({_e(ago)})" if ago else ""}; nights '
               f'{_e(period.get("first"))} .. {_e(period.get("last"))}; '
               f'{"contents compared (xxh128)" if verify["checksum"] else "sizes compared"}</p>')  # fmt: skip
    rows = []
    for folder in verify["folders"]:
        rows.append([
            _e(folder["hop"]), _e(folder["instrument"]), _badge(folder["status"]), *_listed_cells(folder),
            _content_differs_cell(folder), _e(folder["error"] or folder["hash_error"] or ""),
        ])  # fmt: skip
    out.append(_table(["Hop", "Instrument", "Status", "Present", "Missing", "Size differs", "Content differs",
                       "Not checked"], rows, numeric=(3, 4, 5, 6)))  # fmt: skip
    for folder in verify["folders"]:
        lists = (("not on " + str(folder["dest"]), folder["missing"], folder["missing_count"]),
                 ("size differs", folder["size_differs"], len(folder["size_differs"])),
                 ("content differs", folder["hash_differs"], len(folder["hash_differs"])))  # fmt: skip
        for what, paths, count in lists:
            if not paths or not (full or what.startswith("not on")):
                continue
            more = f"\n… and {count - len(paths)} more" if count > len(paths) else ""
            out.append(f'<h3>{_e(folder["instrument"])} on {_e(folder["source"])}, {_e(what)}</h3>'
                       f'<pre>{_e(chr(10).join(paths))}{_e(more)}</pre>')  # fmt: skip
    out.append("</section>")
    return "\n".join(out)


def _listed_cells(folder: dict[str, Any]) -> list[str]:
    """Present, Missing (a green "None" when no file is) and Size differs; "not checked" in each for a folder
    that could not be listed, where "None" and 0 would read as "all present"."""
    if folder["error"]:
        return ['<span class="muted">not checked</span>'] * 3
    missing = folder["missing_count"]
    missing_cell = f'<span class="{"bad" if missing else "ok"}">{missing if missing else "None"}</span>'
    return [str(folder["matched"]), missing_cell, str(len(folder["size_differs"]))]


def _content_differs_cell(folder: dict[str, Any]) -> str:
    """How many files' contents differ; "not compared" when they were not (no ``--checksum``, or they could not
    be hashed), where a 0 would read as "all the same"."""
    if not folder["checksum"] or folder["error"] or folder["hash_error"]:
        return '<span class="muted">not compared</span>'
    return str(len(folder["hash_differs"]))


def filler_section(filler: dict[str, Any], now: float, with_gallery: bool = False) -> str:
    out = _opening("filler", "Online filler", filler)
    if not filler.get("configured", True):
        return _closed_empty(out, "no online filler in this config (it has no [filler] table)")
    if not filler["has_run"]:
        return _closed_empty(out, f"the filler daemon has not run on {_e(filler['out_root'])}")
    live = filler["running"] and filler.get("unsaved_s") is None  # else the projects' lag is as of the last save
    out.append(_daemon_line(filler, now, live))
    if filler.get("unsaved_s") is not None:
        out.append(f'<p class="bad">status not saved for {filler["unsaved_s"]:.0f} s: the daemon cannot write under '
                   f'{_e(filler["out_root"])} (read-only or full disk?) or is hung; what follows may be old, '
                   "see the daemon's log</p>")  # fmt: skip
    out += [_not_present_line(entry, now) for entry in filler.get("not_present", [])]
    out += [f'<p class="{_FILL_NOT_ENDED_CLASS.get(str(entry.get("state")), "bad")}">{_e(entry["message"])}</p>'
            for entry in filler.get("fills_not_ended", [])]  # fmt: skip
    out.append(_projects_table(filler["projects"], now, live))
    out += ["<h3>Fill errors</h3>", _failures_table(filler["failures"])]
    out += ["<h3>Recent fills</h3>", _recent_fills_table(filler["recent"])]
    out.append('<h3>Fill latency</h3><img class="plot" src="/plots/fill_latency.png" alt="fill latency over time">')
    if with_gallery:
        out += ["<h3>Quick looks of the latest scans</h3>", _quicklook_gallery(filler["recent"])]
    out.append("</section>")
    return "\n".join(out)


def _daemon_line(filler: dict[str, Any], now: float, live: bool) -> str:
    """The daemon's state, what it does, its active project, last poll and output folder."""
    return (f'<p>{_daemon_state(filler)} {_e(filler.get("activity"))}; {"" if live else "last "}active project '
            f'<strong>{_e(filler.get("active_project") or "none")}</strong>; last poll '
            f'{_e(_ago(filler.get("last_poll"), now) or "never")}; output {_e(filler["out_root"])}</p>')  # fmt: skip


_FILL_NOT_ENDED_CLASS = {"written": "muted", "filling": "muted", "interrupted": "warn"}  # else: cannot tell, "bad"


def _not_present_line(entry: dict[str, Any], now: float) -> str:
    """A project named to follow that is not in the raw root: a typo reads as a quiet telescope otherwise."""
    return f'<p class="warn">{_e(entry["message"])}, since {_e(_ago(entry["since"], now) or "?")}</p>'


def _projects_table(projects: list[dict[str, Any]], now: float, live: bool) -> str:
    """Each project's last filled scan and its lag behind the telescope (unknown unless ``live``)."""
    if not projects:
        return '<p class="empty">no scans filled yet</p>'
    rows = []
    for p in projects:
        lag = "up to date" if not p["pending"] else f'{p["pending"]} scans behind'
        if not live:  # the telescope may have gone on since
            lag = f'unknown ({p["pending"]} pending at the last poll)'
        latency = "" if p["latency_s"] is None else f'{p["latency_s"]:.1f} s after scan end'
        look = f'<a href="{_e(p["quicklook"])}">plot</a>' if p["quicklook"] else ""
        rows.append([
            _e(p["project"]) + (" <strong>(active)</strong>" if p["is_active"] and live else ""),
            _e(p["last_scan"]),
            _e(p["last_timestamp"]), f'{_e(_when(p["last_filled_at"]))} '
            f'<span class="muted">({_e(_ago(p["last_filled_at"], now))})</span>',
            f'<span class="{"warn" if p["pending"] or not live else "ok"}">{_e(lag)}</span>', _e(latency), look,
        ])  # fmt: skip
    return _table(["Project", "Last filled scan", "Scan timestamp", "Filled", "Lag behind telescope",
                   "Fill latency", "Quick look"], rows, numeric=(1,))  # fmt: skip


def _failures_table(failures: list[dict[str, Any]]) -> str:
    """Scans the daemon could not fill: retried, or given up and skipped."""
    if not failures:
        return '<p class="ok">None</p>'
    rows = [[_e(f["project"]), _e(f["scan"]), _e(f["timestamp"]), _e(f["attempts"]), _failure_badge(f),
             _e(f["last_error"])] for f in failures]  # fmt: skip
    return _table(["Project", "Scan", "Timestamp", "Attempts", "State", "Last error"], rows, numeric=(1, 3))


def _failure_badge(failure: dict[str, Any]) -> str:
    if failure.get("bank_missing"):
        return _badge("failed", "bank missing")  # the scan's other banks are filled
    return _badge("failed", "skipped") if failure["given_up"] else _badge("running", "will retry")


def _recent_fills_table(recent: list[dict[str, Any]]) -> str:
    if not recent:
        return '<p class="empty">no fills yet</p>'
    rows = [[_e(_when(r["filled_at"])), _e(r["project"]), _e(r["scan"]), _e(",".join(map(str, r["banks"]))),
             _e(r["rows"]), "" if r["seconds"] is None else f'{r["seconds"]:.2f}',
             "" if r["latency_s"] is None else f'{r["latency_s"]:.1f}'] for r in recent]  # fmt: skip
    return _table(["Filled", "Project", "Scan", "Banks", "Rows", "Fill (s)", "Scan end → filled (s)"], rows,
                  numeric=(2, 4, 5, 6))  # fmt: skip


def _quicklook_gallery(recent: list[dict[str, Any]]) -> str:
    """The quick-look plots of the latest fills that have one."""
    looks = [r for r in recent if r["quicklook"]][:QUICKLOOKS_SHOWN]
    if not looks:
        return '<p class="empty">no quick looks yet</p>'
    figures = "".join(f'<figure><img src="{_e(r["quicklook"])}" alt="{_e(r["project"])} scan {_e(r["scan"])}">'
                      f'<figcaption>{_e(r["project"])} scan {_e(r["scan"])}</figcaption></figure>'
                      for r in looks)  # fmt: skip
    return f'<div class="gallery">{figures}</div>'


def _daemon_state(filler: dict[str, Any]) -> str:
    """The daemon's badge, worded as ``online status`` words it."""
    if not filler["running"]:
        return _badge("failed", "not running")
    if not filler.get("checked", True):  # its lock names another host, whose processes cannot be seen from here
        return _badge("running", f"running on host {filler.get('host')} (cannot check from here)")
    return _badge("ok", "running")


def render_page(path: str, status: dict[str, Any], refresh_s: int) -> str:
    """The page at ``path`` (a key of PAGES) for ``status`` (``status.full_status()``)."""
    now = status.get("generated", time.time())
    if path == "/sync":
        body = sync_section(status["sync"], now)
    elif path == "/verify":
        body = verify_section(status["verify"], now, full=True)
    elif path == "/filler":
        body = filler_section(status["filler"], now, with_gallery=True)
    else:
        body = "\n".join([sync_section(status["sync"], now), verify_section(status["verify"], now),
                          filler_section(status["filler"], now)])  # fmt: skip
    title, api = PAGES.get(path, PAGES["/"])
    here = ' class="here"'
    nav = "".join(f'<a href="{p}"{here if p == path else ""}>{_e(t)}</a>' for p, (t, _) in PAGES.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>obsflow: {_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f'<header><h1>obsflow status</h1><nav>{nav}<a href="{api}">JSON</a></nav>'
        f'<span class="meta">as of {_e(_when(now))}; refreshes every {int(refresh_s)} s</span></header>\n'
        f"<main>\n{body}\n</main>\n</body></html>\n"
    )
