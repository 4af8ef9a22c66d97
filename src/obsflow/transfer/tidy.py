"""Tidying a destination: rsync temp files left by a killed run, copies that must not stay, and
old versions of grown files.

A SIGKILLed rsync cannot clean up: it leaves its temp file ``.<name>.<6 random characters>``
(e.g. ``.SHA_0001.fits.a1B2c3``) next to the final name.  Before copying, each such temp is
moved into ``.rsync-partial/name`` (so the next rsync resumes from it; rsync checks the
whole-file hash afterwards, so a bad prefix cannot survive) unless a longer partial is already
there, and partials whose file is complete are removed.  Only hidden temp names are ever
touched here, plus (``remove_copies``) files this very run just copied and then found to be
stale, plus (``prune_superseded``) the sync's own ``.obsflow-superseded/<time>/`` folders once
they are older than the instrument's ``keep_superseded_days``; never a source, never any
other file.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from obsflow.config import Location
from obsflow.transfer.listing import (
    SUPERSEDED_DIR,
    SUPERSEDED_VERSION,
    FileStat,
    is_safe_relpath,
    printable_name,
    temp_target,
)
from obsflow.transfer.remote import REAL_FOLDERS_SH, Shell, shell_path
from obsflow.transfer.rsync import PARTIAL_DIR
from obsflow.transfer.staging import real_folders

__all__ = ["plan_prune", "plan_tidy", "prune_superseded", "remove_copies", "tidy"]

log = logging.getLogger(__name__)

Op = tuple[str, str, str]  # ("mv", from, to) or ("rm", path, "")
# What SUPERSEDED_VERSION writes (UTC, "Z"), or wrote before in local time (no "Z"); nothing else is touched.
_VERSION_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z?$")


def plan_tidy(temps: Mapping[str, FileStat], present: Mapping[str, FileStat]) -> list[Op]:
    """Moves and removals that turn leftover temps into resumable partials (pure)."""
    ops: list[Op] = []
    partial_sizes = {path: st.size for path, st in temps.items() if f"/{PARTIAL_DIR}/" in f"/{path}"}
    for path, st in sorted(temps.items()):
        target = temp_target(path)
        if target is None or not is_safe_relpath(path):
            continue
        if target in present:
            ops.append(("rm", path, ""))
            continue
        if path in partial_sizes or "/.~tmp~/" in f"/{path}":
            continue  # already a partial: rsync resumes from it
        folder, name = str(PurePosixPath(target).parent), PurePosixPath(target).name
        partial = f"{folder}/{PARTIAL_DIR}/{name}" if folder != "." else f"{PARTIAL_DIR}/{name}"
        if partial_sizes.get(partial, -1) >= st.size:
            ops.append(("rm", path, ""))
        else:
            ops.append(("mv", path, partial))
            partial_sizes[partial] = st.size
    return ops


def tidy(location: Location, ops: Sequence[Op], shell: Shell) -> None:
    """Apply :func:`plan_tidy` operations at ``location`` (one round trip if remote).

    A temp is moved only where every folder on the way to its partial's name that exists is a real
    folder: a partial folder that is a symlink may lead anywhere, and the move would write there
    (and replace a file of that name).  The temp then stays where it is: hidden, never data.
    """
    if not ops:
        return
    for op, path, to in ops:
        log.info("tidy %s: %s %s %s", location, op, path, to)
    if location.is_remote:
        lines = [f"cd -- {shell_path(location.path)} || exit 3", REAL_FOLDERS_SH]
        for op, path, to in ops:
            if op == "mv":
                parent, quoted = shlex.quote(str(PurePosixPath(to).parent)), shlex.quote(to)
                lines.append(f"if real {quoted}; then mkdir -p -- {parent} && mv -f -- {shlex.quote(path)} {quoted}; "
                             f"else printf '%s\\0' {quoted}; fi")  # fmt: skip
            else:
                lines.append(f"rm -f -- {shlex.quote(path)}")
        out = shell.run(location, "\n".join(lines))
        _not_moved(location, [os.fsdecode(name) for name in out.split(b"\0") if name])
        return
    root = Path(location.path)
    for op, path, to in ops:
        if op == "mv":
            if not real_folders(root, to):
                _not_moved(location, [to])
                continue
            (root / to).parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / path, root / to)
        else:
            (root / path).unlink(missing_ok=True)


def _not_moved(location: Location, partials: Sequence[str]) -> None:
    for partial in partials:
        log.warning("tidy %s: left a temp where it is: a folder on the way to %s is a symlink or a file",
                    location, printable_name(partial))  # fmt: skip


def remove_copies(location: Location, paths: Sequence[str], shell: Shell) -> None:
    """Remove files this run copied to ``location`` and then found stale (source changed meanwhile)."""
    tidy(location, [("rm", p, "") for p in paths if is_safe_relpath(p)], shell)


def plan_prune(versions: Sequence[str], keep_days: float, now: float) -> list[str]:
    """The superseded versions (folder names) made more than ``keep_days`` before ``now`` (pure).

    A version's age is the time in its name (when the sync replaced those files, in UTC as
    :data:`SUPERSEDED_VERSION` writes it; a name without the "Z" is in the local time of the
    host running the sync, as earlier versions wrote it); a folder whose name is not such a
    time is not ours and is never chosen.
    """
    cutoff = now - keep_days * 86400
    old = []
    for name in versions:
        if not _VERSION_NAME.match(name):
            continue
        try:
            fields = time.strptime(name.removesuffix("Z"), SUPERSEDED_VERSION.removesuffix("Z"))
        except ValueError:
            continue  # e.g. month 13: not a name the sync wrote
        made = calendar.timegm(fields) if name.endswith("Z") else time.mktime(fields)
        if made < cutoff:
            old.append(name)
    return old


def prune_superseded(location: Location, versions: Sequence[str], shell: Shell) -> None:
    """Remove the superseded version folders ``versions`` at ``location`` (one round trip if remote).

    Raises OSError (here) or RemoteCommandFailed (there) when they cannot be removed.
    """
    names = [name for name in versions if _VERSION_NAME.match(name)]
    if not names:
        return
    log.info("prune %s: %s/%s", location, SUPERSEDED_DIR, ", ".join(names))
    # A .obsflow-superseded that is a symlink is not the sync's own folder: nothing in it is removed.
    if location.is_remote:
        folder = shell_path(str(PurePosixPath(location.path, SUPERSEDED_DIR)))
        shell.run(location, f"if [ -L {folder} ]; then echo {folder} is a symlink >&2; exit 4; fi\n"
                            f"cd -- {folder} && rm -rf -- {shlex.join(names)}")  # fmt: skip
        return
    folder = Path(location.path, SUPERSEDED_DIR)
    if folder.is_symlink():
        raise NotADirectoryError(f"{folder} is a symlink")
    for name in names:
        shutil.rmtree(folder / name)
