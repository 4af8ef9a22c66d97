"""The daemon's status file (``<root>/.obsflow/online-status.json``): read whole and checked, or set aside.

The file is the daemon's own derived state, replaced whole at every poll; the fill logs keep the
history and the SDFITS files say what is filled.  So a damaged one (cut, not JSON, not the shape
the daemon writes) is no reason to stop filling: its readers (``online status``, the status page)
say so in one line, and a daemon starting sets it aside as ``<name>.damaged`` and writes a fresh one
(with the scans filled without some banks rebuilt from the fill logs: they are watched for the late file).
Every field is optional (older versions wrote fewer), but one that is there has the daemon's shape.
"""

from __future__ import annotations

import os
from pathlib import Path

from obsflow.atomic import fsync_dir
from obsflow.errors import InputError
from obsflow.jsonstate import read_checked_json
from obsflow.online.layout import OutputLayout

__all__ = ["DAMAGED_SUFFIX", "StatusDamaged", "StatusUnreadable", "read_status", "set_aside"]

DAMAGED_SUFFIX = ".damaged"
#: the status's lists, and the keys each entry has (its readers index them)
ENTRY_KEYS: dict[str, tuple[str, ...]] = {
    "recent": (),
    "failures": ("project", "scan", "timestamp", "attempts", "last_error", "retry_at", "given_up"),
    "project_failures": ("project", "pending", "last_error"),
    "missing_banks": ("project", "scan", "timestamp", "note"),
    "never_finished": ("project", "scan", "timestamp"),
    "not_present": ("project", "state"),
}
PROJECT_KEYS = ("last_scan", "last_timestamp", "last_filled_at", "pending")
#: the values of a failure the daemon converts when it restores it (``int("one")`` would stop it)
FAILURE_TYPES: dict[str, type | tuple[type, ...]] = {
    "scan": int, "attempts": int, "retry_at": (int, float), "given_up": bool, "counted": int,
}  # fmt: skip


class StatusUnreadable(InputError):
    """The daemon's status file cannot be read (permissions, a folder in its place); ``problem``: why."""

    def __init__(self, problem: str, where: Path, what: str = "cannot read the online daemon's status") -> None:
        super().__init__(f"{what}: {problem}", where)
        self.problem = problem


class StatusDamaged(StatusUnreadable):
    """The daemon's status file is not what the daemon writes: cut, not JSON, or of another shape."""

    def __init__(self, problem: str, where: Path) -> None:
        super().__init__(problem, where, what="online daemon status damaged")


def read_status(layout: OutputLayout) -> dict[str, object] | None:
    """The daemon's last saved status, or None if it never ran here.

    Raises :class:`StatusDamaged` for a file that is not the daemon's JSON, :class:`StatusUnreadable`
    for one that cannot be read.
    """
    path = layout.status_path
    try:
        return read_checked_json(path, _shape_problem, StatusDamaged)  # type: ignore[return-value]
    except OSError as err:
        raise StatusUnreadable(err.strerror or str(err), path) from err


def _shape_problem(data: object) -> str | None:
    """What in ``data`` is not of the shape the daemon writes, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    projects = data.get("projects", {})
    if not isinstance(projects, dict):
        return "'projects' is not a JSON object"
    for name, info in projects.items():
        problem = _entry_problem(info, PROJECT_KEYS)
        if problem is not None:
            return f"projects[{name!r}] {problem}"
    for name, keys in ENTRY_KEYS.items():
        entries = data.get(name, [])
        if not isinstance(entries, list):
            return f"{name!r} is not a list"
        for number, entry in enumerate(entries):
            problem = _entry_problem(entry, keys, FAILURE_TYPES if name == "failures" else {})
            if problem is not None:
                return f"{name}[{number}] {problem}"
    if not isinstance(data.get("unfinished", []), (list, type(None))):
        return "'unfinished' is not a list"
    return None


def _entry_problem(
    entry: object, keys: tuple[str, ...], types: dict[str, type | tuple[type, ...]] | None = None
) -> str | None:
    if not isinstance(entry, dict):
        return "is not a JSON object"
    missing = [key for key in keys if key not in entry]
    if missing:
        return f"has no {missing[0]!r}"
    wrong = [key for key, kind in (types or {}).items() if key in entry and not isinstance(entry[key], kind)]
    return f"has a {wrong[0]!r} of the wrong type" if wrong else None


def set_aside(layout: OutputLayout) -> Path:
    """Rename the damaged status to ``<name>.damaged`` (replacing an older one), kept to be looked at; its new name."""
    aside = layout.status_path.with_name(layout.status_path.name + DAMAGED_SUFFIX)
    os.replace(layout.status_path, aside)
    fsync_dir(aside.parent)
    return aside
