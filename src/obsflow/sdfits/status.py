"""``sdfitsStatus.txt``: the online status file GBTIDL and dysh read to find the live project.

One line per (backend, project), seven comma-separated fields (GBT_FORMATS.md §4.5)::

    backend,project,scan,timestamp,Wed Mar 19 13:32:44 2025,file,index

``file`` is relative to ``<root>/<project>/`` (for VEGAS the ``<PROJ>.raw.vegas`` directory,
whose combined index GBTIDL opens) and ``index`` is the last INDEX written (GBTIDL reads
``index + 1`` rows and refreshes when it changes).  The date is local time, because GBTIDL and
dysh compute the file's age against the local clock.

Invariant: the file is replaced atomically, so readers see the old or the new set of lines;
lines of other (backend, project) pairs are kept as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from obsflow.atomic import write_atomic
from obsflow.errors import InputError
from obsflow.lock import flocked
from obsflow.sdfits.index import asctime

__all__ = ["BACKENDS", "STATUS_FILE_NAME", "StatusEntry", "read_status", "status_path", "update_status", "write_status"]

STATUS_FILE_NAME = "sdfitsStatus.txt"
#: Backend names GBTIDL accepts in the first field.
BACKENDS = ("acs", "dcr", "sp", "zpec", "vegas")
_HEADER = "# backend,project,scan,timestamp,updated,file,index\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class StatusEntry:
    """One line of ``sdfitsStatus.txt``: the latest scan filled for a (backend, project)."""

    backend: str
    project: str
    scan: int
    timestamp: str
    updated: datetime
    file: str
    index: int

    def line(self) -> str:
        """The line as written (no newline)."""
        fields = [self.backend, self.project, str(self.scan), self.timestamp, asctime(self.updated), self.file,
                  str(self.index)]  # fmt: skip
        for value in fields:
            if "," in value or "\n" in value:
                raise InputError(f"status field may not contain a comma or newline: {value!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r} (GBTIDL knows {', '.join(BACKENDS)})")
        return ",".join(fields)


def status_path(root: Path) -> Path:
    """``<root>/sdfitsStatus.txt``."""
    return Path(root) / STATUS_FILE_NAME


def _parse_asctime(text: str) -> datetime:
    parts = text.split()
    if len(parts) != 5 or parts[1] not in _MONTHS:
        raise ValueError(f"not a date like 'Wed Mar 19 13:32:44 2025': {text!r}")
    hour, minute, second = (int(x) for x in parts[3].split(":"))
    return datetime(int(parts[4]), _MONTHS.index(parts[1]) + 1, int(parts[2]), hour, minute, second)


def read_status(root: Path) -> list[StatusEntry]:
    """The entries of ``<root>/sdfitsStatus.txt`` (none if it does not exist yet)."""
    path = status_path(root)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read status file: {err}", path) from err
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 7:
            raise InputError(f"status line has {len(fields)} fields, expected 7", f"{path}:{number}")
        try:
            entries.append(StatusEntry(fields[0], fields[1], int(fields[2]), fields[3], _parse_asctime(fields[4]),
                                       fields[5], int(fields[6])))  # fmt: skip
        except ValueError as err:
            raise InputError(f"unreadable status line: {err}", f"{path}:{number}") from err
    return entries


def write_status(root: Path, entries: list[StatusEntry], durable: bool = True) -> None:
    """Replace ``<root>/sdfitsStatus.txt`` atomically with ``entries`` (one line each)."""
    text = _HEADER + "".join(entry.line() + "\n" for entry in entries)
    write_atomic(status_path(root), text, mode=0o644, durable=durable)


def update_status(root: Path, entry: StatusEntry, durable: bool = True) -> list[StatusEntry]:
    """Set the line of ``entry``'s (backend, project), keeping every other line; return all entries.

    Read, change and write under an flock of ``.sdfitsStatus.lock`` in ``root``: fillers of two
    projects update the one file, and neither may drop the other's line.  ``durable=False``: not
    flushed (for a fill whose own flush is left for later: the line is rewritten by every fill).
    """
    root.mkdir(parents=True, exist_ok=True)
    with flocked(root / ".sdfitsStatus.lock"):
        others = [e for e in read_status(root) if (e.backend, e.project) != (entry.backend, entry.project)]
        entries = [*others, entry]
        write_status(root, entries, durable)
    return entries
