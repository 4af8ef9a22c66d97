"""Copies that take their final name only after a second look at their source.

rsync renames each file into place as soon as its data are through, and sends what it finds
when it opens the file, under the size and mtime it listed: a file a writer appended to during
its copy (a filler adding a scan to an SDFITS product hours after the last one) lands under its
final name as a mix of two states.  So the files that may change at any time (a source that
grows or that a filler writes, or a file modified within the last hour) are copied into
``<dest>/.obsflow-staging/<path>`` instead; the hop lists their source again, and only the
copies whose source is still what was planned are moved to their final names here (a rename:
atomic).  The rest are removed.  A run stopped between the copy and the move leaves them in
the staging folder, hidden and never counted, and the next run turns them into partials in its
``.rsync-partial`` folders (as it does a SIGKILLed rsync's temps), so an interrupted big file
still resumes.

A staged file never replaces anything at its final name, except a grown file's own older copy
(``replace``), which is first moved whole into the superseded folder: nothing is lost.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from obsflow.config import Location
from obsflow.errors import RemoteCommandFailed, TransportError
from obsflow.transfer.listing import STAGING_DIR, is_safe_relpath, printable_name, temp_target
from obsflow.transfer.remote import REAL_FOLDERS_SH, Shell, nul_separated, shell_path
from obsflow.transfer.rsync import PARTIAL_DIR

__all__ = ["Published", "clear_staging", "publish", "real_folders", "staging_of"]

log = logging.getLogger(__name__)


def staging_of(dest: Location) -> Location:
    """Where copies to ``dest`` wait for their second look."""
    return dest.join(STAGING_DIR)


@dataclass
class Published:
    """What :func:`publish` did: moved to their final names, or left because that name was taken;
    ``stopped``: why it stopped partway (a full disk), after moving ``moved``."""

    moved: list[str] = field(default_factory=list)
    name_taken: list[str] = field(default_factory=list)
    stopped: TransportError | None = None


def publish(dest: Location, new: Sequence[str], replace: Sequence[str], backup: str, shell: Shell) -> Published:
    """Move staged copies to their final names at ``dest`` (one round trip if remote).

    ``new``: only where nothing is at the final name (else left staged, in ``name_taken``, as when a
    folder on the way to the final name, or to the older copy's place, is a symlink or a file);
    ``replace``: grown files whose older copy, if still there, is first moved to ``backup/<path>``
    (relative to ``dest``).  A staged copy that is not there (nothing to move) is skipped.
    """
    entries = [("n", p) for p in new if is_safe_relpath(p)] + [("r", p) for p in replace if is_safe_relpath(p)]
    if not entries:
        return Published()
    if dest.is_remote:
        return _publish_remote(dest, entries, backup, shell)
    return _publish_local(Path(dest.path), entries, backup)


def _publish_local(root: Path, entries: list[tuple[str, str]], backup: str) -> Published:
    done = Published()
    staging = root / STAGING_DIR
    for kind, path in entries:
        staged, final = staging / path, root / path
        if not _is_file(staged):
            continue
        # A folder on the way that is a symlink (it may lead outside the root) or a file: never
        # written through, the name is taken (rsync, too, refuses to follow it to a final name).
        if not real_folders(root, path) or (kind == "r" and not real_folders(root, f"{backup}/{path}")):
            done.name_taken.append(path)
            continue
        try:
            if os.path.lexists(final):
                if kind == "n":
                    done.name_taken.append(path)
                    continue
                aside = root / backup / path
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.rename(final, aside)
            final.parent.mkdir(parents=True, exist_ok=True)
            if not _put_in_place(staged, final):
                done.name_taken.append(path)
                continue
        except OSError as err:  # e.g. a full disk (a new folder), permissions: as over ssh, the hop stops
            full = "destination disk full: " if err.errno == errno.ENOSPC else ""
            done.stopped = TransportError(f"{full}cannot move {printable_name(path)} into place: {err.strerror}",
                                          str(root))  # fmt: skip
            return done
        done.moved.append(path)
    return done


# link() fails for these where a file system has no hard links (vfat, some network mounts)
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV)


def _put_in_place(staged: Path, final: Path) -> bool:
    """Give ``staged`` the name ``final`` unless that name is taken (False): ``link()`` refuses a
    name in use in the same step that takes it, where a check then a rename would overwrite a file
    made in between; a file system without hard links gets the check and the rename."""
    try:
        os.link(staged, final)
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(final):
            return False
        os.rename(staged, final)
        return True
    os.unlink(staged)
    return True


def real_folders(root: Path, path: str) -> bool:
    """Whether every folder on the way to ``root/path`` that exists is a real folder (no symlink, no file)."""
    folder = root
    for part in path.split("/")[:-1]:
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return True  # made by mkdir, below a real folder
        if not stat.S_ISDIR(mode):
            return False
    return True


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


# Entries come on stdin as "n/<path>" or "r/<path>", NUL-separated (no limit on how many); each
# answer is "P" (moved) or "E" (final name taken, or a folder on its way is a symlink or a file),
# NUL-separated with its path.
_PUBLISH_SCRIPT = """\
cd -- {root} || exit 3
S={staging} B={backup}
export S B
exec xargs -0 -r sh -c '
{real}
for e; do
  kind=${{e%%/*}} p=${{e#*/}}
  case $p in */*) d=${{p%/*}} ;; *) d=. ;; esac
  [ -f "$S/$p" ] && [ ! -L "$S/$p" ] || continue
  if ! real "$p" || {{ [ "$kind" = r ] && ! real "$B/$p"; }}; then printf "E\\0%s\\0" "$p"; continue; fi
  if [ -e "$p" ] || [ -L "$p" ]; then
    [ "$kind" = r ] || {{ printf "E\\0%s\\0" "$p"; continue; }}
    mkdir -p -- "$B/$d" && mv -f -- "$p" "$B/$p" || exit 3
  fi
  mkdir -p -- "$d" || exit 3
  if ln -T -- "$S/$p" "$p" 2>/dev/null; then rm -f -- "$S/$p"  # ln refuses a name in use as it takes it
  elif [ -e "$p" ] || [ -L "$p" ]; then printf "E\\0%s\\0" "$p"; continue
  else mv -f -- "$S/$p" "$p" || exit 3  # no hard links here: the check above, then the move
  fi
  printf "P\\0%s\\0" "$p"
done' sh
"""


def _publish_remote(dest: Location, entries: list[tuple[str, str]], backup: str, shell: Shell) -> Published:
    script = _PUBLISH_SCRIPT.format(root=shell_path(dest.path), staging=shlex.quote(STAGING_DIR),
                                    backup=shlex.quote(backup), real=REAL_FOLDERS_SH)  # fmt: skip
    stdin = nul_separated(f"{kind}/{path}" for kind, path in entries)
    done = Published()
    try:
        output = shell.run(dest, script, stdin=stdin)
    except RemoteCommandFailed as err:  # stopped partway: what it printed before was done
        output, done.stopped = err.output, err
    fields = os.fsdecode(output).split("\0")
    for tag, path in zip(fields[0::2], fields[1::2], strict=False):
        if tag == "P":
            done.moved.append(path)
        elif tag == "E":
            done.name_taken.append(path)
    return done


def clear_staging(dest: Location, shell: Shell) -> None:
    """Take the copies a stopped run left staged out of their staged names (never checked: never to be
    published): each becomes its folder's ``.rsync-partial/<name>``, from which its next copy resumes
    (rsync checks the whole file's hash, so nothing of it can survive unchecked), unless a partial at
    least as long is there.  An rsync temp (``.<name>.`` and six random letters or digits, left by a
    SIGKILLed rsync) becomes the partial of the name it stands for, by the same rule.

    A ``.obsflow-staging`` that is not a real folder (a symlink: it may lead anywhere) is never
    written through: TransportError, the hop stops before it copies.
    """
    folder = staging_of(dest)
    if dest.is_remote:
        quoted = shell_path(folder.path)
        shell.run(dest, _CLEAR_SCRIPT.format(staging=quoted, partial=shlex.quote(PARTIAL_DIR), real=REAL_FOLDERS_SH))
        return
    top = Path(folder.path)
    if top.is_symlink() or (top.exists() and not top.is_dir()):
        raise TransportError(_NOT_OURS, str(top))
    if not top.is_dir():
        return
    for parent, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != PARTIAL_DIR]
        for name in files:
            path = Path(parent, name)
            keep = Path(parent, PARTIAL_DIR, temp_target(name) or name)
            log.info("clearing %s (staged by a run that stopped before its check)", path)
            try:
                size, kept = path.lstat(), _size(keep)
                # a partial folder that is a symlink may lead outside the root: the copy goes instead
                through_link = not real_folders(top, str(keep.relative_to(top)))
                if not stat.S_ISREG(size.st_mode) or kept >= size.st_size or through_link:
                    path.unlink(missing_ok=True)
                    continue
                keep.parent.mkdir(exist_ok=True)
                os.replace(path, keep)
            except OSError as err:
                raise TransportError(f"cannot clear the staging folder: {err}", str(top)) from err


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return -1


_NOT_OURS = ("not a folder the sync made (a symlink?): nothing is copied through it; move it away "
             "(the sync makes its own)")  # fmt: skip

# Every leftover file below the staging folder (not in a partial folder) becomes the partial of its
# name (an rsync temp's: the name it stands for), unless a partial at least as long is there, or its
# folder's partial folder is a symlink or a file (it may lead outside the root: the copy goes instead).
_CLEAR_SCRIPT = """\
S={staging}
[ -e "$S" ] || [ -L "$S" ] || exit 0
[ -d "$S" ] && [ ! -L "$S" ] || {{ printf '%s: %s\\n' "$S" '""" + _NOT_OURS + """' >&2; exit 3; }}
cd -- "$S" || exit 3
find . -name {partial} -prune -o ! -type d -print0 | xargs -0 -r sh -c '
{real}
for f; do
  d=${{f%/*}} n=${{f##*/}}
  case $n in .?*.[A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9]) n=${{n#.}} n=${{n%.*}} ;; esac
  k=$d/{partial}/$n
  if [ ! -f "$f" ] || [ -L "$f" ] || ! real "$k" || {{ [ -f "$k" ] && [ "$(wc -c <"$k")" -ge "$(wc -c <"$f")" ]; }}; then
    rm -f -- "$f" || exit 3
  else
    mkdir -p -- "$d/{partial}" && mv -f -- "$f" "$k" || exit 3
  fi
done' sh
"""
