"""Comparing what two hosts hold for one instrument.  Pure: listings in, findings out, no I/O.

Every data file on A (the upstream side of a hop) lands in exactly one bucket:

- ``in_flight``: still being written (younger than the settle time by A's own clock, and not
  more than a day ahead of it: such a time was set, see ``transfer.plan.CLOCK_AHEAD_S``), or it
  changed, vanished or reached B while the check ran: never an alarm;
- ``refused``: a symlink on A that leads outside its root (a dated folder linked elsewhere, an
  absolute link), or a file not on B whose name the sync refuses (a backslash, bytes that are not
  UTF-8): it never reaches B; a finding, with the sync's own reason;
- ``skipped``: any other entry on A that is not a regular file (a symlink, a fifo): the sync
  never copies it;
- ``locked``: not on B (or not the same), and the filler holds its project's lock: the sync takes
  it once the fill ends; a finding only when that filler is gone (a fill a crash cut off);
- ``grown``: a file of a source whose files only grow (``grows = true``, SDFITS products), larger
  and newer on A than B's copy: the next sync replaces that copy (keeping it aside): not an alarm;
- ``missing``: on A, not on B;
- ``size_differs``: on both, sizes differ (or B holds a symlink or special file there; a folder
  on B is not in its listing, so the file is ``missing``);
- ``same_size``: on both with equal sizes; with ``--checksum`` their hashes decide
  (:func:`compare_hashes`), otherwise they count as matching.

Temp and partial files never reach this module: ``transfer.listing`` keeps them apart.
A file is called missing or different only when the listing of A taken *after* B was listed
still shows it unchanged and B's second look still disagrees (see :func:`confirm`), as
archive auditors do (Rucio: LOST = in the catalogue before *and* after the storage dump).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from obsflow.config import WHOLE_ROOT
from obsflow.transfer.listing import FileStat
from obsflow.transfer.locks import FillerLocks, guarded_by
from obsflow.transfer.plan import name_refusal, symlink_refusal, writing_window

__all__ = [
    "Comparison", "HashDiff", "Locked", "Refused", "SizeDiff", "compare_hashes", "compare_listings", "confirm",
    "folders_of", "set_locked",
]  # fmt: skip


@dataclass(frozen=True)
class SizeDiff:
    """A file on both sides whose sizes differ (``kind_b`` is not ``f`` when B holds no regular file)."""

    path: str
    size_a: int
    size_b: int
    kind_b: str = "f"


@dataclass(frozen=True)
class HashDiff:
    """A file of equal size on both sides whose xxh128 hashes differ."""

    path: str
    xxh128_a: str
    xxh128_b: str


@dataclass(frozen=True)
class Refused:
    """An entry on A that the sync refuses to copy: it leads outside the root, or by its name."""

    path: str
    reason: str


@dataclass(frozen=True)
class Locked:
    """A file the sync leaves alone because the filler holds its project's lock (``lock``)."""

    path: str
    lock: str
    holder: str
    gone: bool  # the holder died: the project stays locked until the filler restarts and rolls back


@dataclass
class Comparison:
    """The buckets of one instrument on one hop; each list sorted by path."""

    missing: list[str] = field(default_factory=list)
    size_differs: list[SizeDiff] = field(default_factory=list)
    same_size: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    locked: list[Locked] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)

    @property
    def suspects(self) -> list[str]:
        """Paths that would be alarms, to be confirmed by a second look."""
        return sorted([*self.missing, *(d.path for d in self.size_differs)])


def compare_listings(
    a: Mapping[str, FileStat], b: Mapping[str, FileStat], *, a_time: float, settle_s: float, grows: bool = False
) -> Comparison:
    """Sort every file of ``a`` into the buckets of :class:`Comparison`.

    ``a_time`` is A's own clock when it was listed, so clock skew between hosts cannot
    make a file that is still being written look settled.  ``grows``: the instrument's files
    only grow (SDFITS products): one larger and newer on A than B's copy is ``grown``.
    """
    result = Comparison()
    # One pass over A in path order; the hot loop avoids attribute and property lookups
    # (100,000s of files per hop).
    skipped, in_flight, missing = result.skipped.append, result.in_flight.append, result.missing.append
    size_differs, same_size, b_get = result.size_differs.append, result.same_size.append, b.get
    settled_before, set_ahead = writing_window(a_time, settle_s)
    for path, st in sorted(a.items()):
        if st.kind != "f":
            reason = symlink_refusal(path, st)
            if not reason:
                skipped(path)
            else:
                result.refused.append(Refused(path, reason))
        elif settled_before < st.mtime <= set_ahead:  # far ahead: set, not being written (see the sync)
            in_flight(path)
        else:
            other = b_get(path)
            if other is None:
                reason = name_refusal(path)  # the sync said why at the time: say the same, not "missing"
                if reason:
                    result.refused.append(Refused(path, reason))
                else:
                    missing(path)
            elif grows and other.kind == "f" and st.size > other.size and st.mtime > other.mtime:
                result.grown.append(path)
            elif other.size != st.size or other.kind != "f":
                size_differs(SizeDiff(path, st.size, other.size, other.kind))
            else:
                same_size(path)
    return result


def confirm(first: Comparison, a_before: Mapping[str, FileStat], a_after: Mapping[str, FileStat],
            b_after: Mapping[str, FileStat]) -> Comparison:  # fmt: skip
    """Re-judge the suspects of ``first`` with A listed again after B, and B looked at again.

    A suspect stays an alarm only when A shows it unchanged in both listings and B still
    disagrees; otherwise it was in flight (written, deleted or copied while the check ran).
    The second look at B may also turn a missing file into a size difference.
    """
    # Every bucket but the suspects' carries over as the first look judged it (grown files too:
    # dropped here, a grown product vanished from the report whenever another file was missing).
    result = Comparison(same_size=list(first.same_size), in_flight=list(first.in_flight),
                        skipped=list(first.skipped), refused=list(first.refused), locked=list(first.locked),
                        grown=list(first.grown))  # fmt: skip
    for path in first.suspects:
        before, after = a_before[path], a_after.get(path)
        other = b_after.get(path)
        if after is None or (after.size, after.mtime) != (before.size, before.mtime):
            result.in_flight.append(path)
        elif other is None:
            result.missing.append(path)
        elif other.is_regular and other.size == before.size:
            result.in_flight.append(path)  # copied while the check ran
        else:
            result.size_differs.append(SizeDiff(path, before.size, other.size, other.kind))
    result.in_flight.sort()
    return result


def compare_hashes(
    paths: Iterable[str], hashes_a: Mapping[str, str], hashes_b: Mapping[str, str]
) -> tuple[list[HashDiff], list[str]]:
    """Hash differences among ``paths``, and the paths whose hash one side could not give."""
    differs, unhashed = [], []
    for path in sorted(paths):
        ha, hb = hashes_a.get(path), hashes_b.get(path)
        if ha is None or hb is None:
            unhashed.append(path)
        elif ha != hb:
            differs.append(HashDiff(path, ha, hb))
    return differs, unhashed


def folders_of(paths: Iterable[str], dated_folders: Iterable[str]) -> list[str]:
    """The dated folders (of ``dated_folders``) that hold any of ``paths``, sorted."""
    if WHOLE_ROOT in dated_folders:
        return [WHOLE_ROOT] if any(True for _ in paths) else []
    folders = sorted(dated_folders, key=len, reverse=True)
    found = set()
    for path in paths:
        for folder in folders:
            if path.startswith(folder + "/"):
                found.add(folder)
                break
    return sorted(found)


def set_locked(comparison: Comparison, locks: FillerLocks) -> None:
    """Move the missing and size-differing files of a project the filler holds locked to ``locked``."""
    if not locks.locks:
        return

    def held(path: str) -> bool:
        lock = guarded_by(path, locks)
        if lock is not None:
            comparison.locked.append(Locked(path, lock.name, lock.holder_text, lock.gone))
        return lock is not None

    comparison.missing = [path for path in comparison.missing if not held(path)]
    comparison.size_differs = [diff for diff in comparison.size_differs if not held(diff.path)]
    comparison.locked.sort(key=lambda item: item.path)
