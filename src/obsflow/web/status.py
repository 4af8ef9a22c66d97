"""What the status page shows, read from where obsflow records it; plain JSON-ready data, read-only.

* sync: the catalog (``Config.catalog_path``): last run per hop and instrument, files of the window
  on every host, bytes copied per day;
* verification: ``<state>/verify-last.json`` (:func:`obsflow.verify.last.load_last`);
* filler: the daemon's status JSON and fill logs under ``[filler] out_root``.

Invariants: nothing here writes (a missing catalog is "no runs yet", never created); nothing from
the config that could be secret leaves this module: no ssh or rsync options, no mail settings, no
host locations; free text recorded by other parts (run messages, errors) goes through
:meth:`Redactor.clean` first.  Times are UNIX seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from obsflow.config import INSTRUMENTS, Config
from obsflow.errors import ObsflowError
from obsflow.online.daemon import (
    NEVER_FINISHED,
    daemon_running,
    fill_lag_s,
    fill_not_ended_line,
    fills_not_ended,
    later_scan,
    not_present_line,
    status_unsaved_s,
)
from obsflow.online.layout import OutputLayout
from obsflow.online.missing import recheck_missing_banks
from obsflow.online.status_file import StatusDamaged, StatusUnreadable, read_status
from obsflow.transfer.catalog import Catalog, RunRecord
from obsflow.transfer.plan import dated_folders, modified_window, window_dates
from obsflow.verify.last import LastDamaged, load_last
from obsflow.web.quicklook import quicklook_path

__all__ = [
    "Redactor", "bytes_per_day", "fill_history", "filler_layout", "filler_status", "full_status", "sync_status",
    "verify_status",
]

UNDONE_COUNTS = ("in_flight", "locked", "conflicts", "refused", "errors")
RECENT_SHOWN = 20
MISSING_SHOWN = 50


@dataclass(frozen=True)
class Redactor:
    """Replaces every config value that could be secret in free text (messages recorded by other parts)."""

    secrets: tuple[str, ...]

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        mail = config.mail
        values = [*config.ssh_options, *config.rsync_options, mail.username, mail.password_env, mail.password_file]
        for option in config.ssh_options:  # "-oIdentityFile=/k" and "-i /k": the value alone too
            values += re.split(r"[\s=]", option)[1:]
        secrets = {v.strip() for v in values if v and len(v.strip()) >= 3}
        return cls(tuple(sorted(secrets, key=len, reverse=True)))

    def clean(self, text: object) -> str:
        out = "" if text is None else str(text)
        for secret in self.secrets:
            out = out.replace(secret, "[hidden]")
        return out


# ---- sync (the catalog) ---------------------------------------------------------------------------


def _run_dict(run: RunRecord, redactor: Redactor) -> dict[str, Any]:
    undone = {key: getattr(run, key) for key in UNDONE_COUNTS}
    return {
        "id": run.id, "started": run.started, "ended": run.ended, "status": run.status,
        "copied": run.copied, "bytes": run.bytes, "present": run.present,
        "left_undone": sum(undone.values()), "undone": undone, "message": redactor.clean(run.message),
    }  # fmt: skip


def _hosts(config: Config) -> list[str]:
    """``instruments`` then every archive, in the order the hops reach them."""
    order = [INSTRUMENTS]
    for hop in config.hops:
        order += [name for name in (hop.source, hop.dest) if name not in order]
    return order + [name for name in config.archives if name not in order]


def _window(config: Config, today: date) -> list[date]:
    return window_dates(today, config.window_days)


def _holdings(catalog: Catalog, config: Config, dates: list[date]) -> list[dict[str, Any]]:
    """Per instrument and host: files (and bytes) in the window, as sync last saw them.

    The window as the sync takes it: the dated folders of its nights, or for an undated tree the
    files modified within it.
    """
    holdings = []
    for name, inst in config.instruments.items():
        folders, modified = dated_folders(inst.layout, dates), modified_window(inst.layout, dates, today=dates[-1])
        hosts = {}
        for host in _hosts(config):
            files, total = catalog.held(host, name, folders, modified)
            hosts[host] = {"files": files, "bytes": total}
        holdings.append({"instrument": name, "hosts": hosts})
    return holdings


def bytes_per_day(runs: Iterable[RunRecord], dates: list[date]) -> dict[str, dict[str, list[int]]]:
    """``{hop: {instrument: [bytes copied on each date]}}`` from real (not dry) runs, by local start date."""
    index = {day: i for i, day in enumerate(dates)}
    out: dict[str, dict[str, list[int]]] = {}
    for run in runs:
        day = datetime.fromtimestamp(run.started).date()
        if run.dry_run or day not in index:
            continue
        series = out.setdefault(run.hop, {}).setdefault(run.instrument, [0] * len(dates))
        series[index[day]] += run.bytes
    return out


def sync_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """Last sync per hop and instrument, the window's files per host, bytes per day."""
    now = time.time() if now is None else now
    dates = _window(config, datetime.fromtimestamp(now).date())
    redactor = Redactor.for_config(config)
    out: dict[str, Any] = {
        "window": {"days": config.window_days, "first": dates[0].isoformat(), "last": dates[-1].isoformat()},
        "hosts": _hosts(config),
        "has_runs": False,
        "error": None,
        "hops": [
            {"hop": hop.label, "source": hop.source, "dest": hop.dest,
             "instruments": [{"instrument": name, "last_run": None, "last_success": None}
                             for name in config.instruments]}
            for hop in config.hops
        ],  # fmt: skip
        "holdings": [],
        "bytes_per_day": {"dates": [d.isoformat() for d in dates], "hops": {}},
    }
    if not config.catalog_path.is_file():
        return out  # never synced
    try:
        with Catalog(config.catalog_path, read_only=True) as catalog:  # the sync's state: never written here
            _fill_sync(out, catalog, config, dates, redactor)
    except ObsflowError as err:
        out["error"] = redactor.clean(f"cannot read the catalog: {err}")
    return out


def _fill_sync(out: dict[str, Any], catalog: Catalog, config: Config, dates: list[date], redactor: Redactor) -> None:
    for hop in out["hops"]:
        for entry in hop["instruments"]:
            runs = catalog.runs(limit=1, instrument=entry["instrument"], hop=hop["hop"], real_only=True)
            if runs:
                entry["last_run"] = _run_dict(runs[0], redactor)
                out["has_runs"] = True
            entry["last_success"] = catalog.last_success(entry["instrument"], hop["hop"])
    out["holdings"] = _holdings(catalog, config, dates)
    # Every run of the window, however many: a fixed number of the latest ones (many instruments, or
    # hourly syncs) left the window's first days at 0 bytes.
    first_day = datetime.combine(dates[0], datetime.min.time()).timestamp()
    out["bytes_per_day"]["hops"] = bytes_per_day(catalog.runs(limit=None, since=first_day, real_only=True), dates)


# ---- verification ------------------------------------------------------------------------------------


def verify_status(config: Config) -> dict[str, Any]:
    """The latest ``obsflow verify`` result: overall status, counts, and per hop and instrument what is missing."""
    redactor = Redactor.for_config(config)
    try:
        last = load_last(config.state_path)
    except LastDamaged as err:  # said on the page, as a damaged daemon status is: the rest of the page stands
        said = f"{err.problem} ({err.where} is damaged: the next daily verification replaces it)"
        return {"has_run": False, "error": redactor.clean(f"cannot read the last verification: {said}")}
    except OSError as err:
        return {"has_run": False, "error": redactor.clean(f"cannot read the last verification: {err}")}
    if last is None:
        return {"has_run": False, "error": None}
    folders = []
    for folder in last.get("folders", []):
        missing = list(folder.get("missing", []))
        folders.append({
            "hop": folder.get("hop"), "instrument": folder.get("instrument"),
            "source": folder.get("source"), "dest": folder.get("dest"), "status": folder.get("status"),
            "matched": folder.get("matched", 0), "missing_count": len(missing), "missing": missing[:MISSING_SHOWN],
            "size_differs": [d.get("path") for d in folder.get("size_differs", [])][:MISSING_SHOWN],
            "hash_differs": [d.get("path") for d in folder.get("hash_differs", [])][:MISSING_SHOWN],
            "in_flight": len(folder.get("in_flight", [])), "checksum": folder.get("checksum", False),
            "error": redactor.clean(folder["error"]) if folder.get("error") else None,
            "hash_error": redactor.clean(folder["hash_error"]) if folder.get("hash_error") else None,
        })  # fmt: skip
    return {
        "has_run": True, "error": None,
        "status": last.get("status"), "subject": redactor.clean(last.get("subject", "")),
        "started": last.get("started"), "ended": last.get("ended"), "period": last.get("period"),
        "started_s": _report_time(last.get("started")), "ended_s": _report_time(last.get("ended")),
        "checksum": last.get("checksum", False), "counts": last.get("counts", {}),
        "not_checked": [redactor.clean(line) for line in last.get("not_checked", [])], "folders": folders,
    }  # fmt: skip


def _report_time(text: object) -> float | None:
    """UNIX seconds of a time as the verification report writes it (``2026-05-03 09:00:12 UTC``), or None."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


# ---- filler ---------------------------------------------------------------------------------------------


def filler_layout(config: Config) -> OutputLayout:
    """The filler's output root, flags and locks (relative paths are relative to the config file)."""
    base = config.path.parent if config.path else Path.cwd()

    def resolve(text: str | None) -> Path | None:
        return None if text is None else (base / Path(text).expanduser()).resolve()

    root = resolve(config.filler.out_root)
    assert root is not None
    return OutputLayout(root, resolve(config.filler.flags_dir), resolve(config.filler.locks_dir))


def _latency(record: dict[str, Any]) -> float | None:
    """Seconds from the scan's end to the fill being done (as ``online status`` counts them)."""
    lag = fill_lag_s(record)
    return None if lag is None else round(lag, 3)


def _quicklook_url(layout: OutputLayout, project: str, scan: object) -> str | None:
    try:
        if quicklook_path(layout.root, project, int(scan)).is_file():  # type: ignore[call-overload]
            return f"/quicklook/{project}/scan_{int(scan)}.png"  # type: ignore[call-overload]
    except (ObsflowError, TypeError, ValueError):
        pass
    return None


def filler_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """The daemon: running or not, per project the last filled scan and its lag, recent fills, failures."""
    now = time.time() if now is None else now
    if not config.has_filler:  # a sync-only config: no output root to look at (not the default /home/sdfits)
        return {"configured": False, "out_root": None, "has_run": False, "error": None, "running": False,
                "projects": [], "recent": [], "failures": [], "not_present": []}  # fmt: skip
    layout = filler_layout(config)
    redactor = Redactor.for_config(config)
    out: dict[str, Any] = {"configured": True, "out_root": str(layout.root), "has_run": False, "error": None, "running": False,
                           "projects": [], "recent": [], "failures": [], "not_present": []}  # fmt: skip
    try:
        data = read_status(layout)
    except StatusDamaged as err:
        out["error"] = f"cannot read the daemon status: {err.problem} (damaged: the daemon sets it aside when it starts)"
        return out
    except StatusUnreadable as err:
        out["error"] = f"cannot read the daemon status: {err.problem}"
        return out
    if data is None:
        return out
    recent = [r for r in data.get("recent", []) if isinstance(r, dict)]
    last_poll = data.get("last_poll")
    running, checked = daemon_running(layout, data)
    out.update({
        "has_run": True,
        "running": running, "checked": checked, "unsaved_s": status_unsaved_s(data, running, now),
        "pid": data.get("pid"), "host": data.get("host"), "started": data.get("started"),
        "activity": data.get("activity"), "active_project": data.get("active_project"), "last_poll": last_poll,
        "last_poll_age_s": round(now - last_poll, 1) if isinstance(last_poll, (int, float)) else None,
    })  # fmt: skip
    for project, info in sorted((data.get("projects") or {}).items()):
        filled_at = info.get("last_filled_at")
        # that very fill: a bank that came late fills the same scan again later, with no lag of the daemon's
        last = next((r for r in recent if (r.get("project"), r.get("scan"), r.get("filled_at"))
                     == (project, info.get("last_scan"), filled_at)), {})  # fmt: skip
        out["projects"].append({
            "project": project, "is_active": project == data.get("active_project"),
            "last_scan": info.get("last_scan"), "last_timestamp": info.get("last_timestamp"),
            "last_filled_at": filled_at,
            "filled_age_s": round(now - filled_at, 1) if isinstance(filled_at, (int, float)) else None,
            "pending": info.get("pending", 0), "latency_s": _latency(last),
            "quicklook": _quicklook_url(layout, project, info.get("last_scan")),
        })  # fmt: skip
    for record in recent[:RECENT_SHOWN]:
        out["recent"].append({
            "project": record.get("project"), "scan": record.get("scan"), "timestamp": record.get("timestamp"),
            "banks": record.get("banks", []), "rows": record.get("rows"), "seconds": record.get("seconds"),
            "filled_at": record.get("filled_at"), "latency_s": _latency(record), "skipped": record.get("skipped"),
            "quicklook": _quicklook_url(layout, str(record.get("project")), record.get("scan")),
        })  # fmt: skip
    banks = recheck_missing_banks(layout, data.get("missing_banks") or [])  # a bank filled since is not missing
    out["failures"] = _failures({**data, "missing_banks": banks.still_missing}, redactor)
    out["fills_not_ended"] = [{**entry, "message": redactor.clean(fill_not_ended_line(entry, bool(out["running"]), now))}
                              for entry in fills_not_ended(layout)]  # fmt: skip
    out["not_present"] = [{"project": entry.get("project"), "state": redactor.clean(entry.get("state")),
                           "since": entry.get("since"), "message": redactor.clean(not_present_line(entry))}
                          for entry in data.get("not_present", [])]  # fmt: skip
    return out


def _failures(data: dict[str, Any], redactor: Redactor) -> list[dict[str, Any]]:
    """The daemon's failing scans, the scans the log never finished or filled without a bank, and the projects it
    cannot read, as rows."""
    failures: list[dict[str, Any]] = []
    for failure in data.get("failures", []):
        failures.append({
            "project": failure.get("project"), "scan": failure.get("scan"), "timestamp": failure.get("timestamp"),
            "attempts": failure.get("attempts"), "given_up": bool(failure.get("given_up")),
            "retry_at": failure.get("retry_at"), "last_error": redactor.clean(failure.get("last_error")),
        })  # fmt: skip
    for entry in data.get("never_finished", []):  # never filled: the log has no SCAN FINISHED for it
        failures.append({
            "project": entry.get("project"), "scan": entry.get("scan"), "timestamp": entry.get("timestamp"),
            "attempts": 0, "given_up": True, "retry_at": None,
            "last_error": f"never finished: {NEVER_FINISHED} ({later_scan(entry)} started after it)",
        })  # fmt: skip
    for entry in data.get("missing_banks", []):  # filled, but without the banks whose raw file never came
        failures.append({
            "project": entry.get("project"), "scan": entry.get("scan"), "timestamp": entry.get("timestamp"),
            "attempts": None, "given_up": False, "bank_missing": True, "retry_at": None,
            "last_error": redactor.clean(entry.get("note")),
        })  # fmt: skip
    for problem in data.get("project_failures", []):  # the project's files cannot be read: all its scans wait
        failures.append({
            "project": problem.get("project"), "scan": f"{problem.get('pending')} waiting", "timestamp": None,
            "attempts": problem.get("attempts"), "given_up": False, "retry_at": problem.get("retry_at"),
            "last_error": redactor.clean(problem.get("last_error")),
        })  # fmt: skip
    return failures


def fill_history(config: Config, days: int = 7, now: float | None = None) -> list[dict[str, Any]]:
    """Every fill of the last ``days`` with its latency, oldest first: the fill logs, plus the daemon's recent list.

    The fill logs hold the whole history (one ``key=value`` line per fill), of which only those
    written within the ``days`` are read; the status JSON holds the last few hundred, and is used
    alone when the logs are gone.
    """
    now = time.time() if now is None else now
    if not config.has_filler:
        return []
    layout = filler_layout(config)
    since = now - days * 86400.0
    fills: dict[tuple[object, object, object], dict[str, Any]] = {}
    for record in layout.read_fill_logs(since=since):
        fills[(record.get("project"), record.get("scan"), record.get("filled_at"))] = record
    try:
        data = read_status(layout) or {}
    except StatusUnreadable:
        data = {}  # the fill logs alone
    for record in data.get("recent", []):  # type: ignore[attr-defined]
        fills.setdefault((record.get("project"), record.get("scan"), record.get("filled_at")), record)
    history = []
    for record in fills.values():
        latency = _latency(record)
        if latency is None or float(record["filled_at"]) < since:
            continue
        history.append({"project": record.get("project"), "scan": record.get("scan"),
                        "filled_at": float(record["filled_at"]), "latency_s": latency,
                        "seconds": record.get("seconds")})  # fmt: skip
    return sorted(history, key=lambda r: r["filled_at"])


def full_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """Everything the overview page shows: ``sync``, ``verify``, ``filler``."""
    now = time.time() if now is None else now
    return {
        "generated": now,
        "sync": sync_status(config, now),
        "verify": verify_status(config),
        "filler": filler_status(config, now),
    }
