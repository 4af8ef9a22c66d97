"""Where the filler puts everything under its output root (the GBT ``/home/sdfits`` layout).

    <root>/sdfitsStatus.txt                                  GBTIDL's online status file
    <root>/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.A.fits   one SDFITS file per VEGAS bank
    <root>/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.A.index  its GBTIDL index
    <root>/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.A.flag   -> <flags>/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.A.flag
    <root>/<PROJ>/<PROJ>.raw.vegas/<PROJ>.raw.vegas.index    combined index over all banks
    <flags>/<PROJ>/<PROJ>.raw.vegas/...flag                  user-writable flag files (default <root>/flags)
    <locks>/<PROJ>.lock                                      held while a fill writes (default <root>/locks)
    <root>/.obsflow/journal/<PROJ>.json                      undo journal of a fill in progress
    <root>/.obsflow/journal/<PROJ>.written                   ... of a fill written, its flush left for later
    <root>/.obsflow/online-status.json                       the daemon's state (``obsflow online status``)
    <root>/logs/<PROJ>.fill.log, <root>/logs/online.jsonl    per-project fill log, structured service log
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obsflow.errors import LockError, ObsflowError, OutputError
from obsflow.lock import held, is_locked
from obsflow.online.journal import WRITTEN_SUFFIX, recover, written_path
from obsflow.sdfits.flag import flag_target_path

log = logging.getLogger(__name__)

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')  # one key=value of a fill log line (see _fmt)
_FLOAT_FIELDS = {"filled_at", "finished_at", "finished_seen_at", "seconds"}
_LIST_FIELDS = {"banks", "missing_banks", "missing_files"}  # written "a,b", or as a JSON array (see _fmt)
_PLAIN_ITEM = re.compile(r'[^\s,"\[][^\s,"]*')  # a list item that a comma-joined list holds unambiguously

__all__ = ["FillJournal", "OutputLayout", "output_project"]


@dataclass(frozen=True)
class FillJournal:
    """A project's fill that has not ended for good (for the status readers): ``written``, its flush left
    for later; ``filling``, under way (its lock is held); ``interrupted``, stopped midway, rolled back by the
    next holder of the lock.  ``since``: when its journal was last written (epoch seconds)."""

    project: str
    state: str
    since: float


@dataclass(frozen=True)
class OutputLayout:
    """Paths of the filler's products and bookkeeping under one output root."""

    root: Path
    flags_root: Path | None = None
    locks_root: Path | None = None

    @property
    def flags_dir(self) -> Path:
        return self.flags_root or self.root / "flags"

    @property
    def locks_dir(self) -> Path:
        return self.locks_root or self.root / "locks"

    @property
    def state_dir(self) -> Path:
        return self.root / ".obsflow"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    @property
    def status_path(self) -> Path:
        return self.state_dir / "online-status.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def product_dir(self, project: str, backend: str = "vegas") -> Path:
        """``<root>/<PROJ>/<PROJ>.raw.<backend>``."""
        return self.root / project / f"{project}.raw.{backend}"

    def bank_fits(self, project: str, bank: str, backend: str = "vegas") -> Path:
        return self.product_dir(project, backend) / f"{project}.raw.{backend}.{bank}.fits"

    def combined_index(self, project: str, backend: str = "vegas") -> Path:
        return self.product_dir(project, backend) / f"{project}.raw.{backend}.index"

    def flag_target(self, fits_path: Path) -> Path:
        """Where the real flag file of ``fits_path`` lives (the link beside the FITS file points here)."""
        return flag_target_path(fits_path, self.root, self.flags_dir)

    def journal_path(self, project: str) -> Path:
        return self.journal_dir / f"{project}.json"

    def fill_log(self, project: str) -> Path:
        return self.logs_dir / f"{project}.fill.log"

    def bank_files(self, project: str, backend: str = "vegas") -> list[Path]:
        """The bank SDFITS files that exist for ``project``, in bank order."""
        return sorted(self.product_dir(project, backend).glob(f"{project}.raw.{backend}.*.fits"))

    @contextmanager
    def project_held(self, project: str, timeout_s: float, purpose: str) -> Iterator[list[str]]:
        """Hold ``project``'s lock for the block, its interrupted fill (if any) rolled back first;
        yields the files that were restored."""
        with held(self.locks_dir, project, timeout_s=timeout_s, purpose=purpose):
            yield recover(self.journal_path(project))

    def recover_all(self) -> list[str]:
        """Roll back every interrupted fill under this root; return the files restored.

        Each under its project's lock: a fill still running in another process (an offline
        ``obsflow fill``) holds it and is left alone, and the lock a dead filler left behind is
        cleared on the way, so consumers such as the sync stop treating the project as busy.
        """
        restored: list[str] = []
        for project in dict.fromkeys(journal.stem for journal in self._journals()):
            try:
                with self.project_held(project, 0, "roll back an interrupted fill") as files:
                    restored += files
            except LockError as err:
                log.info("not rolling back %s: its fill is still running (%s)", project, err.one_line())
            except ObsflowError as err:  # one damaged project must not keep the filler from starting
                log.error("cannot roll back %s: %s", project, err.one_line())
        return restored

    def has_journal(self, project: str) -> bool:
        """A fill of ``project`` is under way, was interrupted, or is written but not flushed yet."""
        path = self.journal_path(project)
        return path.exists() or written_path(path).exists()

    def unflushed(self, project: str) -> bool:
        """``project``'s last fill is written but its flush was left for later (see :meth:`settle`)."""
        return written_path(self.journal_path(project)).exists()

    def fill_journals(self) -> list[FillJournal]:
        """Every project's fill that has not ended for good, read without taking any lock; OutputError if
        the journals' folder cannot be read."""
        found = []
        for path in self._journals():
            try:
                since = path.stat().st_mtime
            except FileNotFoundError:
                continue  # settled meanwhile
            if path.suffix == WRITTEN_SUFFIX:
                state = "written"
            else:
                state = "filling" if is_locked(self.locks_dir, path.stem) else "interrupted"
            found.append(FillJournal(path.stem, state, since))
        return found

    def settle(self, project: str, timeout_s: float) -> None:
        """Flush ``project``'s written fill (on a later boot: roll it back), under its lock; LockError if busy."""
        with self.project_held(project, timeout_s, "flush the last fill"):
            pass

    def _journals(self) -> list[Path]:
        """The journals of interrupted fills; OutputError if their folder cannot be read, rather than none
        (``glob`` says none): a fill left half done would be filled over."""
        try:
            return sorted(path for path in self.journal_dir.iterdir() if path.suffix in (".json", WRITTEN_SUFFIX))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise OutputError(f"cannot read the journal folder: {err.strerror or err}", self.journal_dir) from err

    def check_root(self) -> None:
        """Refuse a root that can never be one, under a file (a typo), at once: OutputError naming the file."""
        for folder in (self.root, *self.root.parents):
            try:
                is_folder = folder.is_dir()
            except OSError:
                return  # not to be seen from here: whatever uses the root says why
            if is_folder:
                return
            if folder.exists():
                raise OutputError("output root is a file" if folder == self.root else f"output root is under the file {folder}",
                                  self.root)  # fmt: skip

    def append_fill_log(self, project: str, record: dict[str, object]) -> None:
        """One line per fill: time, scan, banks, rows, seconds (or the error)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        fields = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if v not in (None, "", []))
        with open(self.fill_log(project), "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {fields}\n")

    def read_fill_logs(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every record of every project's fill log, log by log in name order (none if there is no log).

        ``since``: only the logs written to at that time or later (by their mtime; a log is only ever
        appended to, so an older one holds no fill since): the logs keep every fill of every project
        ever filled, and a look at the last days must not read years of them.
        """
        if not self.logs_dir.is_dir():
            return []
        return [record for path in sorted(self.logs_dir.glob("*.fill.log")) if _written_since(path, since)
                for record in _read_fill_log(path)]  # fmt: skip

    def append_service_log(self, record: dict[str, object]) -> None:
        """The structured service log: one JSON object per line."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs_dir / "online.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")


def output_project(path: Path) -> tuple[Path, str] | None:
    """(output root, project) when ``path`` (a product file or folder) is in a filler's tree <root>/<PROJ>/<PROJ>.raw.vegas/."""
    folder = Path(os.path.abspath(path if path.is_dir() else path.parent))
    root, project = folder.parent.parent, folder.parent.name
    if project and folder == OutputLayout(root).product_dir(project):
        return root, project
    return None


def _written_since(path: Path, since: float | None) -> bool:
    if since is None:
        return True
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False  # gone meanwhile: nothing to read


def _read_fill_log(path: Path) -> list[dict[str, Any]]:
    """The records of one fill log, as :meth:`OutputLayout.append_fill_log` wrote them; lines without ``filled_at`` left out."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        fields: dict[str, Any] = {}
        for key, value in _FIELD.findall(line):
            quoted = value.startswith('"')
            if quoted:
                value = _unquoted(value)
            if key in _LIST_FIELDS and value.startswith("["):
                fields[key] = _json_list(value)
            elif quoted:
                fields[key] = value  # a text, as written
            else:
                fields[key] = _typed(key, value)
        if "filled_at" in fields:
            records.append(fields)
    return records


def _unquoted(value: str) -> str:
    try:
        text = json.loads(value)
    except ValueError:
        return value
    return text if isinstance(text, str) else value


def _typed(key: str, value: str) -> object:
    try:
        return int(value) if key == "scan" else float(value) if key in _FLOAT_FIELDS else value
    except ValueError:
        return value


def _json_list(text: str) -> list[str] | str:
    try:
        items = json.loads(text)
    except ValueError:
        return text
    return [str(item) for item in items] if isinstance(items, list) else text


def _fmt(value: object) -> str:
    """A fill log value: a list comma-joined (or, when an item holds a comma, a space or a quote, such
    as a path, a JSON array); a text with white space quoted as JSON."""
    if isinstance(value, (list, tuple)):
        items = [str(item) for item in value]
        if all(_PLAIN_ITEM.fullmatch(item) for item in items):
            return ",".join(items)
        value = json.dumps(items)
    text = str(value)
    return json.dumps(text) if any(c.isspace() for c in text) or text.startswith('"') else text
