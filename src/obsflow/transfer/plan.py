"""Deciding what a hop copies: the dated window and each file's fate.  Pure: no I/O.

Every source file lands in exactly one bucket: ``copy``, ``present`` (same size and mtime at
the destination), ``check`` (same size, other mtime: hashes decide), ``conflicts`` (the
destination holds something else under that name: never overwritten), ``in_flight``
(modified within the settle time, by the source host's own clock), ``locked`` (a path
component names a live filler lock) or ``refused`` (not a regular file, or a path or
symlink that leaves the root).
"""

from __future__ import annotations

import functools
import math
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import compress, repeat
from operator import and_, eq, itemgetter, le, not_

from obsflow.config import UNDATED, WHOLE_ROOT
from obsflow.errors import UsageError
from obsflow.transfer.listing import FileStat, is_safe_relpath, is_utf8_name, printable_name, unsafe_relpaths
from obsflow.transfer.locks import FillerLocks, guarded_by

__all__ = [
    "CLOCK_AHEAD_S", "NOT_UTF8", "HopPlan", "Refusal", "dated_folders", "folder_night", "modified_window",
    "modified_within", "name_refusal", "names_the_night", "parse_date", "plan_copy", "sorts_by_night",
    "symlink_refusal", "take_grown", "window_dates", "writing_window",
]  # fmt: skip

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")

#: a file modified more than this far ahead of its host's clock is not being written now (its time was
#: set: a camera's clock, ``cp -p``); it counts as settled, else it would wait until its night left the
#: window and never be copied.  Less far ahead (a writer's clock a little fast) it is waited for.
CLOCK_AHEAD_S = 86400.0


def writing_window(host_time: float, settle_s: float) -> tuple[float, float]:
    """``(after, until)``: a file whose mtime lies in ``(after, until]`` may still be being written, by its
    host's clock ``host_time``: modified within the settle time, and not set more than CLOCK_AHEAD_S ahead."""
    return host_time - settle_s, host_time + CLOCK_AHEAD_S


def parse_date(text: str) -> date:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` as a date; UsageError otherwise."""
    match = _DATE.match(text.strip())
    if match:
        try:
            return date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            pass
    raise UsageError(f"not a date: {text!r} (use YYYYMMDD or YYYY-MM-DD)", "-d")


def window_dates(end: date, days: int) -> list[date]:
    """The ``days`` dates ending with ``end``, oldest first."""
    if days < 1:
        raise UsageError(f"--days must be at least 1, not {days}", "--days")
    # a typo such as 00010101 must be a usage error, not date arithmetic's OverflowError; the
    # day after ``end`` is needed too (an undated layout's window ends at the next midnight), and
    # the day before the first (its first midnight as unix time looks a day back: "year 0")
    if (end - date.min).days < days or end == date.max:
        raise UsageError(f"the {days}-night window ending {end.isoformat()} leaves the calendar (years 1 to 9999)", "-d")
    return [end - timedelta(days=back) for back in range(days - 1, -1, -1)]


def dated_folders(layout: str, dates: list[date]) -> dict[str, date]:
    """``{folder: date}`` for a layout such as ``{yyyy}/{mmdd}``; the whole root for an undated one."""
    if layout == UNDATED:
        return {WHOLE_ROOT: dates[0]}
    folders = {}
    for day in dates:
        folder = layout.format(
            yyyy=f"{day.year:04d}", mm=f"{day.month:02d}", dd=f"{day.day:02d}",
            mmdd=f"{day.month:02d}{day.day:02d}", yyyymmdd=f"{day.year:04d}{day.month:02d}{day.day:02d}",
        )  # fmt: skip
        folders[folder.strip("/")] = day
    return folders


# each layout field: its digits, and the parts of the date it spells, most significant first
_FIELDS = {"yyyy": (4, "y"), "mm": (2, "m"), "dd": (2, "d"), "mmdd": (4, "md"), "yyyymmdd": (8, "ymd")}
_FIELD = re.compile(r"\{(\w+)\}")


@functools.cache
def _folder_pattern(layout: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A regex matching a path inside one of ``layout``'s dated folders, and the field of each group."""
    pieces = _FIELD.split(layout.strip("/"))  # literal, field, literal, field, ..., literal
    regex = "".join(re.escape(piece) if i % 2 == 0 else rf"(\d{{{_FIELDS[piece][0]}}})"
                    for i, piece in enumerate(pieces))  # fmt: skip
    return re.compile(f"^{regex}(?:/|$)"), tuple(pieces[1::2])


def _date_parts(layout: str) -> str:
    """The parts of the date ``layout``'s folders spell, in order of first appearance (``{yyyy}/{mmdd}``: ``ymd``)."""
    return "".join(dict.fromkeys(part for field in _FIELD.findall(layout) for part in _FIELDS[field][1]))


def names_the_night(layout: str) -> bool:
    """Whether ``layout``'s folders name a whole night (year, month and day): ``{yyyy}/{mmdd}``, not ``{yyyy}/{mm}``."""
    return layout != UNDATED and set("ymd") <= set(_date_parts(layout))


def folder_night(layout: str, path: str) -> date | None:
    """The night of the dated folder holding ``path`` (``2016/0907/x.fits`` under ``{yyyy}/{mmdd}``: 7 September
    2016); None for an undated layout, one that does not name the whole date, or a path in no dated folder."""
    if not names_the_night(layout):
        return None
    pattern, fields = _folder_pattern(layout)
    match = pattern.match(path)
    if match is None:
        return None
    parts: dict[str, str] = {}
    for name, digits in zip(fields, match.groups(), strict=True):
        for part, text in zip(_FIELDS[name][1], _split_digits(name, digits), strict=True):
            if parts.setdefault(part, text) != text:
                return None  # {yyyy}/{yyyymmdd} with two years: no night of ours
    try:
        return date(int(parts["y"]), int(parts["m"]), int(parts["d"]))
    except ValueError:
        return None  # 2016/1340: digits, but no date


def _split_digits(field: str, digits: str) -> list[str]:
    """``mmdd``'s ``0907`` as ``["09", "07"]`` (``yyyy`` four digits, the others two)."""
    out, at = [], 0
    for part in _FIELDS[field][1]:
        width = 4 if part == "y" else 2
        out.append(digits[at : at + width])
        at += width
    return out


def sorts_by_night(layout: str) -> bool:
    """Whether ``layout``'s folders sort as their nights do (``{yyyy}/{mmdd}``, ``{yyyymmdd}``, ...): the year
    comes before the month and the month before the day, so every path of an older night sorts before the
    folder of a later one (fixed-width digits between the same literal text)."""
    return layout != UNDATED and _date_parts(layout) == "ymd"


def modified_window(layout: str, dates: list[date], *, today: date) -> tuple[float, float] | None:
    """For an undated layout, the window as unix seconds ``[since, until)``: from the first day's
    midnight to the midnight after the last day, in this host's time zone (as dated folders are
    named by local date).  None for a dated layout: its folders are the window.

    A window that reaches ``today`` (the run's) has no end: a file whose mtime lies in the future (a clock set
    wrong, ``cp -p`` from such a host) belongs to no past night, and would otherwise never be taken.
    """
    if layout != UNDATED:
        return None
    first = datetime.combine(dates[0], datetime.min.time())
    if dates[-1] >= today:
        return first.timestamp(), math.inf
    after = datetime.combine(dates[-1] + timedelta(days=1), datetime.min.time())
    return first.timestamp(), after.timestamp()


def modified_within(files: Mapping[str, FileStat], window: tuple[float, float] | None) -> Mapping[str, FileStat]:
    """The files modified within ``window`` (all of them for None)."""
    if window is None:
        return files
    since, until = window
    return {path: st for path, st in files.items() if since <= st.mtime < until}


@dataclass(frozen=True)
class Refusal:
    """A source entry that will not be copied, and why."""

    path: str
    reason: str


@dataclass
class HopPlan:
    """What to do with every source file of one hop and instrument (see the module docstring)."""

    copy: dict[str, FileStat] = field(default_factory=dict)
    update: dict[str, FileStat] = field(default_factory=dict)  # grown files replacing our own older copy
    present: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def copy_bytes(self) -> int:
        return sum(st.size for st in self.copy.values())

    @property
    def update_bytes(self) -> int:
        return sum(st.size for st in self.update.values())


def plan_copy(
    source: Mapping[str, FileStat],
    dest: Mapping[str, FileStat],
    *,
    source_time: float,
    settle_s: float,
    locks: FillerLocks | None = None,
) -> HopPlan:
    """Sort every source file of one hop into the buckets of :class:`HopPlan`.

    ``source_time`` is the source host's clock when it listed (so clock skew between
    hosts cannot make a fresh file look settled); ``locks``: the filler's project locks.
    """
    plan = HopPlan()
    settled_before, set_ahead = writing_window(source_time, settle_s)
    unsafe = unsafe_relpaths(source)
    plain_names = not unsafe and "".join(source).isascii()  # the usual listing: only a file's kind can refuse it
    locked = locks if locks is not None and locks.locks else None
    paths = sorted(source)
    if plain_names and locked is None:
        paths = _take_unchanged(plan, paths, source, dest, settled_before)
    in_bulk = len(plan.present)
    dest_get, present = dest.get, plan.present.append
    for path in paths:
        st = source[path]
        size, mtime, kind, _, _ = st
        reason = "" if plain_names and kind == "f" else _refusal(path, st, is_safe=path not in unsafe)
        if reason:  # printable: a refused name may hold bytes that are not UTF-8 (a symlink's too)
            plan.refused.append(Refusal(printable_name(path), reason))
        elif locked is not None and guarded_by(path, locked):
            plan.locked.append(path)
        elif settled_before < mtime <= set_ahead:
            plan.in_flight.append(path)
        elif (other := dest_get(path)) is None:
            plan.copy[path] = st
        elif other[2] != "f" or other[0] != size:  # kind, size
            plan.conflicts.append(path)
        elif int(other[1]) == int(mtime):
            present(path)
        else:
            plan.check.append(path)
    if in_bulk and len(plan.present) > in_bulk:
        plan.present.sort()  # the bulk and the one-by-one part merged (two sorted runs: cheap)
    return plan


def _take_unchanged(
    plan: HopPlan, paths: list[str], source: Mapping[str, FileStat], dest: Mapping[str, FileStat], settled_before: float
) -> list[str]:
    """Put in ``plan.present`` the regular files listed at the destination exactly as at the source
    (size, mtime to the nanosecond) and settled; return the ``paths`` left to sort one by one.

    The bulk of a run that finds its files already copied, at C speed (``map`` and ``compress``,
    no Python loop over 10,000 files); the caller has ruled out names to refuse and lock folders.
    """
    stats = list(map(source.__getitem__, paths))
    if set(map(itemgetter(2), stats)) != {"f"}:
        return paths  # a symlink or a special file among them: each is looked at
    unchanged = list(map(and_, map(eq, stats, map(dest.get, paths)), map(le, map(itemgetter(1), stats), repeat(settled_before))))
    plan.present.extend(compress(paths, unchanged))
    return list(compress(paths, map(not_, unchanged)))


def take_grown(
    plan: HopPlan,
    source: Mapping[str, FileStat],
    dest: Mapping[str, FileStat],
    ours: Collection[str],
    source_time: float = math.inf,
) -> None:
    """Move the conflicts that are a grown file over our own older copy of it into ``plan.update``.

    For a source whose files only grow (SDFITS products gain rows): the source is larger and
    newer than the destination's copy, and that copy is one a sync made and nobody changed
    since (``ours``, from the catalog).  A copy whose time lies more than CLOCK_AHEAD_S ahead of
    ``source_time`` (the source host's clock) had its time set: an append since is older by the
    clock.  Anything else stays a conflict.
    """
    kept, set_ahead = [], source_time + CLOCK_AHEAD_S
    for path in plan.conflicts:
        st, other = source.get(path), dest.get(path)
        if (st is not None and other is not None and other.kind == "f" and path in ours
                and st.size > other.size and (st.mtime > other.mtime or other.mtime > set_ahead)):  # fmt: skip
            plan.update[path] = st
        else:
            kept.append(path)
    plan.conflicts = kept


NOT_UTF8 = "name is not valid UTF-8: not copied (rename it at the source)"


def name_refusal(path: str, *, is_safe: bool | None = None) -> str:
    """Why the sync refuses a file by its name alone, in its words ('' if it does not); verify says the same.

    ``is_safe``: :func:`is_safe_relpath`'s verdict when the caller has it already (:func:`plan_copy`
    finds it for a whole listing at once).
    """
    if not (is_safe_relpath(path) if is_safe is None else is_safe):
        return _unsafe_reason(path)
    return "" if is_utf8_name(path) else NOT_UTF8


def _unsafe_reason(path: str) -> str:
    if "\\" in path and is_safe_relpath(path.replace("\\", "_")):  # refused, but it leads nowhere
        return "name holds a backslash: not copied (rename it at the source)"
    return "path escapes its root"


def symlink_refusal(path: str, st: FileStat) -> str:
    """Why the sync refuses the symlink ``path`` as leading outside its root, in its words ('' if it
    does not, or is no symlink); verify says the same.

    A dated folder linked outside the root is listed with its real path as target: absolute.
    """
    if st.kind != "l":
        return ""
    if posixpath.isabs(st.target):
        return f"symlink to {st.target} (outside the root or absolute)"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), st.target))
    if resolved == ".." or resolved.startswith("../"):
        return f"symlink to {st.target} points outside the root"
    return ""


def _refusal(path: str, st: FileStat, *, is_safe: bool) -> str:
    """Why the sync refuses ``path`` ('' to copy it): a name leaving its root, then its kind, then its name's bytes."""
    if st.kind == "f" or not is_safe:
        return name_refusal(path, is_safe=is_safe)
    if st.kind == "l":
        return symlink_refusal(path, st) or "symlink, not a regular file"
    return "not a regular file"
