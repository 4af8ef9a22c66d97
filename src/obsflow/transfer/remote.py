"""Running commands on the host holding a Location: locally, or through the OpenSSH client.

Remote hosts are reached with the system ``ssh`` so ``~/.ssh/config``, keys, agents and
jump hosts work as they do for the operator.  Two options are always forced first on the
command line (where ssh's first-value-wins rule makes them stick): ``BatchMode=yes`` (cron
never hangs on a prompt) and ``StrictHostKeyChecking=yes`` (an unknown or changed host key
is refused, never accepted silently).  ssh's own exit status 255 means "could not reach or
authenticate": it becomes :class:`HostUnreachable`; any other failure of the remote command
becomes :class:`RemoteCommandFailed`.

Within one sync, connections to a host are shared (OpenSSH ``ControlMaster``, sockets in a
private temp folder, ``ControlPersist`` of a few seconds), so listing, rsync and the checks
after it pay one ssh handshake per host instead of one each (``[ssh] multiplex = false``
turns this off).  :func:`shared_connections` opens them as soon as the config is read, so the
handshakes (a third of a second each here) run while the rest of the program loads and the
catalog is read; the first command for a host waits for its connection.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import selectors
import shlex
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from obsflow.config import Config, Location, parse_location
from obsflow.errors import HostUnreachable, RemoteCommandFailed, TransportError
from obsflow.transfer.early import CONTROL_PARENT, CONTROL_PREFIX, Key, Remembered, SocketFolder, Started, remember

__all__ = [
    "FORCED_SSH_OPTIONS", "REAL_FOLDERS_SH", "Shell", "control_path", "nul_separated", "remote_targets", "shared_connections",
    "shell_path", "ssh_argv", "ssh_rsh",
]  # fmt: skip

log = logging.getLogger(__name__)

#: put before the user's options: ssh keeps the first value it sees for each option
FORCED_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes")
#: put after the user's options, so their own setting wins
DEFAULT_SSH_OPTIONS = ("-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")
SSH_FAILED = 255
STALE_CONTROL_S = 86400.0  # a killed run's empty socket folder is removed by a run a day later


def shell_path(path: str) -> str:
    """``path`` as one word of a script run over ssh; ``~/dir`` (or ``~``) means in the login's home.

    ``shlex.quote`` alone would make ``~`` a literal folder name.  An ssh session starts in the
    home, so the rest is quoted as a path relative to it (as rsync reads ``host:~/dir`` itself).
    Scripts must use such a path before changing folder.
    """
    if path == "~" or path.startswith("~/"):
        return shlex.quote(path[2:] or ".")
    return shlex.quote(path)


def nul_separated(names: Iterable[str]) -> bytes:
    """``names`` as the NUL-terminated bytes that ``xargs -0`` and ``rsync --from0`` take on stdin (each
    name's own bytes: surrogate escapes come back as the bytes a listing read)."""
    return b"".join(os.fsencode(name) + b"\0" for name in names)


def ssh_argv(options: Sequence[str], control_dir: str | None = None, target: str = "") -> list[str]:
    """``ssh`` with obsflow's forced options, the config's ``[ssh] options``, then defaults.

    With ``control_dir``, connections to ``target`` are shared through a socket in that folder.
    """
    shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_path(control_dir, target)}",
              "-o", "ControlPersist=5"] if control_dir else []  # fmt: skip
    return ["ssh", *FORCED_SSH_OPTIONS, *options, *shared, *DEFAULT_SSH_OPTIONS]


def ssh_rsh(options: Sequence[str], control_dir: str | None = None, target: str = "") -> str:
    """The same ssh command as one string, for ``rsync -e``."""
    return shlex.join(ssh_argv(options, control_dir, target))


def control_path(control_dir: str | None, target: str) -> str:
    """The shared-connection socket for one ``[user@]host`` as written in the config.

    Not ssh's ``%C``: that hashes the resolved address, so two aliases of one host would get one
    socket, the second master could not bind it and would stay behind as a plain connection.
    """
    return f"{control_dir}/{hashlib.sha1(target.encode()).hexdigest()[:16]}"


class _EarlyConnections:
    """The connections a Shell opened early and the hosts found unreachable (one per run, shared by copies).

    A Shell sent to another process (verify's listing pool) arrives without them: it connects anew.
    """

    def __init__(self) -> None:
        self.opening: dict[str, subprocess.Popen[bytes] | Started] = {}
        self.unreachable: dict[str, str] = {}
        self.remembered = 0  # of the opening ones, started from the memo
        self.lock = threading.Lock()

    def stop_pending(self) -> None:
        """At the end of a run: stop connections still being opened (never used, or the run was interrupted)."""
        with self.lock:
            for target in list(self.opening):
                opening = self.opening.pop(target)
                opening.kill()  # a master that is up has already left for the background: not this process
                _finished(opening)

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__()  # type: ignore[misc]


def _finished(opening: subprocess.Popen[bytes] | Started) -> tuple[int, bytes]:
    """Exit status and (on failure) stderr of an ``ssh -f -N``.

    Waits for the process itself, not for the end of its stderr: with ``-v`` in the user's
    options the master it leaves in the background keeps stderr open until it exits.
    """
    returncode = opening.wait()
    assert opening.stderr is not None
    stderr = opening.stderr.read() if returncode != 0 else b""
    opening.stderr.close()
    return returncode, stderr


@dataclass(frozen=True)
class Shell:
    """Runs ``sh`` scripts on the host of a location (here, or over one ssh connection)."""

    ssh_options: tuple[str, ...] = ()
    timeout_s: float = 3600.0
    control_dir: str | None = None  # share one connection per host (see the module docstring)
    _early: _EarlyConnections = field(default_factory=lambda: _EarlyConnections(), compare=False, repr=False)

    def open_early(self, targets: Iterable[str]) -> None:
        """Start the shared connection to each ``[user@]host`` now, without waiting for it."""
        if self.control_dir is None:
            return
        for target in targets:
            if target not in self._early.opening:
                self._early.opening[target] = subprocess.Popen(
                    self.early_argv(target), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )

    def early_argv(self, target: str) -> list[str]:
        """The command line that opens the shared connection to ``target``."""
        # -f -N: authenticate, then leave the shared connection in the background (no remote command)
        return [*ssh_argv(self.ssh_options, self.control_dir, target), "-f", "-N", target]

    def adopt(self, target: str, opening: Started) -> None:
        """Take ``opening`` as the connection being opened to ``target`` (started from the memo, same command line)."""
        if self._early.opening.setdefault(target, opening) is opening:
            self._early.remembered += 1

    @property
    def remembered_count(self) -> int:
        """How many of the connections opened early were started from the memo (:mod:`obsflow.transfer.early`)."""
        return self._early.remembered

    def stop_opening(self) -> None:
        """At the end of a run: stop connections still being opened (never used, or the run was interrupted)."""
        self._early.stop_pending()

    def wait_connected(self, target: str) -> None:
        """Wait until the connection opened early to ``target`` is up; raise HostUnreachable if it failed.

        A host that failed once fails at once for the rest of the run (one timeout, not one per command).
        """
        early = self._early
        with early.lock:
            opening = early.opening.pop(target, None)
            if opening is not None:
                returncode, stderr = _finished(opening)
                if returncode == SSH_FAILED:
                    early.unreachable[target] = _last_line(stderr) or "ssh failed"
            if target in early.unreachable:
                raise HostUnreachable(f"cannot reach host: {early.unreachable[target]}", target)

    def run(self, location: Location, script: str, stdin: bytes = b"") -> bytes:
        """Run ``script`` with ``sh`` where ``location`` lives; return its stdout.

        Raises HostUnreachable when ssh cannot reach the host, RemoteCommandFailed when
        the script exits non-zero, TransportError when the command cannot be started.
        """
        argv = self._argv(location, script)
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise RemoteCommandFailed(f"no answer after {self.timeout_s:g} s", _where(location)) from err
        except OSError as err:  # e.g. E2BIG: a script over the kernel's limit on one argument
            raise TransportError(f"cannot run {argv[0]}: {err.strerror}", _where(location)) from err
        _check_exit(location, done.returncode, done.stderr, done.stdout)
        return done.stdout

    def stream(self, location: Location, script: str, on_output: Callable[[bytes], None], stdin: bytes = b"") -> None:
        """As :meth:`run`, but stdout goes to ``on_output`` piece by piece as it arrives (a listing
        of 10,000 files is parsed while find is still printing it).  An exception ``on_output``
        raises stops the command and is raised here."""
        argv = self._argv(location, script)
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as err:
            raise TransportError(f"cannot run {argv[0]}: {err.strerror}", _where(location)) from err
        try:
            stderr = _pump(process, stdin, on_output, time.monotonic() + self.timeout_s)
        except TimeoutError as err:
            raise RemoteCommandFailed(f"no answer after {self.timeout_s:g} s", _where(location)) from err
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        _check_exit(location, process.returncode, stderr)

    def _argv(self, location: Location, script: str) -> list[str]:
        if not location.is_remote:
            return ["sh", "-c", script]
        self.wait_connected(location.ssh_target)
        # The login shell may be csh or fish: always hand the script to sh.
        target = location.ssh_target
        return [*ssh_argv(self.ssh_options, self.control_dir, target), target, "sh -c " + shlex.quote(script)]


def _check_exit(location: Location, returncode: int, stderr: bytes, stdout: bytes = b"") -> None:
    """Raise for a command that failed (see :meth:`Shell.run`)."""
    if returncode == 0:
        return
    message = _last_line(stderr)
    if location.is_remote and returncode == SSH_FAILED:
        raise HostUnreachable(f"cannot reach host: {message or 'ssh failed'}", location.ssh_target)
    raise RemoteCommandFailed(f"command failed (exit {returncode}): {message}", _where(location), output=stdout)


def _pump(process: subprocess.Popen[bytes], stdin: bytes, on_output: Callable[[bytes], None], deadline: float) -> bytes:
    """Feed ``stdin`` to ``process``, hand its stdout to ``on_output`` as it comes; return its stderr.

    One thread and a selector (as ``communicate`` does): a large stdin or a chatty stderr never
    blocks the other pipes.  TimeoutError past ``deadline``.
    """
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    errors, pending = bytearray(), memoryview(stdin)
    with selectors.DefaultSelector() as selector:
        if pending:
            os.set_blocking(process.stdin.fileno(), False)
            selector.register(process.stdin, selectors.EVENT_WRITE)
        else:
            process.stdin.close()
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for key, _ in selector.select(remaining):
                if key.fileobj is process.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:_PIPE_CHUNK]) :]
                    except BrokenPipeError:  # the command does not read it all: its exit status tells
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(key.fileobj)
                        process.stdin.close()
                    continue
                data = os.read(key.fd, _READ_CHUNK)
                if not data:
                    selector.unregister(key.fileobj)
                elif key.fileobj is process.stdout:
                    on_output(data)
                else:
                    errors += data
    return bytes(errors)


_PIPE_CHUNK = 1 << 16
_READ_CHUNK = 1 << 18


@contextmanager
def shared_connections(config: Config, targets: Iterable[str] = ()) -> Iterator[Shell]:
    """A Shell whose connections are shared for the run (``[ssh] multiplex``), ``targets`` opened at once.

    Connections :func:`open_before_sync` opened with the same ssh options are taken over.
    """
    global _opened_before
    early, _opened_before = _opened_before, None
    if early is not None and (not config.ssh_multiplex or early[1].ssh_options != config.ssh_options):
        _abandon(early)
        early = None
    if not config.ssh_multiplex:
        yield Shell(config.ssh_options)
        return
    with early[0] if early else _control_folder() as folder:
        if early:
            log.debug("taking over the ssh connections opened at start (%s; %d as the last run of this config did, "
                      "before it was read)", folder, early[1].remembered_count)  # fmt: skip
        shell = early[1] if early else Shell(config.ssh_options, control_dir=folder)
        shell.open_early(targets)
        remove_stale_control_dirs()  # while the handshakes are under way (a busy /tmp costs ms to read)
        try:
            yield shell
        finally:
            shell.stop_opening()


def open_before_sync(
    config: Config, targets: Iterable[str], remembered: Remembered | None = None, memo_key: Key | None = None
) -> None:
    """Start the shared connections to ``targets`` now, for the sync this process is about to run
    (before its modules load: see :mod:`obsflow.launch`); :func:`shared_connections` takes them over.
    Stopped at exit if the run never came to take them (a mistyped option).

    ``remembered``: connections the entry point started from the memo (:mod:`obsflow.transfer.early`);
    each is taken if its command line is the one built here, the others are stopped.  Under
    ``memo_key`` the command lines are remembered for the next run.
    """
    global _opened_before
    if not config.ssh_multiplex or _opened_before is not None:
        if remembered is not None:
            remembered.abandon()
        return
    targets = list(targets)
    folder = remembered.folder if remembered is not None else _control_folder()
    shell = Shell(config.ssh_options, control_dir=folder.name)
    if remembered is not None:
        for target in targets:
            opening = remembered.take(target, shell.early_argv(target))
            if opening is not None:
                shell.adopt(target, opening)
        if remembered.started:
            log.debug("ssh connections remembered for this config differ from its own now: started anew")
        remembered.stop_the_rest()
    # Claimed before the rest start: if one cannot (OSError), those taken over are still stopped at exit.
    _opened_before = (folder, shell)
    atexit.register(_abandon_unclaimed)
    shell.open_early(targets)
    if memo_key is not None:
        remember(memo_key, folder.name, {target: shell.early_argv(target) for target in targets})


def _control_folder() -> SocketFolder:
    """A short private folder for ssh's shared-connection sockets (unix socket paths are short)."""
    return SocketFolder.new()


_opened_before: tuple[SocketFolder, Shell] | None = None


def _abandon(early: tuple[SocketFolder, Shell]) -> None:
    folder, shell = early
    shell.stop_opening()
    folder.cleanup()


def _abandon_unclaimed() -> None:
    global _opened_before
    if _opened_before is not None:
        early, _opened_before = _opened_before, None
        _abandon(early)


def remove_stale_control_dirs(parent: str = CONTROL_PARENT, older_than_s: float = STALE_CONTROL_S) -> list[str]:
    """Remove our empty socket folders that runs killed outright left behind; return their paths.

    Only a folder of this user's, untouched for ``older_than_s``, and empty (``rmdir`` refuses
    any other): a folder in use holds its master's socket, or is the run's own, made just now.
    """
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(CONTROL_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and now - st.st_mtime > older_than_s:
                os.rmdir(entry.path)
                removed.append(entry.path)
        except OSError:
            continue  # not empty, or gone meanwhile
    return removed


def remote_targets(config: Config, hop: str | None = None, instrument: str | None = None) -> list[str]:
    """The ``[user@]host`` of every remote end a sync of ``hop`` and ``instrument`` (None: all) will reach."""
    hops = [h for h in config.hops if hop is None or h.label == hop]
    insts = [inst for inst in config.instruments.values() if instrument is None or inst.name == instrument]
    locations = [config.instrument_root(end, inst) for h in hops for end in (h.source, h.dest) for inst in insts]
    locations += [parse_location(entry) for entry in config.locks]
    targets = [loc.ssh_target for loc in locations if loc.is_remote]
    return list(dict.fromkeys(targets))


def _where(location: Location) -> str:
    return location.ssh_target if location.is_remote else "localhost"


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


#: ``real PATH``: true when every folder on the way to PATH (relative) that exists is a real folder,
#: no symlink (it may lead anywhere) and no file.  For scripts that move files into place; it holds
#: no single quote, so it also goes inside an ``sh -c '...'``.
REAL_FOLDERS_SH = """\
real() {
  r=$1
  while :; do
    case $r in */*) r=${r%/*} ;; *) return 0 ;; esac
    if [ -L "$r" ] || { [ -e "$r" ] && [ ! -d "$r" ]; }; then return 1; fi
  done
}"""
