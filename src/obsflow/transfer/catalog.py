"""The SQLite catalog: every file seen on every host, its xxh128, and every sync run.

One file (``Config.catalog_path``), WAL mode so the status page and ``verify`` can read
while a sync writes.  Shared by sync and verify; ``verify`` also records each of its runs
(``verifications``: period, verdict, counts and the JSON report).

Files are keyed by ``(host, instrument, path)``: ``host`` is the hop endpoint name
(``"instruments"`` or an archive name from the config), ``instrument`` the instrument name,
``path`` the file's path relative to that instrument's root on that host (``2016/0907/x.fits``).

Invariants: a hash is stored together with the size and mtime it was computed for; when a
later listing shows another size or mtime the hash is dropped (``observe``), so a stored
hash always describes the file as last seen.  ``copied``/``verified`` are set only by
``record_copy`` after the destination's hash was found equal to the source's.
"""

from __future__ import annotations

import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from obsflow.config import WHOLE_ROOT, make_state_folder
from obsflow.errors import CatalogError
from obsflow.transfer.listing import is_utf8_name
from obsflow.transfer.plan import dated_folders, folder_night, names_the_night, sorts_by_night

if TYPE_CHECKING:
    from obsflow.transfer.listing import FileStat

__all__ = ["Catalog", "FileRecord", "Pruned", "RunRecord", "VerificationRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    host TEXT NOT NULL,
    instrument TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    xxh128 TEXT,
    first_seen REAL NOT NULL,
    copied REAL,
    verified REAL,
    PRIMARY KEY (host, instrument, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    ended REAL,
    hop TEXT NOT NULL,
    instrument TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    dry_run INTEGER NOT NULL DEFAULT 0,
    copied INTEGER NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    locked INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    first_night TEXT,
    last_night TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_instrument ON runs (instrument, hop, started);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    ended REAL NOT NULL,
    first_night TEXT NOT NULL,
    last_night TEXT NOT NULL,
    checksum INTEGER NOT NULL,
    status TEXT NOT NULL,
    missing INTEGER NOT NULL DEFAULT 0,
    size_differs INTEGER NOT NULL DEFAULT 0,
    hash_differs INTEGER NOT NULL DEFAULT 0,
    not_checked INTEGER NOT NULL DEFAULT 0,
    matched INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL DEFAULT ''
);
"""
_TABLES = {"files", "runs", "verifications"}

# Store a hash with the size and mtime it describes; copied survives only if those match, verified
# only if the hash is also the same (same size and mtime with another hash: the content rotted).
_UPSERT_HASH = """
INSERT INTO files (host, instrument, path, size, mtime, xxh128, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host, instrument, path) DO UPDATE SET
  copied = CASE WHEN size = excluded.size AND mtime = excluded.mtime THEN copied END,
  verified = CASE WHEN size = excluded.size AND mtime = excluded.mtime AND xxh128 IS excluded.xxh128
                  THEN verified END,
  size = excluded.size, mtime = excluded.mtime, xxh128 = excluded.xxh128
"""

# A copy landed: the destination's row takes its hash and, when it equals the source's, the copied and
# verified marks, in one statement (a first sync records 10,000s of rows).
_UPSERT_COPY = """
INSERT INTO files (host, instrument, path, size, mtime, xxh128, first_seen, copied, verified)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host, instrument, path) DO UPDATE SET
  size = excluded.size, mtime = excluded.mtime, xxh128 = excluded.xxh128,
  copied = excluded.copied, verified = excluded.verified
"""

# A listing's file: new rows get first_seen; a changed size or mtime drops the hash and the marks.
_OBSERVE = """
INSERT INTO files (host, instrument, path, size, mtime, first_seen) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (host, instrument, path) DO UPDATE SET
  size = excluded.size, mtime = excluded.mtime, xxh128 = NULL, copied = NULL, verified = NULL
WHERE size != excluded.size OR mtime != excluded.mtime
"""

#: run statuses: "ok" everything done, "incomplete" something left for a later run,
#: "failed" could not run (host unreachable...), "running" started and not finished yet,
#: "interrupted" started and never finished (killed, its state disk full; set by the next run)
RUN_STATUSES = ("ok", "incomplete", "failed", "running", "interrupted")
RUN_COUNTS = ("copied", "present", "in_flight", "locked", "conflicts", "refused", "errors", "bytes")


@dataclass(frozen=True)
class FileRecord:
    """What the catalog knows about one file on one host."""

    host: str
    instrument: str
    path: str
    size: int
    mtime: float
    xxh128: str | None
    first_seen: float
    copied: float | None  # when it was copied *to* this host by obsflow
    verified: float | None  # when its hash was found equal to the source's


@dataclass(frozen=True)
class RunRecord:
    """One sync of one instrument over one hop."""

    id: int
    started: float
    ended: float | None
    hop: str
    instrument: str
    status: str
    dry_run: bool
    copied: int
    present: int
    in_flight: int
    locked: int
    conflicts: int
    refused: int
    errors: int
    bytes: int
    message: str
    first_night: str | None = None  # the window's nights (None: recorded before runs kept them)
    last_night: str | None = None


#: at most this many rows of each table go in one prune (about 2 s): a catalog years old is pruned over a few
#: runs, none holding the write lock long (a verify storing hashes meanwhile waits at most 30 s)
PRUNE_LIMIT = 100_000

#: what the catalog holds of one file for ``observe``: size, mtime, xxh128 (None if not known)
StoredFile = tuple[int, float, "str | None"]

#: counts a verification run stores (the keys of ``verify.findings.Report.counts``)
VERIFY_COUNTS = ("missing", "size_differs", "hash_differs", "not_checked", "matched", "in_flight")


@dataclass(frozen=True)
class VerificationRecord:
    """One ``obsflow verify`` run: when, which nights, how, its verdict and counts, its JSON report."""

    id: int
    started: float
    ended: float
    first_night: str  # YYYY-MM-DD
    last_night: str
    checksum: bool
    status: str  # "ok", "differences" or "not checked"
    missing: int
    size_differs: int
    hash_differs: int
    not_checked: int
    matched: int
    in_flight: int
    report: str  # the report as JSON (``verify.report.report_dict``), "" if not kept


@dataclass(frozen=True)
class Pruned:
    """How many rows :meth:`Catalog.prune` forgot, per table."""

    files: int = 0
    runs: int = 0
    verifications: int = 0
    more: bool = False  # the limit was reached: a later prune forgets the rest
    kept_from: date | None = None  # the oldest night kept past the horizon, for a run started since it

    @property
    def total(self) -> int:
        return self.files + self.runs + self.verifications


def _open_for_writing(path: Path) -> sqlite3.Connection:
    make_state_folder(path.parent)
    try:
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        _add_run_nights(db, path)
    except (OSError, sqlite3.Error) as err:
        raise CatalogError(f"cannot open catalog: {err}", path) from err
    return db


_RUN_NIGHTS = ("first_night", "last_night")


def _run_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(runs)")}


def _has_run_nights(db: sqlite3.Connection) -> bool:
    return set(_RUN_NIGHTS) <= _run_columns(db)


def _add_run_nights(db: sqlite3.Connection, path: Path) -> None:
    """A catalog made before runs kept their nights gets the columns (NULL: the run's nights unknown).

    In one transaction, each column only if missing: a second process upgrading at the same time
    waits, then finds them made, and a catalog an older upgrade left with one column still opens.
    """
    if _has_run_nights(db):
        return
    with _Transaction(db, path):
        have = _run_columns(db)
        for column in _RUN_NIGHTS:
            if column not in have:
                db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")


def _open_for_reading(path: Path) -> sqlite3.Connection:
    """The catalog opened read-only (``mode=ro``), or an empty one in memory if it has no tables yet."""
    try:
        if not path.is_file():
            return _empty_in_memory()
    except OSError as err:  # a state folder this user cannot enter
        raise CatalogError(f"cannot open catalog: {err.strerror}", path) from err
    try:
        db = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise CatalogError(f"cannot open catalog: {err}{_why_unreadable(path)}", path) from err
    if not _TABLES <= tables:
        db.close()
        return _empty_in_memory()
    return db


def _why_unreadable(path: Path) -> str:
    """A WAL database is read through its -shm file, which a reader must create when no writer has it open."""
    if not os.access(path.parent, os.W_OK):
        return f"; its folder is read-only for this user, who cannot make the {path.name}-shm a reader needs"
    return ""


def _empty_in_memory() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(_SCHEMA)
    return db


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _not_a_bug(err: sqlite3.DatabaseError) -> bool:
    """SQLite's errors about the file or its disk (damaged, unreadable, full), not about our queries."""
    return isinstance(err, sqlite3.OperationalError) or type(err) is sqlite3.DatabaseError


def _one_line_errors(method: Callable[Concatenate[Catalog, _P], _R]) -> Callable[Concatenate[Catalog, _P], _R]:
    """A catalog method whose SQLite errors about the file (a damaged page, an I/O error) become one
    CatalogError line: the caller stops with a clear error, never a traceback."""

    @functools.wraps(method)
    def guarded(self: Catalog, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            if not _not_a_bug(err):
                raise
            raise self.unusable(err) from err

    return guarded


class Catalog:
    """The catalog database; use as a context manager (``with Catalog(path) as cat:``)."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        """Open (and create if need be) the catalog at ``path``.

        ``read_only`` (the status page, a dry run): nothing on disk is created or changed (no
        folder, file, table or journal mode); a catalog not made yet, or still empty, reads as
        empty; the recording methods record nothing (a dry run calls them as a real run does,
        and reads what it read).  A WAL database is read through its -shm file: a reader needs it there (a writer
        has it open) or a folder it may create it in.
        """
        path = Path(path)
        self.path = path
        self.read_only = read_only
        self._db = _open_for_reading(path) if read_only else _open_for_writing(path)

    def close(self) -> None:
        self._db.close()

    def unusable(self, err: sqlite3.Error) -> CatalogError:
        """The one line for a catalog SQLite cannot read or write."""
        if "malformed" in str(err) or "not a database" in str(err):
            return CatalogError(f"catalog damaged ({err}): move it aside and the next sync starts a new one "
                                "(run history and stored hashes start afresh)", self.path)  # fmt: skip
        return CatalogError(f"cannot use catalog: {err}", self.path)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- files -------------------------------------------------------------------------------

    @_one_line_errors
    def observe(
        self,
        host: str,
        instrument: str,
        files: Mapping[str, FileStat],
        now: float | None = None,
        folders: Iterable[str] | None = None,
        stored: Mapping[str, StoredFile] | None = None,
    ) -> dict[str, str]:
        """Record that ``host`` holds ``files`` (``{path: FileStat}``) as listed now.

        New files get ``first_seen``; a file whose size or mtime changed loses its hash and
        its copied/verified marks (they described the old content).  Unchanged files are
        not written, so a no-op run costs one read and no write.  ``folders`` (the dated
        folders the listing covered) limits that read to them instead of the instrument's
        whole history.  Returns the stored hashes of ``files`` that still hold (what
        :meth:`known_hashes` would return), from the same read.  ``stored``: that read, made
        beforehand with :meth:`stored` (e.g. while the listing was under way).
        """
        now = time.time() if now is None else now
        if stored is None:
            stored = self.stored(host, instrument, folders)
        hashes, rows, known = {}, [], stored.get
        all_ascii = "".join(files).isascii()  # the usual listing: no name to look at alone
        for path, st in files.items():
            if not all_ascii and not is_utf8_name(path):
                continue  # cannot be stored as text; the plan refuses it
            row = known(path)
            if row is None or row[0] != st[0] or row[1] != st[1]:
                rows.append((host, instrument, path, st[0], st[1], now))
            elif row[2] is not None:
                hashes[path] = row[2]
        if rows:
            self._write((_OBSERVE, rows))
        return hashes

    def _stored(
        self, host: str, instrument: str, folders: Iterable[str] | None
    ) -> Iterator[tuple[str, int, float, str | None]]:
        """``(path, size, mtime, xxh128)`` rows of one host and instrument, within ``folders`` if given.

        A folder is read as a range of the primary key (see :func:`_below`), so the cost follows
        the window, not the history; the folder's own row (a dated folder that is a symlink) too.
        """
        query = "SELECT path, size, mtime, xxh128 FROM files WHERE host = ? AND instrument = ?"
        folders = None if folders is None else set(folders)
        if folders is None or WHOLE_ROOT in folders:
            yield from self._db.execute(query, (host, instrument))
            return
        # Two lookups of the key (one statement): an OR of the two would make SQLite scan the history.
        query = f"{query} AND path = ? UNION ALL {query} AND {_BELOW}"
        for folder in sorted(folders):
            yield from self._db.execute(query, (host, instrument, folder, host, instrument, *_below(folder)))

    @_one_line_errors
    def stored(self, host: str, instrument: str, folders: Iterable[str] | None = None) -> dict[str, StoredFile]:
        """``{path: (size, mtime, xxh128 or None)}`` as recorded for one host and instrument (within ``folders``)."""
        return {path: (size, mtime, xxh) for path, size, mtime, xxh in self._stored(host, instrument, folders)}

    @_one_line_errors
    def held(
        self, host: str, instrument: str, folders: Iterable[str], modified: tuple[float, float] | None = None
    ) -> tuple[int, int]:
        """``(files, bytes)`` recorded on ``host`` in ``folders`` (and below), modified within ``[since, until)``.

        Counted by SQLite over one primary-key range per folder (see :func:`_below`), so the cost
        follows the window, not the history.
        """
        query = "SELECT count(*), coalesce(sum(size), 0) FROM files WHERE host = ? AND instrument = ?"
        args: list[object] = [host, instrument]
        if modified is not None:
            query += " AND mtime >= ? AND mtime < ?"
            args += modified
        folders = set(folders)
        if WHOLE_ROOT in folders:
            files, size = self._db.execute(query, args).fetchone()
            return int(files), int(size)
        files = size = 0
        for folder in folders:
            found, found_size = self._db.execute(query + " AND " + _BELOW, [*args, *_below(folder)]).fetchone()
            files, size = files + int(found), size + int(found_size)
        return files, size

    @_one_line_errors
    def record_hash(self, host: str, instrument: str, path: str, size: int, mtime: float, xxh128: str) -> None:
        """Store the hash of a file as it is now (size and mtime it was computed for)."""
        self.record_hashes(host, instrument, [(path, size, mtime, xxh128)])

    @_one_line_errors
    def record_hashes(
        self, host: str, instrument: str, rows: Iterable[tuple[str, int, float, str]], now: float | None = None
    ) -> int:
        """Store many hashes ``(path, size, mtime, xxh128)`` in one transaction; return how many.

        Each is stored with the size and mtime it was computed for; a row whose stored size
        or mtime differs loses its copied/verified marks (see ``_UPSERT_HASH``).
        """
        now = time.time() if now is None else now
        values = [(host, instrument, path, size, mtime, xxh, now) for path, size, mtime, xxh in rows
                  if is_utf8_name(path)]  # fmt: skip
        if values:
            self._write((_UPSERT_HASH, values))
        return len(values)

    @_one_line_errors
    def record_copy(
        self,
        source: str,
        dest: str,
        instrument: str,
        copies: Iterable[tuple[str, int, float, str, str]],
        now: float | None = None,
    ) -> None:
        """Record copies ``(path, size, mtime, source_xxh128, dest_xxh128)`` from ``source`` to ``dest``.

        Only copies whose two hashes are equal are marked copied and verified on ``dest``;
        a copy with differing hashes keeps only its hashes (it does not count).
        """
        now = time.time() if now is None else now
        copies = list(copies)
        self._write(
            (_UPSERT_HASH, [(source, instrument, p, size, mtime, sh, now) for p, size, mtime, sh, _ in copies]),
            (_UPSERT_COPY, [
                (dest, instrument, p, size, mtime, dh, now, *((now, now) if sh == dh else (None, None)))
                for p, size, mtime, sh, dh in copies
            ]),
        )  # fmt: skip

    @_one_line_errors
    def copied_here(self, host: str, instrument: str, paths: Iterable[str]) -> set[str]:
        """Those of ``paths`` on ``host`` that a sync copied there and that have not changed since.

        (:meth:`observe` clears the mark of a file whose size or mtime changed.)
        """
        query = "SELECT 1 FROM files WHERE host = ? AND instrument = ? AND path = ? AND copied IS NOT NULL"
        return {path for path in paths if self._db.execute(query, (host, instrument, path)).fetchone()}

    @_one_line_errors
    def mark_verified(self, host: str, instrument: str, paths: Iterable[str], now: float | None = None) -> None:
        """Mark files on ``host`` as verified (their hash was found equal to the source's)."""
        now = time.time() if now is None else now
        self._write((
            "UPDATE files SET verified = ? WHERE host = ? AND instrument = ? AND path = ? AND verified IS NULL",
            [(now, host, instrument, path) for path in paths if is_utf8_name(path)],
        ))

    @_one_line_errors
    def get(self, host: str, instrument: str, path: str) -> FileRecord | None:
        """The record of one file, or None if never seen."""
        row = self._db.execute(
            "SELECT * FROM files WHERE host = ? AND instrument = ? AND path = ?", (host, instrument, path)
        ).fetchone()
        return FileRecord(*row) if row else None

    @_one_line_errors
    def files(self, host: str, instrument: str | None = None, prefix: str = "") -> list[FileRecord]:
        """Every file recorded on ``host`` (optionally one instrument, paths starting with ``prefix``)."""
        query = "SELECT * FROM files WHERE host = ?"
        args: list[object] = [host]
        if instrument is not None:
            query += " AND instrument = ?"
            args.append(instrument)
        if prefix:
            query += " AND substr(path, 1, ?) = ?"
            args += [len(prefix), prefix]
        return [FileRecord(*row) for row in self._db.execute(query + " ORDER BY instrument, path", args)]

    @_one_line_errors
    def known_hashes(
        self, host: str, instrument: str, files: Mapping[str, FileStat], folders: Iterable[str] | None = None
    ) -> dict[str, str]:
        """Stored hashes of ``files`` (``{path: FileStat}``) whose size and mtime still match.

        ``folders`` limits the read to those dated folders (see :meth:`observe`).
        """
        known = {}
        for path, size, mtime, xxh in self._stored(host, instrument, folders):
            st = files.get(path)
            if xxh is not None and st is not None and st.size == size and st.mtime == mtime:
                known[path] = xxh
        return known

    # ---- runs --------------------------------------------------------------------------------

    @_one_line_errors
    def start_run(
        self, hop: str, instrument: str, dry_run: bool = False, now: float | None = None,
        nights: tuple[date, date] | None = None,
    ) -> int:  # fmt: skip
        """Open a run row (status ``running`` until :meth:`finish_run`); return its id (0: read-only).
        ``nights``: the first and last night of the run's window."""
        now = time.time() if now is None else now
        if self.read_only:
            return 0
        first, last = (nights[0].isoformat(), nights[1].isoformat()) if nights else (None, None)
        cursor = self._db.execute(
            "INSERT INTO runs (started, hop, instrument, dry_run, first_night, last_night) VALUES (?, ?, ?, ?, ?, ?)",
            (now, hop, instrument, int(dry_run), first, last),
        )
        return int(cursor.lastrowid or 0)

    @_one_line_errors
    def completed_windows(self, instrument: str, hop: str) -> list[tuple[float, date | None, date | None]]:
        """``(started, first night, last night)`` of every run of ``instrument`` on ``hop`` that went
        through its window (``ok``, or ``incomplete``: files left for later or to a person), not dry;
        the nights are None for a run recorded before runs kept them."""
        query = self._completed_runs_query("started", " AND instrument = ? AND hop = ?")
        return [(started, _night(first), _night(last)) for started, first, last in self._db.execute(query, (instrument, hop))]

    def _completed_runs_query(self, columns: str, where: str = "") -> str:
        """SELECT ``columns``, first and last night of the runs that went through their window (see
        :meth:`completed_windows`), ``where`` added; the nights are NULL in a catalog from before runs kept them."""
        nights = "first_night, last_night" if _has_run_nights(self._db) else "NULL, NULL"  # an older catalog, read-only
        return f"SELECT {columns}, {nights} FROM runs WHERE status IN ('ok', 'incomplete') AND dry_run = 0{where}"

    @_one_line_errors
    def close_interrupted_runs(self) -> int:
        """Mark the runs a dead run left ``running`` as ``interrupted``; call with the run lock held.

        Returns how many there were.
        """
        if self.read_only:
            return 0
        cursor = self._db.execute(
            "UPDATE runs SET status = 'interrupted', message = ? WHERE status = 'running'",
            ("the run stopped before it finished (killed, or its state disk full)",),
        )
        return cursor.rowcount

    @_one_line_errors
    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int], message: str = "") -> None:
        """Close a run with its status (see RUN_STATUSES) and counts (keys from RUN_COUNTS)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if self.read_only:
            return
        sets = ", ".join(f"{key} = ?" for key in RUN_COUNTS if key in counts)
        values = [counts[key] for key in RUN_COUNTS if key in counts]
        self._db.execute(
            f"UPDATE runs SET ended = ?, status = ?, message = ?{', ' + sets if sets else ''} WHERE id = ?",
            [time.time(), status, message, *values, run_id],
        )

    @_one_line_errors
    def runs(
        self, limit: int | None = 100, instrument: str | None = None, hop: str | None = None,
        since: float | None = None, real_only: bool = False,
    ) -> list[RunRecord]:
        """The latest runs, newest first (``limit`` None: all of them), started at ``since`` or later if given;
        ``real_only``: no dry runs."""
        query, args = "SELECT * FROM runs WHERE 1 = 1" + (" AND dry_run = 0" if real_only else ""), []
        if instrument is not None:
            query, args = query + " AND instrument = ?", [*args, instrument]
        if hop is not None:
            query, args = query + " AND hop = ?", [*args, hop]
        if since is not None:
            query, args = query + " AND started >= ?", [*args, since]
        limit = -1 if limit is None else limit  # SQLite: a negative LIMIT is none
        rows = self._db.execute(query + " ORDER BY started DESC, id DESC LIMIT ?", [*args, limit])
        return [RunRecord(*row[:6], bool(row[6]), *row[7:]) for row in rows]

    @_one_line_errors
    def last_success(self, instrument: str, hop: str | None = None) -> float | None:
        """Start time of the latest ``ok`` (not dry) run of ``instrument`` (on ``hop`` if given)."""
        query = "SELECT max(started) FROM runs WHERE instrument = ? AND status = 'ok' AND dry_run = 0"
        args: list[object] = [instrument]
        if hop is not None:
            query += " AND hop = ?"
            args.append(hop)
        row = self._db.execute(query, args).fetchone()
        return row[0] if row and row[0] is not None else None

    # ---- verifications -----------------------------------------------------------------------

    @_one_line_errors
    def record_verification(
        self,
        *,
        started: float,
        ended: float,
        first_night: str,
        last_night: str,
        checksum: bool,
        status: str,
        counts: Mapping[str, int],
        report: str = "",
    ) -> int:
        """Store one verification run (counts keyed as VERIFY_COUNTS); return its id (0: read-only)."""
        if self.read_only:
            return 0
        values = [counts.get(key, 0) for key in VERIFY_COUNTS]
        cursor = self._db.execute(
            f"INSERT INTO verifications (started, ended, first_night, last_night, checksum, status, "
            f"{', '.join(VERIFY_COUNTS)}, report) VALUES ({', '.join('?' * (7 + len(VERIFY_COUNTS)))})",
            [started, ended, first_night, last_night, int(checksum), status, *values, report],
        )
        return int(cursor.lastrowid or 0)

    @_one_line_errors
    def last_verification(self, checksum: bool | None = None) -> VerificationRecord | None:
        """The latest verification run (only content-checked ones with ``checksum=True``), or None."""
        query, args = "SELECT * FROM verifications", []
        if checksum is not None:
            query, args = query + " WHERE checksum = ?", [int(checksum)]
        row = self._db.execute(query + " ORDER BY started DESC, id DESC LIMIT 1", args).fetchone()
        return VerificationRecord(*row[:5], bool(row[5]), *row[6:]) if row else None

    # ---- retention ---------------------------------------------------------------------------

    @_one_line_errors
    def prune(
        self, oldest_night: date, layouts: Mapping[str, str], keep_runs: Collection[int] = (), limit: int = PRUNE_LIMIT
    ) -> Pruned:
        """Forget what is older than ``oldest_night`` (at most ``limit`` rows of each table; the files
        instrument by instrument and host by host, each one's oldest nights first), in one transaction; nothing
        on a read-only catalog.

        - ``files``: the rows of nights before it, by the dated folder of the path (``layouts``:
          ``{instrument: layout}``; a path in no dated folder stays).  Instruments not in ``layouts``,
          whose folders name no whole night (``{yyyy}/{mm}``), or undated (``*``) are left alone: the
          sync lists an undated tree whole and records every file again at its next run, and an
          archive's copy would lose the ``copied`` mark a grown product needs (``copied_here``).
          The nights a real run started since that midnight covered stay too, as long as the run is
          that recent (a catch-up: ``--days`` past the kept nights, ``-d`` an old night): else its own
          prune forgot what it had just copied and verified, and the next catch-up hashed it all again.
        - ``runs`` started before that midnight, except ``keep_runs`` (those the missed-runs check
          needs: :func:`obsflow.transfer.sync.runs_to_keep`), the last real run and the last ``ok``
          one of each instrument and hop (the status page's), and runs still ``running``.
        - ``verifications`` started before it, except the last one of each kind (checksum or not).

        The caller keeps the sync's run lock: no run starts or ends meanwhile.  Reads follow the
        indexes (primary key ranges below the oldest night's folder, ``runs_by_start``), so a catalog
        with nothing old costs a few lookups and no write.
        """
        if self.read_only:
            return Pruned()
        since = datetime.combine(oldest_night, datetime.min.time()).timestamp()  # local, as folders are named
        with self._transaction():
            kept = self._nights_of_recent_runs(since, oldest_night)
            gaps = {instrument: _gaps(kept.get(instrument, []), oldest_night) for instrument in layouts}
            old_files = (key for instrument, layout in layouts.items()
                         for key in self._old_files(instrument, layout, gaps[instrument]))  # fmt: skip
            files = list(itertools.islice(old_files, limit + 1))  # one more: is there more?
            old_files.close()  # its read ends here, before the deletes
            runs = self._old_runs(since, set(keep_runs))
            verifications = self._old_verifications(since)
            more = max(len(files), len(runs), len(verifications)) > limit
            files, runs, verifications = files[:limit], runs[:limit], verifications[:limit]
            self._db.executemany("DELETE FROM files WHERE host = ? AND instrument = ? AND path = ?", files)
            self._db.executemany("DELETE FROM runs WHERE id = ?", [(run,) for run in runs])
            self._db.executemany("DELETE FROM verifications WHERE id = ?", [(one,) for one in verifications])
        kept_from = min((first for nights in kept.values() for first, _ in nights), default=None)
        return Pruned(len(files), len(runs), len(verifications), more, kept_from)

    @_one_line_errors
    def completed_runs(self) -> list[tuple[int, str, str, float, date | None, date | None]]:
        """``(id, instrument, hop, started, first night, last night)`` of every run that went through its
        window (as :meth:`completed_windows`, for every instrument and hop): what the missed-runs check reads."""
        query = self._completed_runs_query("id, instrument, hop, started")
        return [(run, instrument, hop, started, _night(first), _night(last))
                for run, instrument, hop, started, first, last in self._db.execute(query)]  # fmt: skip

    def _hosts(self) -> list[str]:
        """Every host the files table names, one primary-key lookup each (not a scan of every row)."""
        query = ("WITH RECURSIVE h(host) AS (SELECT min(host) FROM files UNION ALL "
                 "SELECT (SELECT min(host) FROM files WHERE host > h.host) FROM h WHERE h.host IS NOT NULL) "
                 "SELECT host FROM h WHERE host IS NOT NULL")  # fmt: skip
        return [host for (host,) in self._db.execute(query)]

    def _old_files(self, instrument: str, layout: str, gaps: list[_Gap]) -> Iterator[tuple[str, str, str]]:
        """The keys of ``instrument``'s rows of nights in ``gaps`` (the old nights no recent run covered, see
        :meth:`prune`), read as they are taken, by the night of their dated folder; none for an undated layout
        or one whose folders name no whole night (``{yyyy}/{mm}``)."""
        if not names_the_night(layout):
            return
        query, args = "SELECT path FROM files WHERE host = ? AND instrument = ?", [instrument]
        if not sorts_by_night(layout):  # every row, each judged by its night
            reads = [(query, args)]
        else:  # only the rows of each gap's folders: a key range each
            reads = [(query + (" AND path >= ?" if first else "") + " AND path < ?",
                      [*args, *(dated_folders(layout, [first]) if first else []), *dated_folders(layout, [end])])
                     for first, end in gaps]  # fmt: skip
        for host in self._hosts():
            for read, read_args in reads:
                for (path,) in self._db.execute(read, [host, *read_args]):
                    if (night := folder_night(layout, path)) is not None and _in_gaps(night, gaps):
                        yield host, instrument, path

    def _nights_of_recent_runs(self, since: float, oldest_night: date) -> dict[str, list[tuple[date, date]]]:
        """Per instrument, the nights before ``oldest_night`` that the real runs started since ``since``
        covered, merged and in order: what a catch-up recorded, kept as long as the run (see :meth:`prune`)."""
        if not _has_run_nights(self._db):
            return {}
        rows = self._db.execute("SELECT instrument, first_night, last_night FROM runs "
                                "WHERE started >= ? AND dry_run = 0 AND first_night < ?",
                                (since, oldest_night.isoformat())).fetchall()  # fmt: skip
        last_old = oldest_night - timedelta(days=1)
        nights: dict[str, list[tuple[date, date]]] = {}
        for instrument, first, last in sorted(rows):
            merged = nights.setdefault(instrument, [])
            first, last = date.fromisoformat(first), min(date.fromisoformat(last), last_old)
            if merged and first <= merged[-1][1] + timedelta(days=1):
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return nights

    def _old_runs(self, since: float, keep: set[int]) -> list[int]:
        """The runs started before ``since`` that :meth:`prune` may drop."""
        old = self._db.execute("SELECT id, instrument, hop FROM runs WHERE started < ? AND status != 'running'",
                               (since,)).fetchall()  # fmt: skip
        for instrument, hop in {(instrument, hop) for _, instrument, hop in old}:
            keep |= self._last_runs(instrument, hop)
        return [run for run, _, _ in old if run not in keep]

    def _last_runs(self, instrument: str, hop: str) -> set[int]:
        """The last real run and the last ``ok`` one of ``instrument`` on ``hop`` (the status page's
        ``runs(limit=1)`` and ``last_success``)."""
        query = ("SELECT id FROM runs WHERE instrument = ? AND hop = ? AND dry_run = 0{} "
                 "ORDER BY started DESC, id DESC LIMIT 1")  # fmt: skip
        return {row[0] for status in ("", " AND status = 'ok'")
                for row in self._db.execute(query.format(status), (instrument, hop))}  # fmt: skip

    def _old_verifications(self, since: float) -> list[int]:
        """The verifications started before ``since`` but the last one of each kind (``last_verification``)."""
        last = {row[0] for checksum in (0, 1) for row in self._db.execute(
            "SELECT id FROM verifications WHERE checksum = ? ORDER BY started DESC, id DESC LIMIT 1", (checksum,))}
        old = self._db.execute("SELECT id FROM verifications WHERE started < ?", (since,))
        return [one for (one,) in old if one not in last]

    def _write(self, *batches: tuple[str, list[tuple[object, ...]]]) -> None:
        """Each statement over its rows, all in one transaction; nothing on a read-only catalog."""
        if self.read_only:
            return
        with self._transaction():
            for statement, rows in batches:
                self._db.executemany(statement, rows)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def _night(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


#: nights from the first (None: the oldest there is) up to the end, excluded
_Gap = tuple["date | None", date]


def _gaps(kept: list[tuple[date, date]], oldest_night: date) -> list[_Gap]:
    """The nights before ``oldest_night`` outside the ``kept`` ranges (merged, in order, before it), oldest first."""
    gaps: list[_Gap] = []
    first: date | None = None
    for kept_first, kept_last in kept:
        if first is None or first < kept_first:
            gaps.append((first, kept_first))
        first = kept_last + timedelta(days=1)
    if first is None or first < oldest_night:
        gaps.append((first, oldest_night))
    return gaps


def _in_gaps(night: date, gaps: list[_Gap]) -> bool:
    return any((first is None or first <= night) and night < end for first, end in gaps)


_BELOW = "(path >= ? AND path < ?)"


def _below(folder: str) -> tuple[str, str]:
    """The key range of every path below ``folder``: ``folder/`` up to ``folder0`` (``0`` comes
    right after ``/``), which leaves out neighbours such as ``folder.bak/`` and ``folder0/``."""
    return folder + "/", folder + "0"


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection.

    A write SQLite cannot make (``OperationalError``: a full disk, a read-only state folder)
    becomes one OutputError line; other errors (a row breaking a constraint) are bugs and stay.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._cannot_write(err) from err

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.OperationalError as failed:
                err = failed
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.OperationalError as failed:  # the disk went away under it: say the first error
                err = err if err is not None else failed
        if isinstance(err, sqlite3.OperationalError):
            raise self._cannot_write(err) from err

    def _cannot_write(self, err: sqlite3.Error) -> CatalogError:
        return CatalogError(f"cannot write catalog: {err}", str(self._path))
