"""The nightly sync: every hop in order, every instrument, over the dated window.

``run_sync`` takes the run lock (one sync at a time; a dry run takes none and records nothing:
it reads the catalog read-only), reads the filler's live locks, warns
about instruments whose last successful sync is older than the window (with the ``--days``
that would cover the gap), then runs :func:`~obsflow.transfer.hop.run_hop` for each hop and
instrument.  A host that cannot be reached fails only the hops that need it; the rest runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

from obsflow.config import Config, Hop, Location, parse_location
from obsflow.errors import ObsflowError, TransportError, UsageError
from obsflow.lock import DAEMON_LOCK, LOCK_SUFFIX, LockInfo, is_stale, read_lock
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.hop import HopJob, HopSettings, run_hop
from obsflow.transfer.plan import HopPlan, dated_folders, modified_window, window_dates
from obsflow.transfer.remote import Shell, remote_targets, shared_connections, shell_path
from obsflow.transfer.report import HopOutcome, Progress, SyncReport
from obsflow.transfer.runlock import sync_lock

__all__ = ["SyncRequest", "run_sync"]

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
                    outcome = run_hop(job, replace(settings, locks=frozenset(locks)), catalog, progress, before_copy)
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    return report


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
        raise UsageError(f"unknown instrument {wanted!r} (known: {known})", "-i")
    return [wanted]


def _hops(config: Config, wanted: str | None) -> list[Hop]:
    if not config.hops:
        raise UsageError("no hops configured: nothing to sync", str(config.path))
    if wanted is None:
        return list(config.hops)
    chosen = [hop for hop in config.hops if hop.label == wanted]
    if not chosen:
        known = ", ".join(hop.label for hop in config.hops) or "none configured"
        raise UsageError(f"unknown hop {wanted!r} (known: {known})", "--hop")
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
        dest_marker=config.archives[dest].marker,
    )  # fmt: skip


def missed_runs(catalog: Catalog, config: Config, instruments: list[str], today: date) -> list[str]:
    """One warning per instrument whose last successful sync is older than the window."""
    warnings = []
    for name in instruments:
        lasts = [t for hop in config.hops if (t := catalog.last_success(name, hop.label)) is not None]
        if not lasts:
            continue  # never synced: the first run covers the window
        last_day = datetime.fromtimestamp(min(lasts)).date()
        gap = (today - last_day).days
        if gap >= config.window_days:
            warnings.append(
                f"{name}: last successful sync was {gap} days ago ({last_day.isoformat()}), older than the "
                f"{config.window_days}-day window; run `obsflow sync -i {name} --days {gap + 1}` to cover the gap"
            )
    return warnings


_REMOTE_LOCKS = """\
cd -- {dir} 2>/dev/null || {{
  d={dir}; while [ ! -e "$d" ] && [ "$d" != / ] && [ "$d" != . ]; do d=$(dirname -- "$d"); done
  [ -e {dir} ] || [ ! -x "$d" ] || {{ printf '{missing}'; exit 0; }}
  printf 'cannot enter the folder\\n' >&2; exit 3; }}
[ -r . ] || {{ printf 'cannot read the folder\\n' >&2; exit 3; }}
for f in *{suffix}; do [ -f "$f" ] || continue; printf '%s\\0' "$f"; cat -- "$f"; printf '\\0'; done
"""


def filler_locks(config: Config, shell: Shell, warned: set[tuple[str, str]] | None = None) -> set[str]:
    """Names of the filler locks in every ``locks`` folder of the config (local or remote).

    Stale locks count too: a lock whose holder died marks a fill that was cut off and not yet
    rolled back (its files may hold a half-written scan); the filler clears it when it next
    starts or fills that project (one warning per lock and run, ``warned`` remembers them).
    A lock folder that cannot be read raises TransportError: nothing is copied as if unlocked.
    """
    names: set[str] = set()
    warned = set() if warned is None else warned
    for entry in config.locks:
        where = parse_location(entry)
        found = _remote_locks(entry, where, shell) if where.is_remote else _local_locks(entry, Path(where.path))
        if found is None:
            if (entry, "") not in warned:  # a mistyped path would otherwise honour nothing without a word
                warned.add((entry, ""))
                log.warning("lock folder %s does not exist: no filler lock is honoured there until the filler "
                            "makes it (a mistyped path?)", entry)  # fmt: skip
            continue
        for name, info in found.items():
            if name == DAEMON_LOCK:  # the daemon's own: held for weeks ("stale" by age elsewhere), no cut-off fill
                continue
            if info is not None and is_stale(info) and (entry, name) not in warned:
                warned.add((entry, name))
                log.warning("lock %s at %s was left by a filler that is gone (%s): %s is skipped until the filler "
                            "restarts and rolls back its interrupted fill", name, entry, info.describe(), name)  # fmt: skip
        names |= set(found)
    return names


def _local_locks(entry: str, folder: Path) -> dict[str, LockInfo | None] | None:
    """``{name: holder}`` of the locks in a local folder (holder None: unreadable, a lock all the same).

    None for a folder that is not there (no filler has written there yet, as over ssh); one that
    cannot be read raises TransportError, never reads as empty.
    """
    try:
        names = [name for name in os.listdir(folder) if name.endswith(LOCK_SUFFIX)]
    except FileNotFoundError:
        return None
    except OSError as err:
        raise TransportError(f"cannot read the filler's locks: cannot list the folder: {err.strerror}; "
                             "not copying what they may guard", entry) from err  # fmt: skip
    found: dict[str, LockInfo | None] = {}
    for name in names:
        try:
            info = read_lock(folder / name)
        except OSError:
            info = None
        else:
            if info is None:
                continue  # released meanwhile
        found[name[: -len(LOCK_SUFFIX)]] = info
    return found


_NO_FOLDER = b"no such folder"  # the script's answer for a missing folder (a lock record holds a NUL)


def _remote_locks(entry: str, where: Location, shell: Shell) -> dict[str, LockInfo | None] | None:
    """``{name: holder}`` of the locks in a remote folder, in one ssh command (holder None: unreadable);
    None for a folder that is not there."""
    script = _REMOTE_LOCKS.format(dir=shell_path(where.path), suffix=LOCK_SUFFIX, missing=_NO_FOLDER.decode())
    try:
        out = shell.run(where, script)
    except ObsflowError as err:
        raise TransportError(f"cannot read the filler's locks: {err.what}; not copying what they may guard",
                             entry) from err  # fmt: skip
    if out == _NO_FOLDER:
        return None
    fields = out.split(b"\0")
    return {name.decode()[: -len(LOCK_SUFFIX)]: _lock_info(body)
            for name, body in zip(fields[0::2], fields[1::2], strict=False) if name}  # fmt: skip


def _lock_info(body: bytes) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(body))
    except (ValueError, TypeError):
        return None  # being written right now, or not ours: a lock all the same
