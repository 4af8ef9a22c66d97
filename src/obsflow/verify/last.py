"""The result of the latest verification, kept for the status page: ``<state>/verify-last.json``.

Written atomically after every run, so a reader sees the previous complete result or the
new one, never a prefix.  The catalog keeps every run too (``verifications`` table, see
``Catalog.last_verification``); this file stays the status page's source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from obsflow.atomic import write_atomic
from obsflow.config import make_state_folder
from obsflow.verify.findings import Report
from obsflow.verify.report import report_dict

__all__ = ["LAST_NAME", "load_last", "save_last"]

LAST_NAME = "verify-last.json"


def save_last(report: Report, state_path: Path) -> Path:
    """Store ``report`` (as its JSON) as the latest verification; return the file written."""
    make_state_folder(state_path)
    path = state_path / LAST_NAME
    write_atomic(path, json.dumps(report_dict(report), indent=1) + "\n")
    return path


def load_last(state_path: Path) -> dict[str, Any] | None:
    """The latest verification as saved by :func:`save_last`, or None if there is none."""
    try:
        return json.loads((state_path / LAST_NAME).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
