"""What files a host holds under a root, in one round trip, and their xxh128 hashes.

Shared by the sync (``hop.py``) and ``verify``.  Invariants:

- one round trip per call: a local ``os.scandir`` walk, or *one* ``ssh host sh -c …``
  running ``find -printf`` (GNU find) with NUL-separated fields, never one command per file;
- only the dated folders asked for are read (or, for :data:`WHOLE_ROOT`, everything under the
  root), and only names matching the patterns are kept;
- rsync's temp files (``.<name>.<6 random characters>``, e.g. ``.SHA_0001.fits.a1B2c3``, from a
  killed rsync; anything under ``.rsync-partial/`` or ``.~tmp~/``) and other dot-files are
  never counted as data: temps are listed apart in
  :attr:`Listing.temps` so the sync can clean them up; ``.obsflow-superseded/`` (older copies
  of grown files the sync replaced) is not read, only the names of its folders are listed
  (:attr:`Listing.superseded`, for pruning old versions);
- symlinks are listed with ``kind="l"`` and their target, so callers can refuse them; a dated
  folder that resolves outside the root is listed as a ``kind="l"`` entry whose target is its
  real path (the planner refuses it).

Hashes are xxh128 (what ``rsync --out-format=%C`` prints), hex.  Local files are read with
the ``xxhash`` package; remote files are hashed by the remote ``rsync`` itself
(``rsync --checksum --cc=xxh128 --dry-run --out-format='%C %n'`` into an empty temp folder),
because rsync must be on every host anyway while Python packages may not be: one ssh
command for all the files asked for.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from fnmatch import translate
from itertools import compress, repeat
from operator import floordiv, methodcaller, truediv
from pathlib import Path, PurePosixPath
from typing import ClassVar, NamedTuple

import xxhash

from obsflow.config import WHOLE_ROOT, Location
from obsflow.errors import PathEscapeError, RemoteCommandFailed, TransportError
from obsflow.transfer.remote import Shell, nul_separated, shell_path
from obsflow.transfer.rsync import printed_name

__all__ = [
    "WHOLE_ROOT", "FileStat", "Listing", "escape_controls", "hash_files", "is_folder", "is_safe_relpath", "is_utf8_name", "list_files",
    "missing_disk", "printable_name", "unsafe_relpaths", "xxh128_file",
]  # fmt: skip

log = logging.getLogger(__name__)

PARTIAL_DIRS = (".rsync-partial", ".~tmp~")
SUPERSEDED_DIR = ".obsflow-superseded"  # older copies of grown files, kept by the sync: not data, not temps
STAGING_DIR = ".obsflow-staging"  # copies waiting for a second look at their source (staging.py): not data
SUPERSEDED_VERSION = "%Y%m%dT%H%M%SZ"  # one folder per run that replaced files: when, in UTC
_RSYNC_TEMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9]{6}$")
_PARTIAL_PART = re.compile("(?:^|/)(?:" + "|".join(re.escape(d) for d in PARTIAL_DIRS) + ")/")
_HASH_LINE = re.compile(rb"^([0-9a-f]{32}) (.+)$")
_READ_BYTES = 1 << 20


class FileStat(NamedTuple):
    """One directory entry: size in bytes, mtime (unix seconds), kind, symlink target, permission bits.

    ``kind`` is find's ``%y`` letter: ``f`` regular file, ``l`` symlink, ``d`` folder,
    ``p``/``s``/``c``/``b`` special files.  ``mode`` (permission bits, -1 unknown) is read only
    for the entries that are not plain data files (it tells rsync's temps from a user's files).
    A named tuple: listings make one per file (100,000s), and a tuple is several times cheaper
    to build than a frozen dataclass.
    """

    size: int
    mtime: float
    kind: str = "f"
    target: str = ""
    mode: int = -1

    @property
    def is_regular(self) -> bool:
        return self.kind == "f"


class Listing(dict[str, FileStat]):
    """``{relative_path: FileStat}`` of the data files under a root, plus what was seen around them.

    Attributes
    ----------
    root_exists: False when the root folder itself is missing (unmounted disk, new archive).
    host_time: the host's own clock when it listed (compare mtimes with it, not with ours).
    temps: rsync temp files and partials found in the folders (never data).
    superseded: the names of the folders in the root's ``.obsflow-superseded/`` (one per run
      that replaced grown files, e.g. ``20261201T031500Z``); their contents are not read.
    marker_present: whether the ``marker`` file asked for exists on the host (None: not asked).
    staged: whether the root holds a ``.obsflow-staging/`` folder (copies a stopped run left unchecked),
      or a symlink of that name.
    """

    def __init__(self, files: dict[str, FileStat] | None = None, *, root_exists: bool = True,
                 host_time: float | None = None, temps: dict[str, FileStat] | None = None,
                 superseded: Sequence[str] = (), marker_present: bool | None = None,
                 staged: bool = False) -> None:  # fmt: skip
        super().__init__(files or {})
        self.staged = staged
        self.root_exists = root_exists
        self.marker_present = marker_present
        self.host_time = time.time() if host_time is None else host_time
        self.temps: dict[str, FileStat] = temps or {}
        self.superseded: tuple[str, ...] = tuple(sorted(superseded))


# An empty, "." or ".." part (which also catches "", a leading or trailing "/"), a NUL or a backslash.
_UNSAFE_PATH = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|[\0\\]")


def is_safe_relpath(path: str) -> bool:
    """True for a relative POSIX path with no ``..``, no empty or ``.`` parts, no NUL."""
    return _UNSAFE_PATH.search(path) is None


# The same rule for many paths at once: joined by NUL (and framed by it), a path is unsafe exactly where
# a separator-or-end, zero to two dots and a separator-or-end meet, or a backslash appears.
_UNSAFE_IN_JOINED = tuple(f"{a}{dots}{b}" for a in "/\0" for dots in ("", ".", "..") for b in "/\0") + ("\\",)
_UNSAFE_WITHOUT_DOTS = tuple(form for form in _UNSAFE_IN_JOINED if "." not in form)


def unsafe_relpaths(paths: Iterable[str]) -> set[str]:
    """The paths that :func:`is_safe_relpath` refuses; usually none, found with a few substring searches."""
    paths = list(paths)
    joined = "\0" + "\0".join(paths) + "\0"
    # Names rarely start with a dot: two searches then rule out two thirds of the unsafe forms.
    forms = _UNSAFE_IN_JOINED if "/." in joined or "\0." in joined else _UNSAFE_WITHOUT_DOTS
    if joined.count("\0") == len(paths) + 1 and not any(bad in joined for bad in forms):
        return set()  # no NUL inside a name (it would pass for a separator) and nothing unsafe
    return {path for path in paths if not is_safe_relpath(path)}


def is_utf8_name(path: str) -> bool:
    """False for a name whose bytes are not UTF-8 (listed with surrogate escapes, as ``os.fsdecode`` does)."""
    if path.isascii():
        return True  # the common case, decided at C speed
    try:
        path.encode()
    except UnicodeEncodeError:
        return False
    return True


def printable_name(path: str) -> str:
    """``path`` as text that can be printed and stored: undecodable bytes as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# Unicode's control characters (category Cc: C0, DEL, C1).  In a file name they would break an
# output line in two (a newline) or drive the reader's terminal (ESC); JSON escapes them itself.
# Also the line and paragraph separators (a mail reader may break the line there) and the bidi
# embedding, override and isolate marks (they can show a name reordered: "Trojan source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as its backslash escape (``\\n``, ``\\x1b``,
    ``\\u2028``): how a name is shown on a terminal, in a mail or a report (one name, one line)."""
    return _CONTROL.sub(lambda m: _NAMED_ESCAPES.get(m[0]) or _escape(m[0]), text)


def _escape(char: str) -> str:
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def temp_target(relpath: str) -> str | None:
    """For an rsync temp or partial, the relative path of the file it will become; else None."""
    parts = relpath.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in PARTIAL_DIRS:
            return "/".join(parts[:i] + parts[i + 1 :])
    match = _RSYNC_TEMP.match(parts[-1])
    return "/".join([*parts[:-1], match["name"]]) if match else None


class _Collector:
    """Sorts raw entries into data files and temps (same rules for local and remote).

    The name patterns are compiled once into one regular expression (fnmatch's own
    translation, so the same case-sensitive rules as ``fnmatchcase``).
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.matches = _name_matcher(patterns)
        # Patterns that are all "*" and a plain ending (no wildcard, no "/"): the ending alone decides.
        plain = patterns and all(p.startswith("*") and not any(c in p[1:] for c in "*?[/") for p in patterns)
        self.suffixes = tuple(p[1:] for p in patterns) if plain else None
        self.files: dict[str, FileStat] = {}
        self.temps: dict[str, FileStat] = {}

    def add(self, relpath: str, entry: FileStat) -> None:
        """Any entry (rare kinds, temps, dot-files); the hot paths inline the common case."""
        if entry.kind == "d":
            return
        name = relpath.rsplit("/", 1)[-1]
        if name.startswith(".") or _in_partial_dir(relpath):
            self.add_hidden(relpath, entry)
        elif self.matches(name):
            self.files[relpath] = entry

    def add_hidden(self, relpath: str, entry: FileStat) -> None:
        """A dot-file or a file under a partial folder: never data; kept apart if an rsync temp
        (named like one, of a file the patterns would copy: rsync makes temps of nothing else).

        A dot-file named like a temp beside its file (``.a.fits.AbC123``) is one only if nobody
        but its owner may read it: rsync creates its temps so (mode & 0700) and sets the final
        mode just before the rename; a user's hidden copy (0644) is theirs and never tidied.
        """
        target = temp_target(relpath) if entry.kind == "f" else None
        if target is None or not self.matches(target.rsplit("/", 1)[-1]):
            return
        if _in_partial_dir(relpath) or (entry.mode >= 0 and not entry.mode & 0o077):
            self.temps[relpath] = entry

    def add_folder(self, folder: str, real: str, root_real: str) -> None:
        if not _inside(real, root_real):
            self.files[folder] = FileStat(0, 0.0, "l", real)


def _inside(real: str, root_real: str) -> bool:
    """True when the real path ``real`` is the root's real path or lies below it."""
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def _name_matcher(patterns: Sequence[str]) -> Callable[..., object]:
    """``matches(text, pos=0)``: true when ``text[pos:]`` matches one of the patterns."""
    if not patterns:
        return lambda _text, _pos=0: None
    return re.compile("|".join(translate(pattern) for pattern in patterns)).match


def _in_partial_dir(relpath: str) -> bool:
    return _PARTIAL_PART.search(relpath) is not None


def list_files(
    location: Location,
    folders: Iterable[str],
    patterns: Sequence[str],
    shell: Shell | None = None,
    marker: str | None = None,
) -> Listing:
    """List the data files in ``folders`` (relative to ``location``) matching ``patterns``.

    Missing folders are simply empty; a missing root gives an empty listing with
    ``root_exists=False``; a folder that cannot be read raises TransportError (never
    "empty").  ``marker``: an absolute path on the same host whose existence the listing
    reports (``Listing.marker_present``), in the same round trip.  Remote: one ssh round
    trip; raises HostUnreachable or RemoteCommandFailed.  Folder names must be safe
    relative paths (PathEscapeError).
    """
    folders = list(dict.fromkeys(folders))
    for folder in folders:
        if folder != WHOLE_ROOT and not is_safe_relpath(folder):
            raise PathEscapeError(f"folder {folder!r} escapes its root", str(location))
    collector = _Collector(patterns)
    if location.is_remote:
        listing = _list_remote(location, folders, collector, shell or Shell(), marker)
    else:
        listing = _list_local(Path(location.path), folders, collector)
        listing.marker_present = None if marker is None else os.path.exists(marker)
    return listing


def missing_disk(
    listing: Listing, where: Location, archive: Location | None, marker: str | None, shell: Shell
) -> str | None:
    """Why ``listing`` (of ``where``) must not be trusted because a disk looks unmounted, or None.

    ``archive``: the archive's own folder when ``where`` is an instrument's folder in an
    archive (None: ``where`` is an instrument's source); ``marker``: the file the archive must
    hold (``require_marker``), asked for in the listing.  An instrument's folder may be missing
    in an archive (nothing copied there yet); a source's folder or the archive's may not: an
    unmounted disk would pass for an empty one and, as a destination, be written beneath.  A
    mount point left as an empty folder is caught only by the marker.
    """
    if marker is not None and not listing.marker_present:
        return f"archive marker file {marker} missing (disk not mounted?) ({where})"
    if listing.root_exists:
        return None
    if archive is None:
        return f"source folder missing (instrument disk not mounted?) ({where})"
    if not is_folder(archive, shell):
        return f"archive folder missing (disk not mounted?) ({archive})"
    return None


def is_folder(location: Location, shell: Shell) -> bool:
    """True if ``location`` is a folder (one round trip if remote)."""
    if not location.is_remote:
        return Path(location.path).is_dir()
    try:
        shell.run(location, f"test -d {shell_path(location.path)}")
    except RemoteCommandFailed:
        return False
    return True


def _list_local(root: Path, folders: list[str], collector: _Collector) -> Listing:
    now = time.time()
    if not _is_dir(root):
        return Listing(root_exists=False, host_time=now)
    root_real = os.path.realpath(root)
    superseded = _folders_in(root / SUPERSEDED_DIR)
    staged = _is_dir(root / STAGING_DIR) or _is_symlink(root / STAGING_DIR)  # a symlink: clear_staging refuses it
    if WHOLE_ROOT in folders:
        _walk(root, "", collector)
        return Listing(collector.files, host_time=now, temps=collector.temps, superseded=superseded, staged=staged)
    for folder in folders:
        top = root / folder
        is_dir = _is_dir(top)
        if not (is_dir or _is_symlink(top)):
            continue
        collector.add_folder(folder, os.path.realpath(top), root_real)
        if folder in collector.files or not is_dir:
            continue
        _walk(top, folder, collector)
    return Listing(collector.files, host_time=now, temps=collector.temps, superseded=superseded, staged=staged)


# What Path.is_dir() takes for "no such folder"; any other error (EACCES: a folder on the way
# cannot be searched) means we cannot tell, and must not answer "empty".
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        if err.errno in _ABSENT:
            return False
        raise _cannot_list(path, err) from err


def _is_symlink(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as err:
        if err.errno in _ABSENT:
            return False
        raise _cannot_list(path, err) from err


def _cannot_list(folder: Path | str, err: OSError) -> TransportError:
    return TransportError(f"cannot list {folder}: {err.strerror}")


def _folders_in(folder: Path) -> list[str]:
    """The names of the real folders (not symlinks) directly in ``folder``; none if it is missing."""
    try:
        with os.scandir(folder) as it:
            return [entry.name for entry in it if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _walk(top: Path | str, prefix: str, collector: _Collector, in_partial: bool = False) -> None:
    """Walk one folder.  Per entry the common case costs one name match and one ``lstat``:
    dot-files and partial folders are decided per name / per folder, folders come from the
    ``d_type`` scandir already read, and names that match no pattern are never stat'ed."""
    try:
        with os.scandir(top) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return  # vanished (or replaced) since its parent was read: nothing there
    except OSError as err:
        raise _cannot_list(top, err) from err  # unreadable is not empty: its files would pass for missing
    files, matches = collector.files, collector.matches
    lead = f"{prefix}/" if prefix else ""
    for entry in entries:
        name = entry.name
        relpath = lead + name
        try:
            if entry.is_dir(follow_symlinks=False):
                if name not in (SUPERSEDED_DIR, STAGING_DIR):
                    _walk(entry.path, relpath, collector, in_partial or name in PARTIAL_DIRS)
                continue
            if not (in_partial or name.startswith(".")):
                if not matches(name):
                    continue
                st = entry.stat(follow_symlinks=False)
                if entry.is_file(follow_symlinks=False):
                    files[relpath] = FileStat(st.st_size, st.st_mtime_ns / 1e9)
                    continue
            else:
                st = entry.stat(follow_symlinks=False)
            kind = _kind(st.st_mode)
            target = os.readlink(entry.path) if kind == "l" else ""
        except FileNotFoundError:
            continue  # vanished since the folder was read: not there
        except OSError as err:
            raise _cannot_list(top, err) from err  # e.g. a folder readable but not searchable
        mode = stat.S_IMODE(st.st_mode) if kind != "l" else -1  # as find's listing: a link's own mode means nothing
        collector.add(relpath, FileStat(st.st_size, st.st_mtime_ns / 1e9, kind, target, mode))


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "p" if stat.S_ISFIFO(mode) else "s" if stat.S_ISSOCK(mode) else "c"


# One script, one round trip: whether the marker file asked for exists, host clock, real root,
# then each existing folder's real path (D) and every entry below them (F).  The folders are the
# script's arguments, or, past _ARGS_MAX bytes, come on stdin, NUL-separated (decades of dated
# folders would pass the kernel's limit on one argument) and ``xargs -0`` hands them to a shell in
# as many batches as needed; each batch prints its D records, then runs find on its folders (D
# records are padded to find's six fields so both parse in one loop).  ``find -H`` follows a dated folder that is itself a symlink (its real
# path is checked against the root first); entries below are never followed.  Real paths come
# from ``cd -P`` and ``$PWD`` (shell builtins: no process per folder).  A file that vanishes
# while find reads its folder (a writer's temp file renamed into place) is no error; a folder
# that is there but cannot be entered is one (else an unreadable night would look empty).
_LIST_HEAD = """\
{marker_test}
cd -P -- {root} 2>/dev/null || {{
  [ -e {root} ] || {{ printf 'N\\0'; exit 0; }}
  printf 'cannot list %s: cannot enter the folder\\n' {root} >&2; exit 3
}}
root=$PWD superseded={superseded} staging={staging}
export root superseded staging
printf 'T\\0%s\\0R\\0%s\\0' "$(date +%s.%N)" "$root"
for v in "$superseded"/*; do
  [ -d "$v" ] && [ ! -L "$v" ] && printf 'V\\0%s\\0' "${{v#"$superseded"/}}"
done
[ ! -d "$staging" ] && [ ! -L "$staging" ] || printf 'S\\0'
"""

# The folder part: run by the same sh on the folders given as its arguments (the usual window), or,
# for a list over _ARGS_MAX bytes, by ``xargs -0`` reading them from stdin, in as many batches as needed.
_LIST_FOLDERS = """\
given=$#
for d; do
  if [ -d "$d" ]; then
    cd -P -- "$d" 2>/dev/null || {
      printf "cannot list %s/%s: cannot enter the folder\\n" "$root" "$d" >&2; exit 3
    }
    real=$PWD
    cd -- "$root" || exit 3
    printf "D\\0%s\\0%s\\0\\0\\0\\0" "$d" "$real"
    case "$real/" in "$root"/*) set -- "$@" "$d" ;; esac
  elif [ -L "$d" ]; then
    printf "D\\0%s\\0%s\\0\\0\\0\\0" "$d" "$(readlink -- "$d")"
  fi
done
shift "$given"
[ $# -gt 0 ] || exit 0
exec find -H "$@" -mindepth 1 -ignore_readdir_race \\( -name "$superseded" -o -name "$staging" \\) -prune -o \\
  -type l -printf "F\\0%p\\0%s\\0%T@\\0%y\\0%l\\0" -o -printf "F\\0%p\\0%s\\0%T@\\0%y\\0%m\\0"
"""
_ARGS_MAX = 32_768  # bytes of folder names passed as arguments; more go on stdin


def _list_remote(
    location: Location, folders: list[str], collector: _Collector, shell: Shell, marker: str | None
) -> Listing:
    if WHOLE_ROOT in folders:
        folders = [WHOLE_ROOT]  # find prints ./a/b: the prefix is cut while parsing
    head = _LIST_HEAD.format(
        marker_test=f"[ ! -e {shell_path(marker)} ] || printf 'M\\0'" if marker else ":",
        root=shell_path(location.path),
        superseded=shlex.quote(SUPERSEDED_DIR),
        staging=shlex.quote(STAGING_DIR),
    )
    stdin = nul_separated(folders)
    if len(stdin) <= _ARGS_MAX:  # the usual window: no xargs and second sh to start (a few ms of the no-op)
        script, stdin = f"{head}set -- {' '.join(map(shlex.quote, folders))}\n{_LIST_FOLDERS}", b""
    else:
        script = f"{head}exec xargs -0 -r sh -c {shlex.quote(_LIST_FOLDERS)} sh\n"
    answer = _RemoteAnswer(collector, marker, cut=2 if folders == [WHOLE_ROOT] else 0)
    try:
        shell.stream(location, script, answer.feed, stdin=stdin)
        return answer.finish()
    except (ValueError, IndexError) as err:  # a host whose sh or find answers something else
        raise TransportError(f"the host's answer is not a listing ({err})", str(location)) from err


class _RemoteAnswer:
    """:data:`_LIST_HEAD`'s answer, parsed as it arrives: a few header records, then find's
    records of 6 fields each, added to the collector a batch at a time while find still prints.

    ValueError or IndexError (from :meth:`feed` or :meth:`finish`) for anything else.
    """

    _HEADER_FIELDS: ClassVar[dict[str, int]] = {"M": 1, "T": 2, "R": 2, "V": 2, "S": 1, "N": 1}  # tag: its fields

    def __init__(self, collector: _Collector, marker: str | None, cut: int = 0) -> None:
        self.collector, self.cut = collector, cut  # cut: the "./" of a whole-root listing's paths
        self.host_time, self.root_real, self.superseded, self.staged = time.time(), "/", [], False
        self.marker_present = False if marker else None
        self.root_exists, self.in_header = True, True
        self._fields: list[str] = []
        self._tail = b""  # the bytes after the last NUL: a field still coming

    def feed(self, data: bytes) -> None:
        """Take the next piece of the answer; add the records it completes."""
        data = self._tail + data
        end = data.rfind(b"\0") + 1
        self._tail = data[end:]
        if end:  # a NUL never lies inside a UTF-8 sequence: whole fields decode alike piece by piece
            self._fields += data[: end - 1].decode(sys.getfilesystemencoding(), "surrogateescape").split("\0")
            self._take(last=False)

    def finish(self) -> Listing:
        """The listing, once the command has ended (a record left incomplete is dropped)."""
        self._fields.append(self._tail.decode(sys.getfilesystemencoding(), "surrogateescape"))
        self._take(last=True)
        if not self.root_exists:
            return Listing(root_exists=False, host_time=self.host_time, marker_present=self.marker_present)
        collector = self.collector
        return Listing(collector.files, host_time=self.host_time, temps=collector.temps, superseded=self.superseded,
                       marker_present=self.marker_present, staged=self.staged)  # fmt: skip

    def _take(self, last: bool) -> None:
        fields = self._fields
        if not self.root_exists:
            fields.clear()
            return
        start = self._header(fields, last) if self.in_header else 0
        if self.in_header:
            del fields[:start]
            return
        whole = start + (len(fields) - start) // 6 * 6
        _add_found(fields[start:whole], self.collector, self.root_real, self.cut)
        del fields[:whole]

    def _header(self, fields: list[str], last: bool) -> int:
        """Read the header records at the start of ``fields``; return where they end."""
        i = 0
        while i < len(fields) and fields[i] and fields[i] not in "DF":
            tag = fields[i]
            size = self._HEADER_FIELDS.get(tag)
            if size is None:
                raise ValueError(f"unexpected listing record {tag!r}")
            if i + size > len(fields) and not last:
                return i  # the rest of this record is still coming
            if tag == "N":
                self.root_exists = False
                return len(fields)
            if tag == "M":
                self.marker_present = True
            elif tag == "T":
                self.host_time = float(fields[i + 1])
            elif tag == "R":
                self.root_real = fields[i + 1]
            elif tag == "V":
                self.superseded.append(fields[i + 1])
            elif tag == "S":
                self.staged = True
            i += size
        if i < len(fields) or last:
            self.in_header = False
        return i


def _add_found(fields: list[str], collector: _Collector, root_real: str, cut: int = 0) -> None:
    """find's ``F`` records and the ``D`` records of its folders (6 fields each: ``fields`` holds
    whole records only); the hot loop of a remote listing.

    ``cut``: characters to drop from each path (2 for the ``./`` of a whole-root listing)."""
    tags, paths, sizes, mtimes, kinds, lasts = (fields[k::6] for k in range(6))
    if cut:
        paths = [path[cut:] for path in paths]
    if not _add_plain_files(tags, paths, sizes, mtimes, kinds, collector, root_real):
        _add_each(zip(tags, paths, sizes, mtimes, kinds, lasts, strict=True), collector, root_real)


def _add_plain_files(
    tags: list[str],
    paths: list[str],
    sizes: list[str],
    mtimes: list[str],
    kinds: list[str],
    collector: _Collector,
    root_real: str,
) -> bool:
    """The common answer in bulk, at C speed (a no-op sync of 10,000 files lists them all): nothing
    but regular files and folders, no dot at the start of any name (so no temp, no partial folder),
    nights inside the root, and find's usual 9-digit fractions.  False, and nothing added, for any
    other answer: :func:`_add_each` then decides entry by entry, as it always could."""
    keep = [tag == "F" and kind == "f" for tag, kind in zip(tags, kinds, strict=True)]
    if not all(keep):  # folders: those below a night (nothing to add), the nights (a D record: real path as size)
        for i in (i for i, regular in enumerate(keep) if not regular):
            if not ((tags[i], kinds[i]) == ("F", "d") or (tags[i] == "D" and _inside(sizes[i], root_real))):
                return False
        paths, sizes, mtimes = (list(compress(column, keep)) for column in (paths, sizes, mtimes))
    joined = "\0" + "\0".join(paths)
    seconds = _all_seconds(mtimes)
    if "/." in joined or "\0." in joined or seconds is None:
        return False
    if collector.suffixes is not None:  # e.g. "*.fits": a name ends so exactly when its path does
        wanted = list(map(methodcaller("endswith", collector.suffixes), paths))
    else:
        matches = collector.matches
        wanted = [matches(path, path.rfind("/") + 1) is not None for path in paths]
    stats = zip(map(int, sizes), seconds, repeat("f"), repeat(""), repeat(-1))
    collector.files.update(compress(zip(paths, map(tuple.__new__, repeat(FileStat), stats)), wanted))
    return True


# find's %T@ as GNU find prints it: seconds, a dot, then nanoseconds (4.9: and a 0), joined by NUL
_TIMES_9, _TIMES_10 = (re.compile(rf"(?:[0-9]+\.[0-9]{{{n}}}(?:\0|\Z))*") for n in (9, 10))


def _all_seconds(mtimes: list[str]) -> list[float] | None:
    """Every ``%T@`` as :func:`_seconds` reads it, in bulk; None unless all have the same 9 or 10 decimals."""
    if not mtimes:
        return []
    joined = "\0".join(mtimes)
    if _TIMES_9.fullmatch(joined):
        return list(map(truediv, map(int, joined.replace(".", "").split("\0")), repeat(1e9)))
    if _TIMES_10.fullmatch(joined):  # as _seconds: the 10th digit goes
        return list(map(truediv, map(floordiv, map(int, joined.replace(".", "").split("\0")), repeat(10)), repeat(1e9)))
    return None


def _add_each(records: Iterable[tuple[str, ...]], collector: _Collector, root_real: str) -> None:
    """The records one by one: any kind of entry, temps, dot-files, folders outside the root."""
    files, matches, add = collector.files, collector.matches, collector.add
    for tag, relpath, size, mtime, kind, last in records:
        if tag != "F":
            if tag != "D":
                raise ValueError(f"unexpected listing record {tag!r}")
            collector.add_folder(relpath, size, root_real)
            continue
        if kind == "f":
            slash = relpath.rfind("/")
            if not relpath.startswith(".", slash + 1) and matches(relpath, slash + 1) and not _in_partial_dir(relpath):
                files[relpath] = FileStat(int(size), _seconds(mtime))
                continue
        # last: a symlink's target, else the permission bits in octal
        if kind == "l":
            add(relpath, FileStat(int(size), _seconds(mtime), kind, last))
        else:
            add(relpath, FileStat(int(size), _seconds(mtime), kind, "", int(last, 8)))


def _seconds(text: str) -> float:
    """find's ``%T@`` (``1700000000.1234567890``) as a float made the way ``st_mtime_ns / 1e9`` is,
    so a local and a remote listing of the same file give the very same number."""
    whole, _, frac = text.partition(".")
    return (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])) / 1e9


def xxh128_file(path: Path | str) -> str:
    """The xxh128 hex digest of a local file (what rsync's ``%C`` prints)."""
    with open(path, "rb", buffering=0) as handle:
        data = handle.read(_READ_BYTES)
        if len(data) < _READ_BYTES:
            return xxhash.xxh128_hexdigest(data)  # a small file: one read, one call
        digest = xxhash.xxh128(data)
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# Remote hashing with rsync itself: a dry run into an empty temp folder with --checksum makes
# the sender hash every listed file and print it.  Files missing on the host are left out.
_HASH_SCRIPT = """\
cd -- {root} || exit 3
empty=$(mktemp -d) || exit 3
rsync --checksum --checksum-choice=xxh128 --dry-run --recursive --from0 --files-from=- \\
  --out-format='%C %n' ./ "$empty/"
rc=$?
rmdir "$empty"
[ $rc -eq 0 ] || [ $rc -eq 23 ] || [ $rc -eq 24 ] || exit $rc
"""


def hash_files(location: Location, paths: Iterable[str], shell: Shell | None = None) -> dict[str, str]:
    """xxh128 of each of ``paths`` (relative to ``location``) that exists there, as hex.

    Local: read with xxhash.  Remote: one ssh command running rsync's own hashing (see
    the module docstring).  Unsafe paths raise PathEscapeError; missing and unreadable files
    are absent from the result.
    """
    paths = list(dict.fromkeys(paths))
    for path in paths:
        if not is_safe_relpath(path):
            raise PathEscapeError(f"path {path!r} escapes its root", str(location))
    if not paths:
        return {}
    if not location.is_remote:
        root, hashes = location.path.rstrip("/") or "/", {}
        for path in paths:
            try:
                hashes[path] = xxh128_file(f"{root}/{path}")  # a str: pathlib costs more than the read
            except (FileNotFoundError, IsADirectoryError):
                continue
            except OSError as err:  # unreadable: left unhashed, as the remote rsync leaves it (exit 23)
                log.warning("cannot hash %s/%s: %s", root, path, err.strerror)
        return hashes
    script = _HASH_SCRIPT.format(root=shell_path(location.path))
    out = (shell or Shell()).run(location, script, stdin=nul_separated(paths))
    wanted, hashes = set(paths), {}
    for line in out.splitlines():
        match = _HASH_LINE.match(line)
        if match and (name := printed_name(match[2])) in wanted:
            hashes[name] = match[1].decode()
    return hashes


def folder_of(relpath: str) -> str:
    """The folder part of a relative path (``2016/0907`` for ``2016/0907/x.fits``)."""
    return str(PurePosixPath(relpath).parent)
