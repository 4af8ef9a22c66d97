"""Can this account use a local folder as obsflow will: ``obsflow config check --paths``.

Access is asked of the kernel (``os.access``), not read from the mode bits: root may read and
write a folder of mode 000, a read-only mount refuses even root, and ACLs have their say.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

__all__ = ["READ", "WRITE", "folder_problem"]

READ = os.R_OK | os.X_OK  # list the folder and open what it holds
WRITE = os.W_OK | os.X_OK  # create, rename and remove entries in it
_ACCESS_WORDS = ((os.R_OK, "readable"), (os.X_OK, "enterable"), (os.W_OK, "writable"))


def folder_problem(path: Path, access: int, created_if_missing: bool = False) -> str | None:
    """What keeps this account from using ``path`` as a folder with ``access`` (READ, WRITE or both); None if nothing.

    ``created_if_missing``: obsflow makes the folder on its first run, so a missing one only has
    to be creatable.  A symlink to a folder is a folder.
    """
    try:
        is_folder = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return _missing_folder_problem(path, created_if_missing)
    except OSError as err:  # a folder above it that cannot be entered, an NFS server that went away
        return f"{path} cannot be reached: {err.strerror}"
    if not is_folder:
        return f"{path} is not a folder"
    return _access_problem(path, access)


def _missing_folder_problem(path: Path, created_if_missing: bool) -> str | None:
    """Why a folder that is not there is a problem: a dangling symlink, or it must exist, or it cannot be made."""
    if os.path.islink(path):
        return f"{path} is a broken symlink (to {os.readlink(path)})"
    if not created_if_missing:
        return f"{path} does not exist"
    above = _nearest_existing(path)
    if not os.path.isdir(above):
        return f"{path} cannot be created: {above} is not a folder"
    if (problem := _access_problem(above, WRITE)) is not None:
        return f"{path} cannot be created: {problem}"
    return None


def _nearest_existing(path: Path) -> Path:
    """The folder ``mkdir -p`` would create ``path`` in (or the file in its way)."""
    return next(folder for folder in path.absolute().parents if os.path.lexists(folder))


def _access_problem(folder: Path, access: int) -> str | None:
    """``<folder> is not readable or enterable by <account>``, naming each access it lacks; None if none."""
    lacking = [word for bit, word in _ACCESS_WORDS if access & bit and not os.access(folder, bit)]
    return f"{folder} is not {' or '.join(lacking)} by {_account()}" if lacking else None


def _account() -> str:
    """This process's user name (the account the answer is for: the sync's may be another)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container)
        return f"uid {os.getuid()}"
