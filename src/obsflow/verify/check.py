"""Running one verification: list both sides of every hop, compare, look again, hash, report.

For each hop and instrument, A is the hop's source and B its destination.  The steps:

1. list every (host, instrument) once, all at the same time: one round trip per side and
   instrument (``transfer.listing.list_files``: one ``find`` over ssh), shared by the hops
   that meet at a host (the site archive is B of the first hop and A of the second);
2. compare (``verify.compare``): files younger than the settle time are in flight;
3. only if something looks missing or different: list A again (after B was listed) and B
   again, only in the dated folders holding suspects, and keep only what both looks agree on
   (Rucio's rule), so a file copied or written while the check ran is never an alarm;
4. with ``--checksum``: hashes of equal-size files come from the catalog while size and mtime
   are unchanged, else are computed on the host holding the file (one command per side, the
   data never cross the network) and recorded in the catalog (one transaction per side);
   destination files found equal are marked verified; a file whose hashes differ is listed
   again on both sides, and one that changed since the first listing is in flight;
5. the run (period, verdict, counts, JSON report) is kept in the catalog's verification table.

A host that cannot be reached makes its folders "not checked" (never "None").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

from obsflow.config import INSTRUMENTS, Config, Hop, Instrument, Location
from obsflow.errors import OutputError, TransportError, UsageError
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import (
    FileStat,
    Listing,
    hash_files,
    list_files,
    missing_disk,
    printable_name,
    unsafe_relpaths,
)
from obsflow.transfer.locks import FillerLocks, read_filler_locks
from obsflow.transfer.plan import dated_folders, modified_window, modified_within
from obsflow.transfer.remote import Shell
from obsflow.verify.compare import (
    Comparison,
    HashDiff,
    compare_hashes,
    compare_listings,
    confirm,
    folders_of,
    set_locked,
)  # fmt: skip
from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.period import Period
from obsflow.verify.report import report_dict

__all__ = ["Pair", "Progress", "Side", "plan_pairs", "verify"]

log = logging.getLogger(__name__)

#: parallel listings/hashings (each is mostly waiting on ssh or the disk)
MAX_WORKERS = 8

#: told each step of a run (a spinner on a terminal, a log line in cron)
Progress = Callable[[str], None]

_Key = tuple[str, str]  # (host, instrument)


@dataclass(frozen=True)
class Side:
    """One end of a hop for one instrument: the endpoint name and where its files are."""

    host: str  # "instruments" or an archive name (the catalog's host key)
    instrument: str
    location: Location
    archive: Location | None = None  # the archive's own folder (None: an instrument's source)
    marker: str | None = None  # the file the archive must hold (``require_marker``)

    @property
    def key(self) -> _Key:
        return (self.host, self.instrument)

    @property
    def label(self) -> str:
        """The name shown in report headings (the instrument's own name on the first hop)."""
        return self.instrument if self.host == INSTRUMENTS else self.host


@dataclass(frozen=True)
class Pair:
    """One instrument on one hop: its two sides and the dated folders to compare."""

    hop: Hop
    instrument: Instrument
    a: Side
    b: Side
    folders: tuple[str, ...]
    modified: tuple[float, float] | None = None  # an undated tree: only A's files modified in the period

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.instrument.patterns


def plan_pairs(
    config: Config, period: Period, hops: Sequence[str] = (), instruments: Sequence[str] = (), *,
    today: date | None = None,
) -> list[Pair]:
    """The (hop, instrument) pairs to verify; ``hops`` as ``FROM:TO`` labels (empty: all);
    ``today``: the run's day (default: the local date).

    Raises UsageError for an unknown hop or instrument.
    """
    known_hops = {hop.label: hop for hop in config.hops}
    for label in hops:
        if label not in known_hops:
            choices = ", ".join(known_hops) or "none configured"
            raise UsageError(f"unknown hop {label!r} (configured: {choices})", "--hop")
    for name in instruments:
        if name not in config.instruments:
            choices = ", ".join(config.instruments) or "none configured"
            raise UsageError(f"unknown instrument {name!r} (configured: {choices})", "-i")
    chosen_hops = [known_hops[label] for label in dict.fromkeys(hops)] if hops else list(config.hops)
    if not chosen_hops:
        raise UsageError("no hops configured: nothing to verify", str(config.path))
    if not config.instruments:  # else "OK: 0 files present", every morning
        raise UsageError("no instruments configured: nothing to verify", str(config.path))
    pairs = []
    dates = period.dates
    run_day = today or date.today()
    for hop in chosen_hops:
        sources = {inst.name: location for inst, location in config.host_root(hop.source)}
        dests = {inst.name: location for inst, location in config.host_root(hop.dest)}
        for inst in config.instruments.values():
            if instruments and inst.name not in instruments:
                continue
            folders = tuple(dated_folders(inst.layout, dates))
            a = _side(config, hop.source, inst.name, sources[inst.name])
            b = _side(config, hop.dest, inst.name, dests[inst.name])
            pairs.append(Pair(hop, inst, a, b, folders, modified_window(inst.layout, dates, today=run_day)))
    return pairs


def _side(config: Config, host: str, instrument: str, location: Location) -> Side:
    archive = config.archives.get(host)
    if archive is None:
        return Side(host, instrument, location)
    return Side(host, instrument, location, archive.location, archive.marker)


@dataclass(frozen=True)
class _Looked:
    """A side's listing, or why it could not be listed."""

    listing: Listing | None = None
    error: str | None = None


@dataclass(frozen=True)
class _ListJob:
    side: Side
    folders: tuple[str, ...]
    patterns: tuple[str, ...]


def verify(
    config: Config,
    period: Period,
    pairs: Sequence[Pair],
    *,
    checksum: bool = False,
    rehash: bool = False,
    catalog: Catalog | None = None,
    shell: Shell | None = None,
    progress: Progress | None = None,
    record: bool = True,
) -> Report:
    """Verify every pair and return the report (per-file findings are never raised).

    ``catalog`` supplies and stores hashes with ``checksum`` (and marks the destination
    files found equal as verified); ``rehash`` ignores the stored ones (finds damage that
    kept size and mtime).  ``progress`` is told each step.  With ``record`` the run is kept
    in the catalog's verification table (``catalog``, else the config's catalog).
    """
    shell = shell or Shell(ssh_options=config.ssh_options)
    say: Progress = progress or (lambda _step: None)
    started = time.time()
    first = _list_sides(shell, pairs, say)
    comparisons = _look_again(shell, pairs, first, _compare_listed(config, pairs, first), say)
    locks = _filler_locks(config, shell)
    for comparison in comparisons.values():
        set_locked(comparison, locks)

    hashes: dict[_Key, dict[str, str]] = {}
    hash_errors: dict[_Key, str] = {}
    fresh: dict[_Key, set[str]] = {}
    if checksum:
        say("comparing contents")
        hashes, hash_errors, fresh = _hash_sides(shell, pairs, first, comparisons, catalog, rehash)
        comparisons = _look_again_at_contents(shell, pairs, first, comparisons, hashes, say)

    folders = tuple(
        _result(pair, first, comparisons.get(index), checksum, hashes, hash_errors) for index, pair in enumerate(pairs)
    )
    if catalog is not None and fresh:
        _mark_verified(catalog, pairs, folders, fresh)
    report = _report(config, period, pairs, started, checksum, folders)
    if record:
        _record_run(config, catalog, report)
    return report


def _list_sides(shell: Shell, pairs: Sequence[Pair], say: Progress) -> dict[_Key, _Looked]:
    """List every side once, though several pairs share it (a hop's destination is the next hop's source)."""
    jobs: dict[_Key, _ListJob] = {}
    for pair in pairs:
        for side in (pair.a, pair.b):
            jobs.setdefault(side.key, _ListJob(side, pair.folders, pair.patterns))
    say(f"listing {len(jobs)} folders")
    return _list_all(shell, list(jobs.values()))


def _compare_listed(config: Config, pairs: Sequence[Pair], first: dict[_Key, _Looked]) -> dict[int, Comparison]:
    """Compare the two listings of each pair (by its index) whose sides could both be listed."""
    comparisons: dict[int, Comparison] = {}
    for index, pair in enumerate(pairs):
        a, b = first[pair.a.key].listing, first[pair.b.key].listing
        if a is not None and b is not None:
            a_files = modified_within(a, pair.modified)
            comparisons[index] = compare_listings(
                a_files, b, a_time=a.host_time, settle_s=config.settle_seconds_for(pair.instrument),
                grows=pair.instrument.grows,
            )
    return comparisons


def _report(
    config: Config, period: Period, pairs: Sequence[Pair], started: float, checksum: bool,
    folders: tuple[FolderResult, ...],
) -> Report:  # fmt: skip
    """The run's report, ending now; its settle time is the longest of the instruments checked."""
    settle = _settle_times(config, pairs)
    longest = max((seconds for _name, seconds in settle), default=config.settle_seconds)
    return Report(period, started, time.time(), longest, checksum, folders, settle)


def _filler_locks(config: Config, shell: Shell) -> FillerLocks:
    """The filler's locks, as the sync honours them: a file of a locked project is not copied yet."""
    try:
        return read_filler_locks(config, shell)
    except TransportError as err:  # its files are then judged as any other: missing is missing
        log.warning("%s", err.one_line())
        return FillerLocks()


def _settle_times(config: Config, pairs: Sequence[Pair]) -> tuple[tuple[str, float], ...]:
    """``(instrument, settle seconds)`` of each instrument checked (an instrument may set its own)."""
    instruments = {pair.instrument.name: pair.instrument for pair in pairs}
    return tuple((name, config.settle_seconds_for(inst)) for name, inst in instruments.items())


def _list_all(shell: Shell, jobs: Sequence[_ListJob], *, processes: bool = True) -> dict[_Key, _Looked]:
    """List each side's folders, all sides at once; a failure is kept as that side's error.

    Walking a tree and parsing a remote listing are CPU-bound Python, so with ``processes``
    every listing runs in its own forked worker (several cores, no GIL contention); without,
    remote listings run in threads (they wait on ssh) and local ones one after the other.
    """
    pool = _process_pool(len(jobs)) if processes else None
    if pool is not None:
        with pool:
            futures = [pool.submit(_list_one, shell, job) for job in jobs]
            return {job.side.key: future.result() for job, future in zip(jobs, futures, strict=True)}
    remote = [job for job in jobs if job.side.location.is_remote]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(remote)))) as threads:
        futures = [threads.submit(_list_one, shell, job) for job in remote]
        results = {job.side.key: _list_one(shell, job) for job in jobs if not job.side.location.is_remote}
        results.update((job.side.key, future.result()) for job, future in zip(remote, futures, strict=True))
    return results


def _process_pool(jobs: int) -> ProcessPoolExecutor | None:
    """Forked workers for ``jobs`` listings, or None where one process is as good.

    Workers pay for shipping each listing back (pickling), so they are used only when
    cores are idle (``make -l`` style): on a busy host one process does less work in all.
    """
    idle_cores = (os.cpu_count() or 1) - os.getloadavg()[0]
    if jobs < 2 or idle_cores < 1 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    workers = min(int(idle_cores) + 1, jobs)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def _list_one(shell: Shell, job: _ListJob) -> _Looked:
    side = job.side
    try:
        listing = list_files(side.location, job.folders, job.patterns, shell, side.marker)
        unmounted = missing_disk(listing, side.location, side.archive, side.marker, shell)
    except TransportError as err:
        log.warning("cannot list %s: %s", side.location, err.one_line())
        return _Looked(error=f"cannot list {side.location}: {err.one_line()}")
    if unmounted:
        return _Looked(error=unmounted)  # an instrument's folder not yet in an archive is merely empty
    location = side.location
    log.info("listed %s: %d files", location, len(listing))
    return _Looked(listing=listing)


def _look_again(
    shell: Shell,
    pairs: Sequence[Pair],
    first: dict[_Key, _Looked],
    comparisons: dict[int, Comparison],
    say: Progress,
) -> dict[int, Comparison]:
    """Confirm suspects with a second listing of both sides, only in the folders holding them."""
    wanted: dict[_Key, tuple[Side, set[str], tuple[str, ...]]] = {}
    for index, comparison in comparisons.items():
        pair = pairs[index]
        folders = folders_of(comparison.suspects, pair.folders)
        for side in (pair.a, pair.b):
            wanted.setdefault(side.key, (side, set(), pair.patterns))[1].update(folders)
    jobs = [_ListJob(side, tuple(sorted(folders)), patterns) for side, folders, patterns in wanted.values() if folders]
    if not jobs:
        return comparisons
    say(f"looking again at {sum(len(job.folders) for job in jobs)} folders with differences")
    second = _list_all(shell, jobs, processes=False)  # a few folders: not worth forking
    confirmed = {}
    for index, comparison in comparisons.items():
        pair = pairs[index]
        a_before = first[pair.a.key].listing
        a_after, b_after = second.get(pair.a.key, _Looked()).listing, second.get(pair.b.key, _Looked()).listing
        if not comparison.suspects or a_before is None or a_after is None or b_after is None:
            # Nothing to confirm, or a host went away between the looks: keep the first verdict.
            confirmed[index] = comparison
        else:
            confirmed[index] = confirm(comparison, a_before, a_after, b_after)
    return confirmed


def _look_again_at_contents(
    shell: Shell,
    pairs: Sequence[Pair],
    first: dict[_Key, _Looked],
    comparisons: dict[int, Comparison],
    hashes: dict[_Key, dict[str, str]],
    say: Progress,
) -> dict[int, Comparison]:
    """Files whose hashes differ, listed again on both sides: one that changed since its first listing
    was hashed after it changed (a file written, or a filler appending a scan, while the check ran):
    in flight, not a difference.  Only the folders holding such files are listed again."""
    suspects: dict[int, list[str]] = {}
    for index, comparison in comparisons.items():
        pair = pairs[index]
        a_hashes, b_hashes = hashes.get(pair.a.key, {}), hashes.get(pair.b.key, {})
        differs, _unhashed = compare_hashes(comparison.same_size, a_hashes, b_hashes)
        if differs:
            suspects[index] = [d.path for d in differs]
    wanted: dict[_Key, tuple[Side, set[str], tuple[str, ...]]] = {}
    for index, paths in suspects.items():
        pair = pairs[index]
        for side in (pair.a, pair.b):
            wanted.setdefault(side.key, (side, set(), pair.patterns))[1].update(folders_of(paths, pair.folders))
    jobs = [_ListJob(side, tuple(sorted(folders)), patterns) for side, folders, patterns in wanted.values() if folders]
    if not jobs:
        return comparisons
    say(f"looking again at {sum(len(job.folders) for job in jobs)} folders with different contents")
    second = _list_all(shell, jobs, processes=False)
    looked = dict(comparisons)
    for index, paths in suspects.items():
        pair = pairs[index]
        changed = set()
        for key in (pair.a.key, pair.b.key):
            before, after = first[key].listing, second.get(key, _Looked()).listing
            if before is None or after is None:
                continue  # the host went away between the looks: keep the verdict
            for path in paths:
                was, now = before.get(path), after.get(path)
                if was is None or now is None or (now.size, now.mtime) != (was.size, was.mtime):
                    changed.add(path)
        if changed:
            comparison = comparisons[index]
            looked[index] = dataclasses.replace(
                comparison, same_size=[p for p in comparison.same_size if p not in changed],
                in_flight=sorted([*comparison.in_flight, *changed]),
            )  # fmt: skip
    return looked


@dataclass(frozen=True)
class _HashJob:
    side: Side
    todo: list[str]
    stats: dict[str, FileStat]


def _hash_sides(
    shell: Shell,
    pairs: Sequence[Pair],
    first: dict[_Key, _Looked],
    comparisons: dict[int, Comparison],
    catalog: Catalog | None,
    rehash: bool,
) -> tuple[dict[_Key, dict[str, str]], dict[_Key, str], dict[_Key, set[str]]]:
    """xxh128 of every equal-size file on each side: from the catalog, else computed where it lies.

    Returns the hashes, the per-side errors, and per side the paths hashed anew in this run.
    """
    known, stored, jobs = _plan_hashing(_equal_size_paths(pairs, comparisons), first, catalog, rehash)
    errors: dict[_Key, str] = {}
    fresh_paths: dict[_Key, set[str]] = {}
    if not jobs:
        return known, errors, fresh_paths
    for job, (fresh, error) in _compute_hashes(shell, jobs):
        key = job.side.key
        if error:
            errors[key] = error
        known[key].update(fresh)
        fresh_paths[key] = set(fresh)
        log.info("hashed %d of %d files on %s", len(fresh), len(job.todo), job.side.location)
        if catalog is not None:
            news = {path: digest for path, digest in fresh.items() if stored[key].get(path) != digest}
            _record_hashes(catalog, job.side, news, job.stats)
    return known, errors, fresh_paths


def _equal_size_paths(
    pairs: Sequence[Pair], comparisons: dict[int, Comparison]
) -> dict[_Key, tuple[Side, set[str], set[str]]]:
    """Per side, the files of equal size on both ends of any of its pairs (the only ones whose contents
    matter), and the dated folders those pairs cover."""
    wanted: dict[_Key, tuple[Side, set[str], set[str]]] = {}
    for index, comparison in comparisons.items():
        pair = pairs[index]
        for side in (pair.a, pair.b):
            _, paths, folders = wanted.setdefault(side.key, (side, set(), set()))
            paths.update(comparison.same_size)
            folders.update(pair.folders)
    return wanted


def _plan_hashing(
    wanted: dict[_Key, tuple[Side, set[str], set[str]]],
    first: dict[_Key, _Looked],
    catalog: Catalog | None,
    rehash: bool,
) -> tuple[dict[_Key, dict[str, str]], dict[_Key, dict[str, str]], list[_HashJob]]:
    """Per side the hashes already known (none with ``rehash``) and those the catalog holds, and the
    jobs hashing the rest where the files lie."""
    known: dict[_Key, dict[str, str]] = {}
    stored: dict[_Key, dict[str, str]] = {}
    jobs = []
    for key, (side, paths, folders) in wanted.items():
        listing = first[key].listing
        assert listing is not None  # only listed sides have comparisons
        stats = {path: listing[path] for path in paths}
        # Only the period's folders: the catalog holds every night the host ever had.
        stored[key] = catalog.known_hashes(side.host, side.instrument, stats, folders) if catalog is not None else {}
        known[key] = {} if rehash else dict(stored[key])
        # A name hash_files refuses (a backslash) is left unhashed: "not compared" for that file only.
        todo = sorted(path for path in paths - unsafe_relpaths(paths) if path not in known[key])
        if todo:
            jobs.append(_HashJob(side, todo, stats))
    return known, stored, jobs


def _compute_hashes(shell: Shell, jobs: list[_HashJob]) -> list[tuple[_HashJob, tuple[dict[str, str], str | None]]]:
    """Each job with its hashes (or its error), the local jobs first."""
    # Remote hashing waits on ssh: threads.  Local hashing is many short reads holding the GIL
    # in between, which threads would only fight over (measured 4x slower): one after the other.
    remote = [job for job in jobs if job.side.location.is_remote]
    local = [job for job in jobs if not job.side.location.is_remote]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(remote)))) as pool:
        computed_remote = pool.map(lambda job: _hash_one(shell, job), remote)
        computed = [_hash_one(shell, job) for job in local] + list(computed_remote)
    return list(zip(local + remote, computed, strict=True))


def _hash_one(shell: Shell, job: _HashJob) -> tuple[dict[str, str], str | None]:
    """The job's hashes, computed on the host holding the files; a side that cannot be hashed is its error."""
    try:
        return hash_files(job.side.location, job.todo, shell), None
    except TransportError as err:
        return {}, f"cannot compute checksums on {job.side.location}: {err.one_line()}"


def _shown(paths: Iterable[str]) -> tuple[str, ...]:
    """Paths as the report shows them: a name whose bytes are not UTF-8 with ``\\xff`` escapes."""
    return tuple(printable_name(path) for path in paths)


def _record_hashes(catalog: Catalog, side: Side, fresh: dict[str, str], stats: dict[str, FileStat]) -> None:
    # Stored with the size and mtime of the listing (the files compared here have settled), in one transaction.
    rows = [(path, stats[path].size, stats[path].mtime, digest) for path, digest in fresh.items()]
    catalog.record_hashes(side.host, side.instrument, rows)


def _mark_verified(catalog: Catalog, pairs: Sequence[Pair], folders: Sequence[FolderResult],
                   fresh: dict[_Key, set[str]]) -> None:  # fmt: skip
    """Mark B's files whose hash was just found equal to A's, where one of the two was computed
    anew in this run (pairs judged from stored hashes alone were marked when first compared)."""
    for pair, result in zip(pairs, folders, strict=True):
        if result.error is not None or not result.hash_checked:
            continue
        new = fresh.get(pair.a.key, set()) | fresh.get(pair.b.key, set())
        if not new:
            continue
        bad = set(result.unhashed) | {d.path for d in result.hash_differs} | {d.path for d in result.size_differs}
        bad |= set(result.in_flight)  # hashed while it changed: not found equal
        equal = [path for path in new if path not in bad and path not in result.missing]
        if equal:
            catalog.mark_verified(pair.b.host, pair.b.instrument, equal)


def _record_run(config: Config, catalog: Catalog | None, report: Report) -> None:
    """Keep the run in the catalog's ``verifications`` table (opened here for a size-only run)."""
    try:
        with contextlib.ExitStack() as stack:
            if catalog is None:
                catalog = stack.enter_context(Catalog(config.catalog_path))
            catalog.record_verification(
                started=report.started, ended=report.ended, first_night=report.period.first.isoformat(),
                last_night=report.period.last.isoformat(), checksum=report.hash_checked, status=report.status,
                counts=report.counts, report=json.dumps(report_dict(report)),
            )  # fmt: skip
    except OutputError as err:  # the catalog's too (CatalogError)
        log.warning("could not record the verification in the catalog: %s", err)


def _result(
    pair: Pair,
    first: dict[_Key, _Looked],
    comparison: Comparison | None,
    checksum: bool,
    hashes: dict[_Key, dict[str, str]],
    hash_errors: dict[_Key, str],
) -> FolderResult:
    ends = {
        "hop": pair.hop.label,
        "instrument": pair.instrument.name,
        "source": pair.a.label,
        "dest": pair.b.label,
        "source_location": str(pair.a.location),
        "dest_location": str(pair.b.location),
    }
    if comparison is None:
        errors = [first[key].error for key in (pair.a.key, pair.b.key)]
        return FolderResult(**ends, hash_checked=checksum, error="; ".join(e for e in errors if e))
    hash_differs: tuple[HashDiff, ...] = ()
    unhashed: tuple[str, ...] = ()
    hash_error = None
    matched = len(comparison.same_size)
    if checksum:
        hash_error = "; ".join(hash_errors[key] for key in (pair.a.key, pair.b.key) if key in hash_errors) or None
        differs, missing_hash = compare_hashes(comparison.same_size, hashes[pair.a.key], hashes[pair.b.key])
        hash_differs, unhashed = tuple(differs), tuple(missing_hash)
        matched -= len(differs) + len(missing_hash)
    return FolderResult(
        **ends,
        missing=_shown(comparison.missing),
        size_differs=tuple(dataclasses.replace(d, path=printable_name(d.path)) for d in comparison.size_differs),
        hash_differs=tuple(dataclasses.replace(d, path=printable_name(d.path)) for d in hash_differs),
        unhashed=_shown(unhashed),
        in_flight=_shown(comparison.in_flight),
        skipped=_shown(comparison.skipped),
        refused=tuple(dataclasses.replace(r, path=printable_name(r.path)) for r in comparison.refused),
        locked=tuple(dataclasses.replace(item, path=printable_name(item.path)) for item in comparison.locked),
        grown=_shown(comparison.grown),
        matched=matched,
        hash_checked=checksum,
        hash_error=hash_error,
    )
