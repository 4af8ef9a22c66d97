"""The SQLite catalog: every file seen on every host, its xxh128, and every sync run.

One file (``Config.catalog_path``), WAL mode so the status page and ``verify`` can read
while a sync writes.  Shared by sync and verify.

Files are keyed by ``(host, instrument, path)``: ``host`` is the hop endpoint name
(``"instruments"`` or an archive name from the config), ``instrument`` the instrument name,
``path`` the file's path relative to that instrument's root on that host (``2016/0907/x.fits``).

Invariants: a hash is stored together with the size and mtime it was computed for; when a
later listing shows another size or mtime the hash is dropped (``observe``), so a stored
hash always describes the file as last seen.  ``copied``/``verified`` are set only by
``record_copy`` after the destination's hash was found equal to the source's.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from obsflow.errors import OutputError

__all__ = ["Catalog", "FileRecord", "RunRecord"]

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
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_instrument ON runs (instrument, hop, started);
"""

# Store a hash with the size and mtime it describes; copied/verified survive only if those match.
_UPSERT_HASH = """
INSERT INTO files (host, instrument, path, size, mtime, xxh128, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host, instrument, path) DO UPDATE SET
  copied = CASE WHEN size = excluded.size AND mtime = excluded.mtime THEN copied END,
  verified = CASE WHEN size = excluded.size AND mtime = excluded.mtime THEN verified END,
  size = excluded.size, mtime = excluded.mtime, xxh128 = excluded.xxh128
"""

#: run statuses: "ok" everything done, "incomplete" something left for a later run,
#: "failed" could not run (host unreachable...), "running" started and never finished (killed)
RUN_STATUSES = ("ok", "incomplete", "failed", "running")
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


class Catalog:
    """The catalog database; use as a context manager (``with Catalog(path) as cat:``)."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise OutputError(f"cannot open catalog: {err}", path) from err
        self.path = path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- files -------------------------------------------------------------------------------

    def observe(self, host: str, instrument: str, files: Mapping[str, object], now: float | None = None) -> None:
        """Record that ``host`` holds ``files`` (``{path: FileStat}``) as listed now.

        New files get ``first_seen``; a file whose size or mtime changed loses its hash and
        its copied/verified marks (they described the old content).  Unchanged files are
        not written, so a no-op run costs one read.
        """
        now = time.time() if now is None else now
        known = {
            path: (size, mtime)
            for path, size, mtime in self._db.execute(
                "SELECT path, size, mtime FROM files WHERE host = ? AND instrument = ?", (host, instrument)
            )
        }
        rows = []
        for path, st in files.items():
            seen = (st.size, st.mtime)  # type: ignore[attr-defined]
            if known.get(path) != seen:
                rows.append((host, instrument, path, *seen, now))
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                """INSERT INTO files (host, instrument, path, size, mtime, first_seen) VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (host, instrument, path) DO UPDATE SET
                     size = excluded.size, mtime = excluded.mtime, xxh128 = NULL, copied = NULL, verified = NULL""",
                rows,
            )

    def record_hash(self, host: str, instrument: str, path: str, size: int, mtime: float, xxh128: str) -> None:
        """Store the hash of a file as it is now (size and mtime it was computed for)."""
        now = time.time()
        with self._transaction():
            self._upsert_hash(host, instrument, path, size, mtime, xxh128, now)

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
        with self._transaction():
            self._db.executemany(_UPSERT_HASH, [(source, instrument, p, size, mtime, sh, now)
                                                for p, size, mtime, sh, _ in copies])  # fmt: skip
            self._db.executemany(_UPSERT_HASH, [(dest, instrument, p, size, mtime, dh, now)
                                                for p, size, mtime, _, dh in copies])  # fmt: skip
            self._db.executemany(
                "UPDATE files SET copied = ?, verified = ? WHERE host = ? AND instrument = ? AND path = ?",
                [(now, now, dest, instrument, p) for p, _, _, sh, dh in copies if sh == dh],
            )

    def mark_verified(self, host: str, instrument: str, paths: Iterable[str], now: float | None = None) -> None:
        """Mark files on ``host`` as verified (their hash was found equal to the source's)."""
        now = time.time() if now is None else now
        with self._transaction():
            self._db.executemany(
                "UPDATE files SET verified = ? WHERE host = ? AND instrument = ? AND path = ? AND verified IS NULL",
                [(now, host, instrument, path) for path in paths],
            )

    def _upsert_hash(self, host: str, instrument: str, path: str, size: int, mtime: float, xxh: str,
                     now: float) -> None:  # fmt: skip
        self._db.execute(_UPSERT_HASH, (host, instrument, path, size, mtime, xxh, now))

    def get(self, host: str, instrument: str, path: str) -> FileRecord | None:
        """The record of one file, or None if never seen."""
        row = self._db.execute(
            "SELECT * FROM files WHERE host = ? AND instrument = ? AND path = ?", (host, instrument, path)
        ).fetchone()
        return FileRecord(*row) if row else None

    def files(self, host: str, instrument: str | None = None, prefix: str = "") -> Iterator[FileRecord]:
        """Every file recorded on ``host`` (optionally one instrument, paths starting with ``prefix``)."""
        query = "SELECT * FROM files WHERE host = ?"
        args: list[object] = [host]
        if instrument is not None:
            query += " AND instrument = ?"
            args.append(instrument)
        if prefix:
            query += " AND substr(path, 1, ?) = ?"
            args += [len(prefix), prefix]
        for row in self._db.execute(query + " ORDER BY instrument, path", args):
            yield FileRecord(*row)

    def known_hashes(self, host: str, instrument: str, files: Mapping[str, object]) -> dict[str, str]:
        """Stored hashes of ``files`` (``{path: FileStat}``) whose size and mtime still match."""
        known = {}
        rows = self._db.execute(
            "SELECT path, size, mtime, xxh128 FROM files WHERE host = ? AND instrument = ? AND xxh128 IS NOT NULL",
            (host, instrument),
        )
        for path, size, mtime, xxh in rows:
            st = files.get(path)
            if st is not None and st.size == size and st.mtime == mtime:  # type: ignore[attr-defined]
                known[path] = xxh
        return known

    # ---- runs --------------------------------------------------------------------------------

    def start_run(self, hop: str, instrument: str, dry_run: bool = False, now: float | None = None) -> int:
        """Open a run row (status ``running`` until :meth:`finish_run`); return its id."""
        now = time.time() if now is None else now
        cursor = self._db.execute(
            "INSERT INTO runs (started, hop, instrument, dry_run) VALUES (?, ?, ?, ?)",
            (now, hop, instrument, int(dry_run)),
        )
        return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int], message: str = "") -> None:
        """Close a run with its status (see RUN_STATUSES) and counts (keys from RUN_COUNTS)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        sets = ", ".join(f"{key} = ?" for key in RUN_COUNTS if key in counts)
        values = [counts[key] for key in RUN_COUNTS if key in counts]
        self._db.execute(
            f"UPDATE runs SET ended = ?, status = ?, message = ?{', ' + sets if sets else ''} WHERE id = ?",
            [time.time(), status, message, *values, run_id],
        )

    def runs(self, limit: int = 100, instrument: str | None = None, hop: str | None = None) -> list[RunRecord]:
        """The latest runs, newest first."""
        query, args = "SELECT * FROM runs WHERE 1 = 1", []
        if instrument is not None:
            query, args = query + " AND instrument = ?", [*args, instrument]
        if hop is not None:
            query, args = query + " AND hop = ?", [*args, hop]
        rows = self._db.execute(query + " ORDER BY started DESC, id DESC LIMIT ?", [*args, limit])
        return [RunRecord(*row[:6], bool(row[6]), *row[7:]) for row in rows]

    def last_success(self, instrument: str, hop: str | None = None) -> float | None:
        """Start time of the latest ``ok`` (not dry) run of ``instrument`` (on ``hop`` if given)."""
        query = "SELECT max(started) FROM runs WHERE instrument = ? AND status = 'ok' AND dry_run = 0"
        args: list[object] = [instrument]
        if hop is not None:
            query += " AND hop = ?"
            args.append(hop)
        row = self._db.execute(query, args).fetchone()
        return row[0] if row and row[0] is not None else None

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
