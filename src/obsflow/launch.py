"""The ``obsflow`` command's entry point: ``obsflow sync`` starts its ssh handshakes first.

A nightly sync that finds nothing to copy is one ssh handshake per host plus a listing; loading
the command line machinery (click and the sync modules) before the handshake starts would put
~0.05-0.1 s in front of it.  So the config is read and the shared connections are opened here,
with only what that needs imported, and the sync adopts them (see
:func:`obsflow.transfer.remote.shared_connections`).  Before even that, the connections the last
run of the same, unchanged config opened are started again from a memo (:mod:`obsflow.transfer.early`).  Anything unexpected here (no config, a bad
one, an option this quick look does not know) just means no early start: the command then reads
its arguments and config as always and reports any problem itself.
"""

from __future__ import annotations

import atexit
import os
import stat
import sys

TYPE_CHECKING = False  # not typing's: loading typing costs ~10 ms before the first ssh starts
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["main"]

_GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet"}
_VALUED = {"-c": "config", "--config": "config", "-i": "instrument", "--instrument": "instrument", "--hop": "hop"}


def main() -> int:
    """Run the ``obsflow`` command (``sys.argv``)."""
    wanted = sync_arguments(sys.argv[1:])
    if wanted is not None:
        _connect_early(wanted)
    from obsflow.cli import main as run_command

    code = run_command()
    if wanted is not None:
        _leave(code)
    return code


def _leave(code: int) -> NoReturn:
    """End a sync without the interpreter's teardown, which frees a run's ~100,000 listing and catalog
    objects one by one: ~0.05 s of a 0.7 s no-op sync of 10,000 files.  What of the teardown matters
    is done here: the exit handlers (logging's flush among them), then the output streams."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away: the normal exit would not print either
            pass
    os._exit(code)


def sync_arguments(args: list[str]) -> dict[str, str] | None:
    """For an ``obsflow sync`` command line, its config file, instrument and hop (those given);
    None for any other command, for ``--help``, or when the options cannot be read simply."""
    while args and args[0] in _GLOBAL_FLAGS:
        args = args[1:]
    if not args or args[0] != "sync":
        return None
    wanted = {"config": os.environ.get("OBSFLOW_CONFIG", "obsflow.toml")}
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("-h", "--help", "--"):
            return None
        name, given, value = arg.partition("=")
        if name in _VALUED:
            value = value if given else next(rest, None)
            if value is None:
                return None
            wanted[_VALUED[name]] = value
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            wanted["config"] = arg[2:]  # -cFILE
    return wanted


def _connect_early(wanted: dict[str, str]) -> None:
    try:
        if not stat.S_ISREG(os.stat(wanted["config"]).st_mode):
            return  # a pipe or /dev/stdin: the command must be the one to read it
    except OSError:
        return  # the command itself will say what is wrong, in its own words
    from obsflow.transfer import early  # os and marshal: what the last run of this config started, started now

    memo_key = early.memo_key(wanted["config"], wanted)
    remembered = early.start_remembered(wanted)

    from obsflow.config import load_config
    from obsflow.errors import ObsflowError
    from obsflow.transfer.remote import open_before_sync, remote_targets

    try:
        config = load_config(wanted["config"])
        targets = remote_targets(config, wanted.get("hop"), wanted.get("instrument"))
        open_before_sync(config, targets, remembered, memo_key)
    except (OSError, ObsflowError):  # the command itself will say what is wrong, in its own words
        if remembered is not None:
            remembered.abandon()
