"""The nightly sync: every hop in order, every instrument, over the dated window.

``run_sync`` takes the run lock (one sync at a time; a dry run takes none and records nothing:
it reads the catalog read-only), reads the filler's live locks, warns
about instruments with nights before the window that no completed sync covered (with the ``--days``
that would cover the gap), then runs :func:`~obsflow.transfer.hop.run_hop` for each hop and
instrument.  A host that cannot be reached fails only the hops that need it; the rest runs.  A real run then
has the catalog forget what is older than ``keep_catalog_days`` (:func:`prune_catalog`), keeping the runs the
missed-runs check needs (:func:`runs_to_keep`): its warnings are the same after a prune as before.  A window
longer than that (a catch-up's ``--days``) keeps its nights in the catalog as long as the catalog keeps the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import NamedTuple

from obsflow.config import MAX_WINDOW_DAYS, Config, Hop
from obsflow.errors import CatalogError, TransportError, UsageError
from obsflow.transfer.catalog import Catalog, Pruned
from obsflow.transfer.hop import HopJob, HopSettings, run_hop
from obsflow.transfer.locks import FillerLocks, read_filler_locks
from obsflow.transfer.plan import HopPlan, dated_folders, modified_window, window_dates
from obsflow.transfer.remote import Shell, remote_targets, shared_connections
from obsflow.transfer.report import HopOutcome, Progress, SyncReport
from obsflow.transfer.runlock import sync_lock

__all__ = ["SyncRequest", "prune_catalog", "run_sync", "runs_to_keep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncRequest:
    """What the command line asked for."""

    date: date | None = None  # -d: one night (or the last night of --days)
    days: int | None = None  # --days: window length (default: config window_days)
    instrument: str | None = None  # -i
    hop: str | None = None  # --hop FROM:TO
    dry_run: bool = False
    today: date | None = None  # for tests; default: today's local date

    @property
    def run_day(self) -> date:
        """The day this run counts from: ``today`` if given, else the local date."""
        return self.today or date.today()

    def dates(self, config: Config) -> list[date]:
        end = self.date or self.run_day
        days = self.days if self.days is not None else (1 if self.date else config.window_days)
        return window_dates(end, days)


def run_sync(
    config: Config,
    request: SyncRequest,
    progress: Progress | None = None,
    on_outcome: Callable[[HopOutcome], None] | None = None,
    before_copy: Callable[[HopPlan], None] | None = None,
    shell: Shell | None = None,
) -> SyncReport:
    """Run the sync asked for; raise only when nothing can run (bad request, lock held).

    ``shell``: the run's shared connections, if the caller opened them early (see
    :func:`~obsflow.transfer.remote.shared_connections`); by default they are opened here.
    """
    instruments = _instruments(config, request.instrument)
    hops = _hops(config, request.hop)
    # one day for the whole run: one that crosses midnight keeps the window it started with
    request = replace(request, today=request.run_day)
    dates = request.dates(config)
    report = SyncReport(dates=(dates[0].isoformat(), dates[-1].isoformat()))
    with (
        _run_lock(config, request) as keep_open,
        _connections(config, request, shell) as connections,  # handshakes run while the catalog is read
        Catalog(config.catalog_path, read_only=request.dry_run) as catalog,
    ):
        if catalog.close_interrupted_runs():  # we hold the run lock: no other run is running
            log.info("runs left 'running' by a run that died are marked interrupted")
        if request.date is None and request.days is None:
            report.warnings += missed_runs(catalog, config, instruments, request.run_day)
        settings = HopSettings(
            ssh_options=config.ssh_options,
            rsync_options=config.rsync_options,
            dry_run=request.dry_run,
            shell=connections,
            keep_open=keep_open,
            watches_filler=bool(config.locks),
        )
        warned: set[tuple[str, str]] = set()
        for hop in hops:
            for name in instruments:
                job = _job(config, hop.source, hop.dest, hop.label, name, dates, request.run_day)
                try:  # read just before each hop: a fill may have started during the one before
                    locks = filler_locks(config, connections, warned)
                except TransportError as err:
                    outcome = HopOutcome(job.hop, job.instrument, str(job.source), str(job.dest),
                                         dry_run=request.dry_run, failure=err.one_line())  # fmt: skip
                else:
                    outcome = run_hop(job, replace(settings, locks=locks), catalog, progress, before_copy)
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        if not request.dry_run:
            _forget_old(catalog, config, request.run_day)
            _say_kept(config, request.run_day, dates[0])
    return report


def _forget_old(catalog: Catalog, config: Config, today: date) -> None:
    """Prune the catalog after the hops; a catalog that cannot be pruned now is pruned by a later run, and
    must not turn the copies made into a failed sync."""
    try:
        prune_catalog(catalog, config, today)
    except CatalogError as err:
        log.warning("the catalog was not pruned: %s", err.one_line())


def _say_kept(config: Config, today: date, first_night: date) -> None:
    """Say when the window reaches past the nights the catalog keeps: their rows are kept as long as the run."""
    past = (today - timedelta(days=config.keep_catalog_days) - first_night).days
    if past > 0:
        log.info("the window reaches %d nights past keep_catalog_days (%d): the catalog keeps its nights back to %s "
                 "as long as it keeps this run", past, config.keep_catalog_days, first_night)  # fmt: skip


@contextmanager
def _run_lock(config: Config, request: SyncRequest) -> Iterator[tuple[int, ...]]:
    """The run lock for a real run, yielding the descriptors rsync is to inherit; none for a dry run.

    A dry run changes nothing, so it runs beside a real one (and cron's real run beside it).
    An rsync that outlives its killed run keeps the run lock through the inherited descriptor.
    """
    if request.dry_run:
        yield ()
        return
    with sync_lock(config.state_path, config.sync_wait_seconds) as run_lock:
        yield (run_lock.fd,)


@contextmanager
def _connections(config: Config, request: SyncRequest, shell: Shell | None) -> Iterator[Shell]:
    if shell is not None:
        yield shell
        return
    with shared_connections(config, remote_targets(config, request.hop, request.instrument)) as opened:
        yield opened


def _instruments(config: Config, wanted: str | None) -> list[str]:
    if not config.instruments:  # else a config for the filler alone "succeeds" every night, copying nothing
        raise UsageError("no instruments configured: nothing to sync", str(config.path))
    if wanted is None:
        return list(config.instruments)
    if wanted not in config.instruments:
        known = ", ".join(config.instruments) or "none configured"
        raise UsageError(f"unknown instrument {wanted!r} (configured: {known})", "-i")
    return [wanted]


def _hops(config: Config, wanted: str | None) -> list[Hop]:
    if not config.hops:
        raise UsageError("no hops configured: nothing to sync", str(config.path))
    if wanted is None:
        return list(config.hops)
    chosen = [hop for hop in config.hops if hop.label == wanted]
    if not chosen:
        known = ", ".join(hop.label for hop in config.hops) or "none configured"
        raise UsageError(f"unknown hop {wanted!r} (configured: {known})", "--hop")
    return chosen


def _job(
    config: Config, source: str, dest: str, label: str, name: str, dates: list[date], today: date
) -> HopJob:
    inst = config.instruments[name]
    return HopJob(
        hop=label, source_host=source, dest_host=dest, instrument=name, source=config.instrument_root(source, inst),
        dest=config.instrument_root(dest, inst),
        folders=tuple(dated_folders(inst.layout, dates)), patterns=inst.patterns,
        modified=modified_window(inst.layout, dates, today=today), settle_s=config.settle_seconds_for(inst), grows=inst.grows,
        keep_superseded_days=inst.keep_superseded_days,
        source_archive=config.archives[source].location if source in config.archives else None,
        dest_archive=config.archives[dest].location,
        source_marker=config.archives[source].marker if source in config.archives else None,
        dest_marker=config.archives[dest].marker, nights=(dates[0], dates[-1]),
    )  # fmt: skip


def missed_runs(catalog: Catalog, config: Config, instruments: list[str], today: date) -> list[str]:
    """One warning per instrument with nights before this run's window that no completed sync covered
    (on some hop that ever synced it), with the ``--days`` that covers them."""
    window_start = today - timedelta(days=config.window_days - 1)
    warnings = []
    for name in instruments:
        gaps = [night for hop in config.hops
                if (night := first_uncovered(_covered(catalog, name, hop.label, config.window_days), window_start))]  # fmt: skip
        if gaps:
            first = min(gaps)
            days = (today - first).days + 1
            # --days takes at most MAX_WINDOW_DAYS: a longer gap (a nightly job stopped for years) is
            # covered that far, the older nights one by one
            cover = (f"run `obsflow sync -i {name} --days {days}` to cover the gap" if days <= MAX_WINDOW_DAYS else
                     f"run `obsflow sync -i {name} --days {MAX_WINDOW_DAYS}` (the longest window) to cover the last "
                     f"{MAX_WINDOW_DAYS} nights of the gap, and `obsflow sync -i {name} -d NIGHT` for any older night")
            warnings.append(
                f"{name}: no completed sync covered the night {first.isoformat()} (nor, maybe, some up to the "
                f"{config.window_days}-day window); {cover}"
            )  # fmt: skip
    return warnings


class Covered(NamedTuple):
    """The nights one completed run covered.  ``window``: the run took the window up to its own day
    (the nightly job, or ``--days``), not nights chosen by hand (``-d``)."""

    first: date
    last: date
    window: bool = True


#: a night is named by the date of its evening and observed into the next morning: it is over for a run
#: that starts at this local hour (noon, as observatories turn their night's date) of the next day or later
NIGHT_OVER_HOUR = 12


def last_night_over(started: float) -> date:
    """The last night that was over when a run started at ``started`` (unix seconds, local time):
    at 00:30 or 08:00 on 2 January the night of 1 January may still be observed (or its last frames
    still be written), so that is the night of 31 December; from noon, the night of 1 January."""
    moment = datetime.fromtimestamp(started)
    return moment.date() - timedelta(days=1 if moment.hour >= NIGHT_OVER_HOUR else 2)


def _covered(catalog: Catalog, instrument: str, hop: str, window_days: int) -> list[Covered]:
    """The nights each completed run of ``instrument`` on ``hop`` covered (see :func:`_nights_covered`)."""
    return [covered for started, first, last in catalog.completed_windows(instrument, hop)
            if (covered := _nights_covered(started, first, last, window_days)) is not None]  # fmt: skip


def _nights_covered(started: float, first: date | None, last: date | None, window_days: int) -> Covered | None:
    """The nights a completed run covered, or None.  The nights still observed (or written) when it ran are
    not: it covers its window up to the last night that was over when it started (:func:`last_night_over`).
    A run recorded before runs kept their nights had the default window."""
    day = datetime.fromtimestamp(started).date()
    window = last is None or last >= day - timedelta(days=1)
    first = first or day - timedelta(days=window_days - 1)
    last = min(last or day, last_night_over(started))
    return Covered(first, last, window) if first <= last else None


def first_uncovered(covered: list[Covered], window_start: date) -> date | None:
    """The first night from the earliest one a window run covered up to ``window_start`` (excluded)
    that no run in ``covered`` holds, or None (all covered, or no window run yet: the next covers its
    window).  Nights chosen by hand fill holes but start no history: one old night synced once must
    not make every later run warn about the years between it and the nightly job."""
    starts = [run.first for run in covered if run.window]
    if not starts:
        return None
    night = min(starts)
    for first, last, _ in sorted(covered):
        if first > night:
            break  # a hole before this range
        night = max(night, last + timedelta(days=1))
    return night if night < window_start else None


def prune_catalog(catalog: Catalog, config: Config, today: date) -> Pruned:
    """Have the catalog forget the nights older than ``keep_catalog_days`` before ``today``, and the runs and
    verifications started before them, but the runs the missed-runs check needs and the nights that runs
    started since then covered (a catch-up's ``--days`` past them: never its own window); log what went."""
    oldest = today - timedelta(days=config.keep_catalog_days)
    layouts = {name: inst.layout for name, inst in config.instruments.items()}
    pruned = catalog.prune(oldest, layouts, runs_to_keep(catalog, config.window_days))
    if pruned.total:
        kept = f"; nights back to {pruned.kept_from} that runs since then covered stay" if pruned.kept_from else ""
        log.info("catalog: forgot %d file rows, %d runs and %d verifications older than %s (keep_catalog_days %d%s)%s",
                 pruned.files, pruned.runs, pruned.verifications, oldest, config.keep_catalog_days, kept,
                 "; more in the next runs" if pruned.more else "")  # fmt: skip
    return pruned


def runs_to_keep(catalog: Catalog, window_days: int) -> set[int]:
    """The runs :func:`missed_runs` needs, however old: per instrument and hop (configured or not), the
    window run with the earliest first night (where the history starts) and the fewest runs that cover every
    night the completed runs covered.  :func:`first_uncovered` is the first night from the history's start
    that no run covers: with the start and the covered nights the same, so is its answer, now and after any
    later run."""
    runs: dict[tuple[str, str], list[tuple[Covered, int]]] = {}
    for run, instrument, hop, started, first, last in catalog.completed_runs():
        if (covered := _nights_covered(started, first, last, window_days)) is not None:
            runs.setdefault((instrument, hop), []).append((covered, run))
    keep = set()
    for covering in runs.values():
        keep |= _fewest_covering(covering)
        starts = [(covered.first, run) for covered, run in covering if covered.window]
        if starts:  # a range chosen by hand may hold its nights: it is kept for where the history starts
            keep.add(min(starts)[1])
    return keep


def _fewest_covering(runs: list[tuple[Covered, int]]) -> set[int]:
    """The fewest of ``runs`` whose nights together are all the nights ``runs`` cover: from each uncovered
    night, the run reaching furthest among those that start by it."""
    ordered, chosen, i = sorted(runs), set(), 0
    night: date | None = None  # the first night not covered by the runs chosen so far
    while i < len(ordered):
        if night is None or ordered[i][0].first > night:
            night = ordered[i][0].first  # a hole before it: a new stretch of covered nights
        reach = ordered[i]
        while i < len(ordered) and ordered[i][0].first <= night:
            reach = max(reach, ordered[i], key=lambda one: one[0].last)
            i += 1
        if reach[0].last >= night:
            chosen.add(reach[1])
            night = reach[0].last + timedelta(days=1)
    return chosen


def filler_locks(config: Config, shell: Shell, warned: set[tuple[str, str]] | None = None) -> FillerLocks:
    """The filler locks in every ``locks`` folder of the config (see transfer.locks).

    Stale locks count too: a lock whose holder died marks a fill that was cut off and not yet
    rolled back (its files may hold a half-written scan); the filler clears it when it next
    starts or fills that project (one warning per lock and run, ``warned`` remembers them).
    A lock folder that cannot be read raises TransportError: nothing is copied as if unlocked.
    """
    warned = set() if warned is None else warned
    found = read_filler_locks(config, shell)
    for entry in found.missing_folders:
        if (entry, "") not in warned:  # a mistyped path would otherwise honour nothing without a word
            warned.add((entry, ""))
            log.warning("lock folder %s does not exist: no filler lock is honoured there until the filler "
                        "makes it (a mistyped path?)", entry)  # fmt: skip
    for lock in found.locks.values():
        if lock.gone and (lock.entry, lock.name) not in warned:
            warned.add((lock.entry, lock.name))
            log.warning("lock %s at %s was left by a filler that is gone (%s): %s is skipped until the filler "
                        "restarts and rolls back its interrupted fill", lock.name, lock.entry, lock.holder_text,
                        lock.name)  # fmt: skip
    return found
