"""Running one instrument over one hop: list both sides, plan, tidy, copy, check, record.

Invariants kept here (see also plan.py, rsync.py, staging.py, tidy.py):

- the source is only ever read;
- a destination file that differs is never overwritten (plan: conflict; rsync: ``--ignore-existing``;
  staging: a final name taken meanwhile), with one exception for a source whose files only grow
  (``grows = true``, SDFITS products): a larger, newer source file replaces the destination's copy
  when that copy is one a sync made and nobody changed since, and the older copy is first moved
  whole into ``.obsflow-superseded/<time>/``: nothing is lost; such folders are removed only once
  older than the instrument's ``keep_superseded_days`` (if it has one);
- a copy counts only when rsync's end-to-end xxh128 (``%C``, checked by the receiver against
  the sender's) is recorded and the size and mtime rsync saw equal the listing;
- a file that may still change (modified within RECHECK_AFTER_S of the listing, or any file of a
  source that grows or that a filler writes: the filler may come back hours after a project's
  last scan) is copied into the staging folder and takes its final name only once a second
  listing after the copy found its source unchanged; a file that changed meanwhile is removed
  again and reported as still being written, to be taken by a later run.  So a copy under its
  final name is always one state of its source, whenever the run is stopped;
- a file whose time is set ahead of its host's clock, whose mtime cannot show it settled, is
  copied only once a listing the settle time after the first found it unchanged: the wait comes
  before its copy, so a run stopped meanwhile leaves nothing under the final name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from itertools import compress, repeat
from operator import ne
from pathlib import Path

from obsflow.config import Location
from obsflow.errors import HostUnreachable, PathEscapeError, TransportError
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import (
    SUPERSEDED_DIR,
    SUPERSEDED_VERSION,
    FileStat,
    Listing,
    folder_of,
    hash_files,
    list_files,
    missing_disk,
)
from obsflow.transfer.localcopy import python_copy
from obsflow.transfer.locks import FillerLocks
from obsflow.transfer.plan import CLOCK_AHEAD_S, HopPlan, modified_within, plan_copy, take_grown
from obsflow.transfer.remote import Shell
from obsflow.transfer.report import HopOutcome, Progress
from obsflow.transfer.rsync import Copied, RsyncResult, has_rsync, prints_as, rsync_copy
from obsflow.transfer.staging import clear_staging, publish, staging_of
from obsflow.transfer.tidy import plan_prune, plan_tidy, prune_superseded, remove_copies, tidy

__all__ = ["HopJob", "HopSettings", "run_hop"]

log = logging.getLogger(__name__)

#: many small files go in this many parallel rsync streams (see _copy)
PARALLEL_STREAMS = 3
PARALLEL_MIN_FILES = 256
STOPPED = -1  # RsyncResult.returncode of an rsync that did not finish
#: files modified less than this long before the listing are stat'ed again after their copy
RECHECK_AFTER_S = 3600.0
_UNKNOWN = object()  # a hash no file has
_last_hop: list[object] = []  # see _keep_until_exit


@dataclass(frozen=True)
class HopJob:
    """One instrument over one hop: where from, where to, which dated folders.

    ``modified``: for an undated tree (folders = the whole root), the window as unix seconds
    ``[since, until)``: only source files modified within it are planned.  ``settle_s``: a file
    modified more recently (by the source host's clock) is still being written.
    """

    hop: str  # "instruments:suth"
    source_host: str  # "instruments" or an archive name (catalog key)
    dest_host: str
    instrument: str
    source: Location
    dest: Location
    folders: tuple[str, ...]
    patterns: tuple[str, ...]
    modified: tuple[float, float] | None = None
    settle_s: float = 120.0
    grows: bool = False  # a grown file may replace our own older copy (see plan.take_grown)
    keep_superseded_days: float | None = None  # older copies kept longer are removed; None: kept forever
    source_archive: Location | None = None  # the archive's own folder, when the source is an archive
    dest_archive: Location | None = None  # the archive's own folder (never created by the sync)
    source_marker: str | None = None  # a file that must exist on the source host (config.ARCHIVE_MARKER)
    dest_marker: str | None = None  # the same on the destination host
    nights: tuple[date, date] | None = None  # the window's first and last night (kept with the run)


@dataclass(frozen=True)
class HopSettings:
    """How hops run (from the config and the command line)."""

    locks: FillerLocks = field(default_factory=FillerLocks)
    watches_filler: bool = False  # the config names filler lock folders: a filler appends to files at any time
    ssh_options: tuple[str, ...] = ()
    rsync_options: tuple[str, ...] = ()
    dry_run: bool = False
    shell: Shell = field(default_factory=Shell)
    keep_open: tuple[int, ...] = ()  # descriptors rsync inherits (the run lock: see runlock.RunLock)


def run_hop(
    job: HopJob,
    settings: HopSettings,
    catalog: Catalog,
    progress: Progress | None = None,
    before_copy: Callable[[HopPlan], None] | None = None,
) -> HopOutcome:
    """Sync one instrument over one hop; never raises for a host or file problem (see HopOutcome).

    ``before_copy`` is a seam for tests: it runs between planning and copying.
    """
    started = time.monotonic()
    outcome = HopOutcome(job.hop, job.instrument, str(job.source), str(job.dest), dry_run=settings.dry_run)
    run_id = catalog.start_run(job.hop, job.instrument, dry_run=settings.dry_run, nights=job.nights)
    try:
        _run(job, settings, catalog, outcome, progress, before_copy)
    except HostUnreachable as err:
        outcome.failure = err.one_line()
    except (TransportError, PathEscapeError) as err:
        outcome.failure = err.one_line()
    outcome.seconds = time.monotonic() - started
    catalog.finish_run(run_id, outcome.status, outcome.counts(), outcome.failure or "")
    return outcome


def _run(
    job: HopJob,
    settings: HopSettings,
    catalog: Catalog,
    outcome: HopOutcome,
    progress: Progress | None,
    before_copy: Callable[[HopPlan], None] | None,
) -> None:
    shell = settings.shell
    sides = ((job.source, job.source_marker), (job.dest, job.dest_marker))
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Both listings at once (one round trip per side): a remote one in a thread of its own, waiting
        # for its host; a local one here, after the catalog is read (two threads busy with Python hand
        # the GIL back and forth at every stat and row: together they took twice as long).
        remote = [pool.submit(list_files, where, job.folders, job.patterns, shell, marker) if where.is_remote else None
                  for where, marker in sides]  # fmt: skip
        src_stored = catalog.stored(job.source_host, job.instrument, job.folders)
        dst_stored = catalog.stored(job.dest_host, job.instrument, job.folders)
        src_listing, dst_listing = (future or _run_here(list_files, where, job.folders, job.patterns, shell, marker)
                                    for future, (where, marker) in zip(remote, sides, strict=True))  # fmt: skip
        # The destination's listing (here, usually) is taken in while the source's is still coming.
        dest_unmounted, dst_known = None, {}
        if dst_listing.exception() is None:
            dest = dst_listing.result()
            dest_unmounted = missing_disk(dest, job.dest, job.dest_archive, job.dest_marker, shell)
            if not dest_unmounted:  # an empty mount point or another disk must not rewrite what the catalog knows
                dst_known = catalog.observe(job.dest_host, job.instrument, dest, folders=job.folders, stored=dst_stored)
            del dst_stored  # 10,000s of objects freed now, while the source's listing is still coming
        source = src_listing.result()  # a source that cannot be listed is the failure told (before the destination's)
        dest = dst_listing.result()
    outcome.failure = missing_disk(source, job.source, job.source_archive, job.source_marker, shell) or dest_unmounted
    if outcome.failure:
        return
    src_known = catalog.observe(job.source_host, job.instrument, source, folders=job.folders, stored=src_stored)
    planned = modified_within(source, job.modified)
    plan = plan_copy(planned, dest, source_time=source.host_time, settle_s=job.settle_s, locks=settings.locks)
    _hash_checks(job, plan, (source, src_known), (dest, dst_known), catalog, shell,
                 verify_present=not settings.dry_run)  # fmt: skip
    if job.grows and plan.conflicts:
        take_grown(plan, planned, dest, catalog.copied_here(job.dest_host, job.instrument, plan.conflicts),
                   source_time=source.host_time)
    outcome.present = len(plan.present)
    outcome.in_flight, outcome.locked = list(plan.in_flight), list(plan.locked)
    outcome.conflicts, outcome.refused = list(plan.conflicts), list(plan.refused)
    for path in plan.conflicts:
        log.warning("conflict: %s differs at %s; both kept", path, job.dest)
    if settings.dry_run:
        outcome.copied, outcome.updated = [*plan.copy, *plan.update], list(plan.update)
        outcome.copied_bytes = plan.copy_bytes + plan.update_bytes
        outcome.pruned = _old_versions(job, dest)
        return
    tidy(job.dest, plan_tidy(dest.temps, dest), shell)
    if dest.staged:  # copies a stopped run left unchecked: never to be published
        clear_staging(job.dest, shell)
    if before_copy is not None:
        before_copy(plan)
    outcome.in_flight += _unsettled_ahead(job, settings, plan, source.host_time)
    if plan.copy or plan.update:
        _copy_and_accept(job, settings, catalog, plan, outcome, progress, source.host_time)
    _prune(job, dest, outcome, shell)
    _keep_until_exit(source, dest, planned, plan, src_known, dst_known, src_stored)


def _keep_until_exit(*objects: object) -> None:
    """Hold the hop's listings and plan until the next hop replaces them, or the process ends: freeing
    the 10,000s of objects of a no-op's listings took 3-4 ms between the last hop and the report."""
    _last_hop[:] = objects


def _run_here(call: Callable[..., Listing], *args: object) -> Future[Listing]:
    """``call(*args)`` run in this thread, its result or error kept in a done Future (as a pool's)."""
    future: Future[Listing] = Future()
    try:
        future.set_result(call(*args))
    except Exception as err:  # noqa: BLE001 - raised by .result(), in the order the caller asks for them
        future.set_exception(err)
    return future


def _unsettled_ahead(job: HopJob, settings: HopSettings, plan: HopPlan, source_time: float) -> list[str]:
    """Take out of ``plan`` (and return) the files set ahead that changed within the settle time.

    A file set more than CLOCK_AHEAD_S ahead of its host's clock counts as settled though its time
    cannot say how long it rested (a writer on an NFS server whose clock runs days ahead): it must be
    seen unchanged for the settle time since the listing, or it may be a writer's pause.  The run waits
    for that before the copy, never with a copy under its final name that is not yet accepted.
    """
    ahead = [p for part in (plan.copy, plan.update) for p, st in part.items() if st.mtime > source_time + CLOCK_AHEAD_S]
    if not ahead:
        return []
    after = _relist(job, ahead, settings.shell)
    wait_s = job.settle_s - (after.host_time - source_time)
    if wait_s > 0:
        log.info("waiting %.0f s: %d file(s) dated ahead of %s's clock must stay unchanged", wait_s, len(ahead),
                 job.source)  # fmt: skip
        time.sleep(wait_s)
        after = _relist(job, ahead, settings.shell)
    changed = []
    for path in ahead:
        part = plan.copy if path in plan.copy else plan.update
        now, expected = after.get(path), part[path]
        if now is None or (now.size, now.mtime) != (expected.size, expected.mtime):
            del part[path]
            changed.append(path)
    return changed


def _old_versions(job: HopJob, dest: Listing) -> list[str]:
    """The destination's superseded versions older than the instrument keeps them."""
    if job.keep_superseded_days is None:
        return []
    return plan_prune(dest.superseded, job.keep_superseded_days, time.time())


def _prune(job: HopJob, dest: Listing, outcome: HopOutcome, shell: Shell) -> None:
    old = _old_versions(job, dest)
    if not old:
        return
    try:
        prune_superseded(job.dest, old, shell)
    except (OSError, TransportError) as err:
        outcome.errors.append(f"{SUPERSEDED_DIR}: old versions not removed ({err})")
        return
    outcome.pruned = old
    log.info("removed %d superseded version(s) older than %g days at %s", len(old), job.keep_superseded_days,
             job.dest)  # fmt: skip


def _copy_and_accept(
    job: HopJob,
    settings: HopSettings,
    catalog: Catalog,
    plan: HopPlan,
    outcome: HopOutcome,
    progress: Progress | None,
    source_time: float,
) -> None:
    """Settled files straight to their final names; files that may still change (and grown files
    over our own older copies) through the staging folder, published only if their source did not
    change during the copy (see staging.py)."""
    if progress is not None:
        progress.start(f"{job.hop} {job.instrument}", len(plan.copy) + len(plan.update),
                       plan.copy_bytes + plan.update_bytes)  # fmt: skip
    second_look = _second_look(job, settings, plan.copy, source_time)
    direct = {p: st for p, st in plan.copy.items() if p not in second_look}
    staged = {**{p: plan.copy[p] for p in second_look}, **plan.update}
    superseded = f"{SUPERSEDED_DIR}/{time.strftime(SUPERSEDED_VERSION, time.gmtime())}"  # UTC: never repeats
    stopped: TransportError | None = None
    try:
        for planned, where in ((direct, job.dest), (staged, staging_of(job.dest))):
            if stopped is not None:
                break
            if not planned:
                continue
            planned, result, stopped = _copy_into(job, settings, catalog, planned, where, progress, outcome)
            result = _confirmed(job, result, settings.shell, where)
            good = _judged(job, settings, planned, result, outcome, where, report_missing=stopped is None)
            if where != job.dest:
                good, moves_stopped = _published(job, settings, good, plan.update, superseded, outcome)
                stopped = stopped or moves_stopped  # what did take its final name is counted first
            _record(job, catalog, planned, good, outcome)
    finally:
        if progress is not None:
            progress.stop()
    outcome.updated = [path for path in outcome.copied if path in plan.update]
    if outcome.updated:
        log.warning("%d grown file(s) replaced at %s; the older copies are in %s/", len(outcome.updated), job.dest,
                    superseded)  # fmt: skip
    if stopped is not None:
        raise stopped


@dataclass
class _Streams:
    """What one copy's rsync streams reported: files landed, files sent though not asked for, and of the
    streams that ended well (at the final destination: judged and recorded as they ended) their files
    and the unasked files they removed."""

    landed: list[Copied] = field(default_factory=list)
    unasked: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)


def _copy_into(
    job: HopJob,
    settings: HopSettings,
    catalog: Catalog,
    planned: dict[str, FileStat],
    where: str,
    progress: Progress | None,
    outcome: HopOutcome,
) -> tuple[dict[str, FileStat], RsyncResult, TransportError | None]:
    """Copy ``planned`` into ``where``: the files still to judge (not those of streams accepted as they
    ended), rsync's result for them, and the error that stopped it partway (None: it ended)."""
    streams = _Streams()

    def accept(part: dict[str, FileStat], part_result: RsyncResult) -> None:
        """A stream that ended well, judged and recorded while the others still copy."""
        _record(job, catalog, part, _judged(job, settings, part, part_result, outcome, job.dest), outcome)
        streams.accepted.update(part)
        streams.refused.update(part_result.unasked)

    stopped = None
    try:
        result = _copy(job, settings, planned, progress, streams.landed, where,
                       on_stream_done=accept if where == job.dest else None, unasked_into=streams.unasked)  # fmt: skip
    except TransportError as err:
        # rsync stopped partway (a full disk, a lost connection): what it reported so far is checked at
        # the destination and counted, a file it was not asked for removed; the hop then fails with
        # rsync's reason.
        stopped = err
        unasked = [p for p in streams.unasked if p not in streams.refused]
        result = RsyncResult(copied=streams.landed, returncode=STOPPED, unasked=unasked)
    if streams.accepted:
        planned = {p: st for p, st in planned.items() if p not in streams.accepted}
        result.copied = [c for c in result.copied if c.path not in streams.accepted]
    return planned, result, stopped


def _second_look(job: HopJob, settings: HopSettings, files: dict[str, FileStat], source_time: float) -> set[str]:
    """The files to list again after their copy, before they count: those modified within
    RECHECK_AFTER_S of the listing, and every file of a source that may be appended to at any time.

    A file that grows in place (an SDFITS product, or any file of a source a filler writes) may get
    its next rows hours after its last ones, during its copy: rsync then sends what it finds when
    it opens the file, under the size and mtime it listed.  (With both ends remote, rsync prints
    the mtime in the source host's zone: it cannot be compared, so every file is looked at again.)
    """
    if job.grows or settings.watches_filler or not _prints_our_time(job):
        return set(files)
    horizon = max(RECHECK_AFTER_S, 10 * job.settle_s)
    return {p for p, st in files.items() if source_time - st.mtime < horizon}


def _hash_checks(
    job: HopJob,
    plan: HopPlan,
    source_side: tuple[Listing, dict[str, str]],
    dest_side: tuple[Listing, dict[str, str]],
    catalog: Catalog,
    shell: Shell,
    verify_present: bool,
) -> None:
    """Let hashes decide where size and mtime cannot.

    ``check`` files (same size, other mtime) become present or conflicts.  With
    ``verify_present``, present files are compared too unless the catalog already holds equal
    hashes for both sides (computed once per file, e.g. by a copy that was killed before it
    was recorded, or an archive filled by other means); a mismatch is a conflict.
    Each side comes with the catalog's still-valid hashes of its files (``Catalog.observe``).
    """
    (source, src_known), (dest, dst_known) = source_side, dest_side
    present = plan.present if verify_present else []
    # Present files without two equal known hashes (in bulk: a no-op run of 10,000 files checks them all).
    unproven = list(compress(present, map(ne, map(src_known.get, present), map(dst_known.get, present, repeat(_UNKNOWN)))))
    todo = plan.check + unproven
    if not todo:
        return
    src_new = hash_files(job.source, [p for p in todo if p not in src_known], shell)
    dst_new = hash_files(job.dest, [p for p in todo if p not in dst_known], shell)
    for host, listing, new in ((job.source_host, source, src_new), (job.dest_host, dest, dst_new)):
        rows = [(path, listing[path].size, listing[path].mtime, xxh) for path, xxh in new.items()]
        catalog.record_hashes(host, job.instrument, rows)
    src_known.update(src_new)
    dst_known.update(dst_new)
    same = [p for p in todo if p in src_known and src_known[p] == dst_known.get(p)]
    catalog.mark_verified(job.dest_host, job.instrument, same)
    differ = set(todo) - set(same)
    plan.present = sorted(set(plan.present) - differ | (set(plan.check) - differ))
    plan.conflicts = sorted(set(plan.conflicts) | differ)
    plan.check.clear()


def _copy(
    job: HopJob,
    settings: HopSettings,
    files: dict[str, FileStat],
    progress: Progress | None,
    landed_into: list[Copied],
    into: Location,
    on_stream_done: Callable[[dict[str, FileStat], RsyncResult], None] | None = None,
    unasked_into: list[str] | None = None,
) -> RsyncResult:
    """Copy ``files`` into ``into`` (the destination or its staging folder); each file rsync reports
    is also appended to ``landed_into`` at once (so that the caller still has the reports if rsync
    then stops partway).

    ``on_stream_done(files, result)``: called here, as each of parallel rsync streams ends well,
    with its files and report (whose copies are then left out of the result returned), so that
    they are accepted while the other streams still copy.  ``unasked_into`` gets each file the sender
    sent though not asked for, as it is reported (for the caller, if rsync then stops partway)."""
    if not files:
        return RsyncResult()
    lock = threading.Lock()

    def landed(copied: Copied) -> None:
        with lock:
            landed_into.append(copied)
            if progress is not None:
                progress.advance(copied.size)

    def sent_unasked(path: str) -> None:
        if unasked_into is not None:
            with lock:
                unasked_into.append(path)

    paths = list(files)
    if not has_rsync():
        if job.source.is_remote or job.dest.is_remote:
            raise TransportError("rsync is not installed here; it is needed to copy over ssh", "PATH")
        log.warning("rsync not found: copying with the slower pure-Python copy")
        return python_copy(Path(job.source.path), Path(into.path), paths, landed)

    def run(part: Sequence[str]) -> RsyncResult:
        return rsync_copy(
            job.source, into, part, ssh_options=settings.ssh_options, extra=settings.rsync_options,
            on_copied=landed, control_dir=settings.shell.control_dir, pass_fds=settings.keep_open, shell=settings.shell,
            on_unasked=sent_unasked,
            basis=None if into == job.dest else "..",  # staged: the final copy, if any, is the delta's basis
        )  # fmt: skip

    if len(paths) < PARALLEL_MIN_FILES:
        return run(paths)
    # rsync builds its whole file list before sending (and a push's sender reads the list one byte per
    # read()); parallel streams over the shared connection overlap one stream's list with another's data.
    results = []
    with ThreadPoolExecutor(max_workers=PARALLEL_STREAMS) as pool:
        streams = {pool.submit(run, part): part for part in _balanced(files, PARALLEL_STREAMS)}
        for ended in as_completed(streams):
            result = ended.result()  # a stream that failed outright fails the copy, once the others end
            if on_stream_done is not None and result.returncode == 0:
                on_stream_done({p: files[p] for p in streams[ended]}, result)
            else:
                results.append(result)
    merged = RsyncResult(returncode=max((r.returncode for r in results), default=0))
    for part in results:
        merged.copied += part.copied
        merged.errors += part.errors
        merged.unasked += part.unasked
    return merged


def _balanced(files: dict[str, FileStat], streams: int) -> list[list[str]]:
    """Split the files into ``streams`` lists of about equal bytes (largest first, greedy)."""
    parts: list[list[str]] = [[] for _ in range(streams)]
    loads = [0] * streams
    for path, st in sorted(files.items(), key=lambda item: -item[1].size):
        i = loads.index(min(loads))
        parts[i].append(path)
        loads[i] += st.size
    return [sorted(part) for part in parts if part]


def _judged(
    job: HopJob,
    settings: HopSettings,
    planned: dict[str, FileStat],
    result: RsyncResult,
    outcome: HopOutcome,
    where: Location,
    report_missing: bool = True,
) -> list[Copied]:
    """The copies at ``where`` whose source still is what was planned; the others are removed there.

    rsync reports the size and mtime it saw (``%l``, ``%M``): any difference from the listing means
    the file changed between listing and copy.  The files :func:`_second_look` names are listed at
    the source again after the copy, to catch a writer that came back during the copy itself.
    """
    _refuse_unasked(result.unasked, settings, outcome, where)
    copied = {c.path: c for c in result.copied if c.path in planned}
    same_clock = _prints_our_time(job)
    stale = [
        p for p, c in copied.items()
        if c.size != planned[p].size or (same_clock and not prints_as(c.mtime_text, planned[p].mtime))
    ]  # fmt: skip
    look_again = [p for p in copied if p not in stale and where != job.dest]
    if look_again:
        after = _relist(job, look_again, settings.shell)
        for path in look_again:
            now, expected = after.get(path), planned[path]
            if now is None or (now.size, now.mtime) != (expected.size, expected.mtime):
                stale.append(path)
    if stale:
        log.warning("%d file(s) changed while being copied; removed the copies, will retry later", len(stale))
        remove_copies(where, stale, settings.shell)
        outcome.in_flight.extend(stale)
    missing = [p for p in planned if p not in copied]
    if missing and report_missing:  # else the hop fails as a whole, with rsync's reason
        detail = "; ".join(result.errors[:3]) or "not reported by rsync"
        outcome.errors.extend(f"{p}: not copied ({detail})" for p in missing)
    dropped = set(stale)
    return [c for p, c in copied.items() if p not in dropped]


def _refuse_unasked(unasked: list[str], settings: HopSettings, outcome: HopOutcome, where: Location) -> None:
    """Files a sender sent though not asked for (rsync's own check is off, see rsync.py): this
    run created them (``--ignore-existing``), so they are removed again, and each is an error."""
    if not unasked:
        return
    log.error("the source sent %d file(s) not asked for; removed them from %s", len(unasked), where)
    remove_copies(where, unasked, settings.shell)
    outcome.errors.extend(f"{p}: sent by the source though not asked for; removed from {where}" for p in unasked)


def _published(
    job: HopJob, settings: HopSettings, good: list[Copied], updates: Collection[str], superseded: str,
    outcome: HopOutcome,
) -> tuple[list[Copied], TransportError | None]:
    """Move checked copies from the staging folder to their final names; those whose name was
    taken meanwhile (by someone else: the plan found it free), or behind a folder that is a symlink or a
    file, are conflicts, and their copy goes.  Returns the copies moved, and why the moves stopped
    partway (a full disk), if they did."""
    done = publish(job.dest, [c.path for c in good if c.path not in updates],
                   [c.path for c in good if c.path in updates], superseded, settings.shell)  # fmt: skip
    if done.name_taken:
        for path in done.name_taken:
            log.warning("conflict: %s appeared at %s during its copy (or a folder on its way is a symlink or a "
                        "file); both kept", path, job.dest)  # fmt: skip
        remove_copies(staging_of(job.dest), done.name_taken, settings.shell)
        outcome.conflicts.extend(done.name_taken)
    moved = set(done.moved)
    return [c for c in good if c.path in moved], done.stopped


def _record(job: HopJob, catalog: Catalog, planned: dict[str, FileStat], good: list[Copied],
            outcome: HopOutcome) -> None:  # fmt: skip
    """Count and catalog the copies that made it to their final names."""
    catalog.record_copy(
        job.source_host, job.dest_host, job.instrument,
        [(c.path, planned[c.path].size, planned[c.path].mtime, c.xxh128, c.xxh128) for c in good],
    )  # fmt: skip
    outcome.copied += [c.path for c in good]
    outcome.copied_bytes += sum(c.size for c in good)
    outcome.sent_bytes += sum(c.sent if c.sent >= 0 else c.size for c in good)


def _prints_our_time(job: HopJob) -> bool:
    """True when rsync's ``%M`` is in this host's time zone (rsync runs here, not on a remote source)."""
    return not (job.source.is_remote and job.dest.is_remote)


def _relist(job: HopJob, copied: Collection[str], shell: Shell, where: Location | None = None) -> Listing:
    """The folders holding ``copied``, listed again at the source (or at ``where``)."""
    folders = sorted({folder_of(p) for p in copied})
    return list_files(where or job.source, folders, job.patterns, shell)


def _confirmed(job: HopJob, result: RsyncResult, shell: Shell, where: Location) -> RsyncResult:
    """After an rsync that failed, only the reported copies that really reached their final name.

    rsync prints a file's report line as soon as its data went through, before the receiver
    has checked it and renamed it into place: after a failure (a full disk, a lost
    connection, a file that failed its check twice) a reported file may be missing or lie
    hidden as a partial.  Its final name holding the size and mtime rsync reported is proof:
    rsync writes into a hidden temp name and sets the mtime when it renames a checked file.
    (Whether the copy is still what was planned is :func:`_accept`'s to decide.)
    """
    if result.returncode == 0 or not result.copied:
        return result
    try:
        there = _relist(job, [c.path for c in result.copied], shell, where=where)
    except TransportError as err:  # e.g. the connection is gone: nothing is proven, the next run sees
        log.warning("cannot check what reached %s: %s", where, err.one_line())
        there = Listing()
    same_clock = _prints_our_time(job)
    real = [
        c for c in result.copied
        if (st := there.get(c.path)) is not None and st.kind == "f" and st.size == c.size
        and (not same_clock or prints_as(c.mtime_text, st.mtime))
    ]  # fmt: skip
    if len(real) < len(result.copied):
        log.warning("%d file(s) reported by rsync did not reach %s", len(result.copied) - len(real), where)
    return RsyncResult(copied=real, errors=result.errors, returncode=result.returncode, unasked=result.unasked)
