"""Reading back a small JSON state file obsflow wrote whole (:func:`obsflow.atomic.write_atomic`),
checked to be of the shape it was written in: a damaged or hand-edited file is one message, never
a KeyError in its reader.  The daemon's status (``online/status_file.py``) and the latest
verification (``verify/last.py``) are read so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_checked_json"]


def read_checked_json(
    path: Path, shape_problem: Callable[[object], str | None], damaged: Callable[[str, Path], Exception]
) -> object | None:
    """The JSON in ``path``, or None if there is no such file.

    ``damaged(problem, path)`` is raised for a file that is not UTF-8 text, not JSON, or of which
    ``shape_problem(data)`` says what is wrong; any other OSError (permissions) as it comes.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as err:
        raise damaged("not UTF-8 text", path) from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise damaged(f"not JSON ({err})", path) from err
    problem = shape_problem(data)
    if problem is not None:
        raise damaged(problem, path)
    return data
