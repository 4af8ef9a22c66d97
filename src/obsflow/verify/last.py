"""The result of the latest verification, kept for the status page: ``<state>/verify-last.json``.

Written atomically after every run, so a reader sees the previous complete result or the
new one, never a prefix.  The catalog keeps every run too (``verifications`` table, see
``Catalog.last_verification``); this file stays the status page's source.  Read back, it is
checked to be of the shape written here (every key the page reads, of its type), so a damaged
or hand-edited file is one message on the page, not an error page; the next daily check replaces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from obsflow.atomic import write_atomic
from obsflow.config import make_state_folder
from obsflow.errors import InputError
from obsflow.jsonstate import read_checked_json
from obsflow.verify.findings import Report
from obsflow.verify.report import report_dict

__all__ = ["LAST_NAME", "LastDamaged", "load_last", "save_last"]

LAST_NAME = "verify-last.json"
#: the keys :func:`save_last` writes that the status page reads, and their types (JSON has no tuples: lists)
REPORT_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": str, "subject": str, "started": str, "ended": str, "period": dict, "checksum": bool,
    "not_checked": list, "folders": list,
}  # fmt: skip
FOLDER_TYPES: dict[str, type | tuple[type, ...]] = {
    "hop": str, "instrument": str, "source": str, "dest": str, "status": str, "error": (str, type(None)),
    "hash_error": (str, type(None)), "checksum": bool, "matched": int, "missing": list, "size_differs": list,
    "hash_differs": list, "in_flight": list,
}  # fmt: skip
#: a folder's lists of differences, whose entries name their file in "path"
DIFFERENCE_LISTS = ("size_differs", "hash_differs")


class LastDamaged(InputError):
    """The latest verification's file is not what :func:`save_last` writes: not JSON, or of another shape.

    ``problem``: what is wrong with it, for a reader that words the rest itself.
    """

    def __init__(self, problem: str, where: Path) -> None:
        super().__init__(f"last verification damaged: {problem}", where)
        self.problem = problem


def save_last(report: Report, state_path: Path) -> Path:
    """Store ``report`` (as its JSON) as the latest verification; return the file written."""
    make_state_folder(state_path)
    path = state_path / LAST_NAME
    write_atomic(path, json.dumps(report_dict(report), indent=1) + "\n")
    return path


def load_last(state_path: Path) -> dict[str, Any] | None:
    """The latest verification as saved by :func:`save_last`, or None if there is none.

    Raises :class:`LastDamaged` for a file that is not of that shape, OSError for one that cannot be read.
    """
    return read_checked_json(state_path / LAST_NAME, _shape_problem, LastDamaged)  # type: ignore[return-value]


def _shape_problem(data: object) -> str | None:
    """What in ``data`` is not of the shape :func:`save_last` writes, or None."""
    problem = _keys_problem(data, REPORT_TYPES)
    if problem is not None:
        return problem
    assert isinstance(data, dict)
    if not all(isinstance(line, str) for line in data["not_checked"]):
        return "'not_checked' is not a list of lines"
    for number, folder in enumerate(data["folders"]):
        problem = _folder_problem(folder)
        if problem is not None:
            return f"folders[{number}]: {problem}"
    return None


def _folder_problem(folder: object) -> str | None:
    problem = _keys_problem(folder, FOLDER_TYPES)
    if problem is not None:
        return problem
    assert isinstance(folder, dict)
    if not all(isinstance(path, str) for path in folder["missing"]):
        return "'missing' is not a list of file names"
    for key in DIFFERENCE_LISTS:
        if not all(isinstance(entry, dict) and isinstance(entry.get("path"), str) for entry in folder[key]):
            return f"a {key!r} entry has no file name in 'path'"
    return None


def _keys_problem(entry: object, types: dict[str, type | tuple[type, ...]]) -> str | None:
    """What is wrong with ``entry``: not an object, or one of ``types``' keys missing or of another type; or None."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    missing = [key for key in types if key not in entry]
    if missing:
        return f"no {missing[0]!r}"
    wrong = [key for key, kind in types.items() if not isinstance(entry[key], kind)]
    return f"{wrong[0]!r} is of the wrong type" if wrong else None
