"""The ssh connections a sync opens first, remembered so that the next run starts them at once.

A sync's first remote step waits for an ssh handshake (a quarter of a second here).  The entry
point (:mod:`obsflow.launch`) starts the handshakes before the rest of the program loads, but
reading the config and loading the ssh module take ~0.06 s themselves.  So each run remembers the
ssh command lines it started for its config, in the user's cache folder, and the next run with
the same config file, unchanged, and the same ``-i``/``--hop`` starts them from that memo before
anything else, with nothing loaded but ``os`` and ``marshal``.

The run then compares each with the command line it builds itself
(:func:`obsflow.transfer.remote.open_before_sync`): one that differs (another version of
obsflow, a changed ``~`` folder) is stopped and replaced, so a stale memo costs a wasted
handshake, never a wrong connection.  As its command lines are run, the memo is trusted only
when it is the user's own and nobody else can write it or its folder.
"""

from __future__ import annotations

import marshal
import os
import time

TYPE_CHECKING = False  # not typing's: loading typing alone would cost ~10 ms before the first ssh starts
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

try:
    import _signal as signals  # the C module: `signal` loads enum first, ~5 ms more before the first ssh starts
except ImportError:  # pragma: no cover - another Python
    import signal as signals

__all__ = ["Remembered", "SocketFolder", "memo_key", "remember", "start_remembered"]

MEMO_VERSION = 1
MEMO_NAME = "early-ssh.marshal"
KEEP_CONFIGS = 8  # the most recently used configs remembered
FOLDER_MARK = "\0"  # the run's socket folder in a remembered command line (no argument can hold a NUL)
CONTROL_PARENT = "/tmp"  # as obsflow.transfer.remote: a socket's path must stay under ~100 bytes
CONTROL_PREFIX = "obsflow-ssh-"

Key = tuple[str, int, int, int, int, str, str]  # config realpath, dev, inode, size, mtime_ns, hop, instrument


class SocketFolder:
    """A private folder for ssh's shared-connection sockets, removed with what is in it (as a TemporaryDirectory)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def new(cls) -> SocketFolder:
        for _ in range(10):
            name = f"{CONTROL_PARENT}/{CONTROL_PREFIX}{os.urandom(6).hex()}"
            try:
                os.mkdir(name, 0o700)  # fails on anything already there, a symlink too
            except FileExistsError:
                continue
            return cls(name)
        raise FileExistsError(f"no free socket folder name in {CONTROL_PARENT}")

    def cleanup(self) -> None:
        try:
            for entry in os.scandir(self.name):
                os.unlink(entry.path)  # a master's socket (ssh removes it when the master ends)
            os.rmdir(self.name)
        except OSError:
            pass  # gone already, or taken by another run as a killed run's: nothing of ours is lost

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class Started:
    """An ``ssh -f -N`` started from the memo, waited for as the Shell waits for its own (a Popen's ways)."""

    def __init__(self, pid: int, stderr_fd: int) -> None:
        self.pid = pid
        self.stderr = os.fdopen(stderr_fd, "rb")
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


class Remembered:
    """Connections started from the memo: their socket folder and, per ``[user@]host``, the command line and process."""

    def __init__(self, key: Key, folder: SocketFolder, started: dict[str, tuple[list[str], Started]]) -> None:
        self.key = key
        self.folder = folder
        self.started = started

    def take(self, target: str, argv: Sequence[str]) -> Started | None:
        """The connection started for ``target``, if it was started with exactly ``argv``."""
        started = self.started.get(target)
        if started is None or started[0] != list(argv):
            return None
        del self.started[target]
        return started[1]

    def stop_the_rest(self) -> None:
        """Stop the connections nobody took (a stale memo): a master already up ends by itself (ControlPersist).

        Such a master has left for the background holding its socket, where the run's own
        connection to that host would find it: the socket goes, so the run opens its own.
        """
        for argv, process in self.started.values():
            process.kill()
            process.wait()
            process.stderr.close()
            for part in argv:
                if part.startswith(f"ControlPath={self.folder.name}/"):
                    try:
                        os.unlink(part.partition("=")[2])
                    except OSError:
                        pass  # never made: stopped before it authenticated
        self.started.clear()

    def abandon(self) -> None:
        self.stop_the_rest()
        self.folder.cleanup()


def memo_key(config_path: str, wanted: Mapping[str, str]) -> Key | None:
    """What the memo of a run is filed under; None when the config file cannot be looked at."""
    try:
        real = os.path.realpath(config_path)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    return (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, wanted.get("hop", ""), wanted.get("instrument", ""))


def start_remembered(wanted: Mapping[str, str]) -> Remembered | None:
    """Start the ssh connections the memo holds for this run (config and options), if any; without waiting."""
    key = memo_key(wanted["config"], wanted)
    entry = _read_memo().get(key) if key else None
    if key is None or not entry:
        return None
    try:
        folder = SocketFolder.new()
    except OSError:
        return None
    started = {}
    for target, argv in entry["argv"].items():
        argv = [part.replace(FOLDER_MARK, folder.name) for part in argv]
        process = _spawn(argv)
        if process is not None:
            started[target] = (argv, process)
    return Remembered(key, folder, started)


def remember(key: Key, folder: str, argv_by_target: Mapping[str, Sequence[str]]) -> None:
    """File the command lines this run started under ``key``, for the next run (best effort: a cache)."""
    memo = _read_memo()
    argv = {target: [part.replace(folder, FOLDER_MARK) for part in line] for target, line in argv_by_target.items()}
    if memo.get(key, {}).get("argv") == argv:
        return
    memo[key] = {"argv": argv, "used": time.time()}
    newest = sorted(memo, key=lambda k: memo[k]["used"], reverse=True)[:KEEP_CONFIGS]
    _write_memo({k: memo[k] for k in newest})


def _memo_folder() -> str | None:
    cache = os.environ.get("XDG_CACHE_HOME") or (os.environ.get("HOME", "") and os.environ["HOME"] + "/.cache")
    return f"{cache}/obsflow" if cache and cache.startswith("/") else None


def _read_memo() -> dict[Key, dict]:
    folder = _memo_folder()
    if folder is None or not _only_ours(folder):
        return {}
    try:
        fd = os.open(f"{folder}/{MEMO_NAME}", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        if not _only_ours(fd):
            return {}
        with os.fdopen(os.dup(fd), "rb") as handle:
            memo = marshal.load(handle)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    finally:
        os.close(fd)
    return memo["configs"] if _well_formed(memo) else {}


def _only_ours(where: str | int) -> bool:
    """Owned by this user, and writable by nobody else (the memo's command lines are run)."""
    try:
        st = os.stat(where, follow_symlinks=False) if isinstance(where, str) else os.fstat(where)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _well_formed(memo: object) -> bool:
    if not isinstance(memo, dict) or memo.get("version") != MEMO_VERSION or not isinstance(memo.get("configs"), dict):
        return False
    for entry in memo["configs"].values():
        argv = entry.get("argv") if isinstance(entry, dict) else None
        if not isinstance(argv, dict) or not isinstance(entry.get("used"), float):
            return False
        for line in argv.values():
            if not isinstance(line, list) or not line or line[0] != "ssh" or not all(isinstance(p, str) for p in line):
                return False
    return True


def _write_memo(configs: dict[Key, dict]) -> None:
    folder = _memo_folder()
    if folder is None:
        return
    temp = f"{folder}/.{MEMO_NAME}.{os.getpid()}"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _only_ours(folder):
            return
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            marshal.dump({"version": MEMO_VERSION, "configs": configs}, handle)
        os.replace(temp, f"{folder}/{MEMO_NAME}")
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass


def _spawn(argv: list[str]) -> Started | None:
    """Start ``argv`` (an ``ssh -f -N``) with stdin and stdout on /dev/null and stderr into a pipe, not waiting."""
    try:
        read_end, write_end = os.pipe()
        os.set_inheritable(read_end, False)
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return None
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)]
        # Python ignores SIGPIPE and SIGXFSZ; a child gets them back as subprocess gives them back
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions,
                              setsigdef=(signals.SIGPIPE, signals.SIGXFSZ))  # fmt: skip
    except OSError:
        os.close(read_end)
        return None
    finally:
        os.close(write_end)
        os.close(null)
    return Started(pid, read_end)
