"""Copying a list of files with the system rsync (over ssh for remote ends); rsync exits -> errors.

How rsync is run, and why:

- ``--files-from`` with exactly the planned files (NUL-separated on stdin), one rsync per
  hop and instrument: one connection, no per-file round trips.  A sending rsync reads a local
  list one byte per ``read()`` (10 000 names: 375 000 calls, ~0.4 s of system CPU); the list it
  takes from the receiving host comes in its protocol's buffers.  So a push of many files
  writes the list into a temp file on the destination host first (``--files-from=:FILE``);
- ``--partial-dir=.rsync-partial``: an interrupted file waits hidden in that folder and the
  next run resumes from it; never ``--partial`` alone or ``--inplace`` (a partial under the
  final name); a completed file is renamed into place by rsync only after it verified it;
- ``--ignore-existing``: a file that appeared at the destination since the listing is never
  overwritten (the next run reports it as present or a conflict);
- ``--trust-sender`` when pulling from a remote host (rsync >= 3.2.5): rsync's own check that the
  sender sent only the names asked for scans every asked name for every name received, O(n^2):
  1.2 s of CPU for one list of 10 000 names (vs 0.15 s for ``rsync -a``'s own walk).  The same
  check is made here instead, in a set (:attr:`RsyncResult.unasked`);
- ``--checksum-choice=xxh128`` and ``--out-format`` with ``%C``: rsync already hashes every
  file it sends and checks the receiver's copy against it, so its ``%C`` is the end-to-end
  hash of source and destination without reading the data twice.  The lines go to a file in
  memory, read every REPORT_POLL_S (a pipe would wake this process once per file);
- remote to remote: rsync cannot copy between two remote ends, so it is run *on the source
  host* over ssh (``ssh src 'cd root && rsync … ./ dest:path/'``); the source host must reach
  the destination with its own ssh setup (the ``[ssh] options`` are passed along and must make
  sense there too).

Exit codes (rsync(1) "EXIT VALUES"): 0 ok; 23/24 partial transfer: files missing from the
output are per-file errors, not an exception; ssh failures (rsync's 255, or 12/5/10 with an
ssh message) -> HostUnreachable; others -> TransportError.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import IO

from obsflow.config import Location
from obsflow.errors import HostUnreachable, ObsflowError, TransportError
from obsflow.transfer.remote import Shell, nul_separated, shell_path, ssh_argv, ssh_rsh

__all__ = ["Copied", "RsyncResult", "has_rsync", "printed_name", "rsync_copy"]

log = logging.getLogger(__name__)

PARTIAL_DIR = ".rsync-partial"
_OUT_FORMAT = "OBSFLOW\t%l\t%b\t%M\t%C\t%n"
_ESCAPE = re.compile(rb"\\#([0-7]{3})")  # rsync's escape for a byte it will not print in this locale
_SSH_TROUBLE = ("ssh:", "Host key verification failed", "Permission denied", "Could not resolve", "Connection closed")
_PARTIAL_EXITS = (23, 24)
_DISK_FULL = "No space left on device"
REPORT_POLL_S = 0.1  # how often the lines rsync printed are read (progress, recording)
_HOST_EXITS = (255, 12, 5, 10, 35)


@dataclass(frozen=True)
class Copied:
    """One file rsync reports as transferred: length, mtime as rsync printed it (%M) and xxh128."""

    path: str
    size: int
    mtime_text: str  # "2016/09/07-21:30:05", local time of the host running rsync
    xxh128: str
    sent: int = -1  # bytes over the wire (%b): below size when a partial file was resumed; -1 unknown


@dataclass
class RsyncResult:
    """What one rsync run did: the files it copied and the errors it printed."""

    copied: list[Copied] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    returncode: int = 0
    unasked: list[str] = field(default_factory=list)  # files the sender sent though not asked for


#: from this many files a push hands rsync its list through a file on the destination host (two more
#: commands there, ~25 ms, against ~35 us per name read one byte at a time)
LIST_ON_HOST_MIN = 2000
_WRITE_LIST = """\
umask 077
# mktemp replaces the X's with random characters
list=$(mktemp "${TMPDIR:-/tmp}/obsflow-list.XXXXXX") || exit 3
cat > "$list" || { rm -f -- "$list"; exit 3; }
printf '%s' "$list"
"""

_TRUST_SENDER_SINCE = (3, 2, 5)
_VERSION = re.compile(rb"version (\d+)\.(\d+)\.(\d+)")


def has_rsync() -> bool:
    """True if an ``rsync`` program is on PATH here."""
    return shutil.which("rsync") is not None


@lru_cache(maxsize=1)
def _checks_senders_names() -> bool:
    """True if the rsync here checks a remote sender's names against those asked (3.2.5 and later)."""
    try:
        printed = subprocess.run(["rsync", "--version"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    found = _VERSION.search(printed)
    return found is not None and tuple(int(part) for part in found.groups()) >= _TRUST_SENDER_SINCE


def rsync_argv(
    source: Location,
    dest: Location,
    ssh_options: Sequence[str],
    extra: Sequence[str],
    control_dir: str | None = None,
    basis: str | None = None,
    files_from: str = "-",
) -> list[str]:
    """The rsync command line copying the files named on stdin from ``source`` to ``dest``; an
    existing file is never touched (a grown file replaces its older copy through staging.py).

    ``basis``: a folder (relative to ``dest``) whose file of the same name, if any, rsync sends
    the differences against (``--copy-dest``): a grown file copied into the staging folder
    costs its growth, not its whole size.  ``files_from``: where rsync reads the list ("-": stdin;
    ":FILE": a file on the remote host)."""
    argv = [
        "rsync", "-a", "--from0", f"--files-from={files_from}", f"--partial-dir={PARTIAL_DIR}", "--ignore-existing",
        "--mkpath", "--checksum-choice=xxh128", f"--out-format={_OUT_FORMAT}", *extra,
    ]  # fmt: skip
    if basis is not None:
        argv.append(f"--copy-dest={basis}")
    if source.is_remote and not dest.is_remote and _checks_senders_names():
        argv.append("--trust-sender")  # its O(n^2) check is made in rsync_copy, in O(n)
    if source.is_remote or dest.is_remote:
        # remote to remote: that ssh runs on the source host, where our control folder is not
        remote = dest if dest.is_remote else source
        argv += [
            "-e",
            ssh_rsh(ssh_options, None if source.is_remote and dest.is_remote else control_dir, remote.ssh_target),
        ]
    src = f"{source.ssh_target}:{source.path}/" if source.is_remote else f"{source.path}/"
    dst = f"{dest.ssh_target}:{dest.path}/" if dest.is_remote else f"{dest.path}/"
    if source.is_remote and dest.is_remote:
        # rsync cannot copy remote to remote: run it on the source host, reading locally there.
        inner = [*argv, "./", dst]
        script = f"cd -- {shell_path(source.path)} && exec {shlex.join(inner)}"
        return [
            *ssh_argv(ssh_options, control_dir, source.ssh_target),
            source.ssh_target,
            "sh -c " + shlex.quote(script),
        ]
    return [*argv, src, dst]


def rsync_copy(
    source: Location,
    dest: Location,
    paths: Sequence[str],
    *,
    ssh_options: Sequence[str] = (),
    extra: Sequence[str] = (),
    on_copied: Callable[[Copied], None] | None = None,
    control_dir: str | None = None,
    basis: str | None = None,
    pass_fds: Sequence[int] = (),
    shell: Shell | None = None,
    on_unasked: Callable[[str], None] | None = None,
) -> RsyncResult:
    """Copy ``paths`` (relative, regular files) from ``source`` to ``dest``; report each as rsync does.

    rsync reports a file (``on_copied``, within REPORT_POLL_S) once its data went through: when
    rsync exits 0 every reported file is checked and in place; after a failure a reported file
    may not be (see ``hop._confirmed``); a file not among ``paths`` goes to ``unasked`` instead (and
    to ``on_unasked``: a caller still learns of it if rsync then fails).
    ``pass_fds``: descriptors rsync keeps open while it runs (the run lock); ``shell``: to hand the
    long list of a push over through the destination host.  Raises HostUnreachable when ssh cannot
    reach a host and TransportError when rsync fails as a whole; per-file failures (exit 23/24)
    come back in ``RsyncResult.errors``.
    """
    result = RsyncResult()
    if not paths:
        return result
    list_file = None
    if shell is not None and len(paths) >= LIST_ON_HOST_MIN and _receiver_reads_our_files(source, dest, extra):
        list_file = _list_on_host(dest, paths, shell)
    files_from = f":{list_file}" if list_file else "-"
    argv = rsync_argv(source, dest, ssh_options, extra, control_dir, basis, files_from=files_from)
    log.debug("running %s", shlex.join(argv))
    started = time.monotonic()

    asked = set(paths)

    def report(line: str) -> None:
        copied = _parse_line(line)
        if copied is None:
            return
        if copied.path not in asked:  # only a broken or hostile sender does that
            result.unasked.append(copied.path)
            if on_unasked is not None:
                on_unasked(copied.path)
            return
        result.copied.append(copied)
        if on_copied is not None:
            on_copied(copied)

    try:
        result.returncode, stderr = _run(argv, None if list_file else paths, pass_fds, report)
    finally:
        if list_file and shell is not None:
            _remove_list(dest, list_file, shell)
    log.debug("rsync exit %d after %.2f s", result.returncode, time.monotonic() - started)
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if result.returncode in _PARTIAL_EXITS:  # some files failed, each named by a line; the summary line is not one
        result.errors = [ln for ln in lines if not ln.startswith("rsync error:")] or lines
    elif result.returncode != 0:
        _raise_for(result.returncode, lines, source, dest)
    return result


def _receiver_reads_our_files(source: Location, dest: Location, extra: Sequence[str]) -> bool:
    """True when the rsync run here sends (and so would read its list one byte at a time) to a remote
    rsync running as the account we log in as: one started through ``--rsync-path`` (``sudo -u archive
    rsync``) may not read that account's 0600 temp file, so its list stays on stdin."""
    return dest.is_remote and not source.is_remote and not any(o.startswith("--rsync-path") for o in extra)


def _list_on_host(dest: Location, paths: Sequence[str], shell: Shell) -> str | None:
    """The NUL-separated list written into a temp file on ``dest``'s host; its name, or None (stdin then)."""
    try:
        name = shell.run(dest, _WRITE_LIST, stdin=nul_separated(paths)).decode()
    except ObsflowError as err:  # e.g. a full /tmp there: the list goes on stdin, as always
        log.debug("cannot write the file list on %s (%s): rsync reads it on stdin", dest.ssh_target, err.one_line())
        return None
    return name if name.startswith("/") and "\n" not in name else None


def _remove_list(dest: Location, name: str, shell: Shell) -> None:
    try:
        shell.run(dest, f"rm -f -- {shlex.quote(name)}")
    except ObsflowError as err:
        log.warning("cannot remove the file list %s on %s: %s", name, dest.ssh_target, err.one_line())


def _run(
    argv: list[str], paths: Sequence[str] | None, pass_fds: Sequence[int], on_line: Callable[[str], None]
) -> tuple[int, str]:
    """Run rsync with ``paths`` on its stdin (None: it reads its list elsewhere), passing it each line it
    prints as it goes; its exit status and stderr."""
    # rsync prints one line per file into a file, not a pipe: a pipe wakes this process once per
    # file, and on a two-core machine that alone made 10,000 small files 6 % slower (measured).
    with (
        _report_file() as report,
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL if paths is None else subprocess.PIPE, stdout=report,
            stderr=subprocess.PIPE, pass_fds=tuple(pass_fds),
        ) as proc,
    ):
        assert proc.stderr
        # Feed the list and drain stderr in threads: rsync may block on either pipe.
        feeder = threading.Thread(target=_feed, args=(proc.stdin, paths or ()), daemon=True)
        errors: list[bytes] = []
        drainer = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore
        exited = threading.Event()
        waiter = threading.Thread(target=lambda: (proc.wait(), exited.set()), daemon=True)
        for thread in (feeder, drainer, waiter):
            thread.start()
        _follow(report.fileno(), exited, on_line)
        returncode = proc.wait()
        feeder.join()
        drainer.join()
    return returncode, b"".join(errors).decode(errors="replace")


def _follow(fd: int, exited: threading.Event, on_line: Callable[[str], None]) -> None:
    """Pass each line written to ``fd`` to ``on_line`` every REPORT_POLL_S until ``exited``, the last ones included."""
    printed = _LineTail(fd)
    while True:
        done = exited.wait(REPORT_POLL_S)  # read once more after the exit: rsync's last lines
        for line in printed.read():
            on_line(line)
        if done:
            return


def _report_file() -> IO[bytes]:
    """A file for rsync's report lines: in memory where Linux offers it (a full /tmp cannot stop a sync)."""
    try:
        return os.fdopen(os.memfd_create("obsflow-rsync-report", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # not Linux, or refused (a sandbox, no file descriptors left)
        return tempfile.TemporaryFile()


class _LineTail:
    """The complete lines written to a file since the last read (a partial last line waits)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._offset = 0
        self._partial = b""

    def read(self) -> list[str]:
        chunks = [self._partial]
        while chunk := os.pread(self._fd, 1 << 20, self._offset):
            chunks.append(chunk)
            self._offset += len(chunk)
        *complete, self._partial = b"".join(chunks).split(b"\n")
        return [os.fsdecode(line) for line in complete]  # names keep their bytes (surrogate escapes)


def _feed(stdin: IO[bytes] | None, paths: Sequence[str]) -> None:
    if stdin is None:
        return
    try:
        stdin.write(nul_separated(paths))  # the bytes the listing read
        stdin.close()
    except BrokenPipeError:
        pass  # rsync exited early; its exit status says why


def _parse_line(line: str) -> Copied | None:
    if not line.startswith("OBSFLOW\t"):
        return None
    _, length, sent, mtime, checksum, name = line.split("\t", 5)
    if name.endswith("/") or not checksum.strip():
        return None  # a folder
    return Copied(printed_name(os.fsencode(name)), int(length), mtime, checksum.strip(), int(sent))


def printed_name(raw: bytes) -> str:
    """A name as rsync's ``%n`` printed it, back to the name itself (``os.fsdecode`` of its bytes).

    rsync writes each byte it will not print in the current locale as ``\\#ooo`` (octal): under
    the C locale of a cron job, every byte of ``é`` in UTF-8.
    """
    if b"\\#" in raw:
        raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), raw)
    return os.fsdecode(raw)


def rsync_time_text(mtime: float) -> str:
    """An mtime as rsync's ``%M`` prints it, in this process's local time.

    rsync prints the whole second at or below the mtime (its ``time_t``): before 1970 that is
    not what ``int()`` gives (-0.5 s is 1969/12/31-23:59:59, not 1970/01/01-00:00:00).
    """
    return _time_text(math.floor(mtime))


def prints_as(text: str, mtime: float) -> bool:
    """Whether rsync's ``%M`` ``text`` is the time of a file a listing gave ``mtime`` (nanoseconds / 1e9).

    That float is the nearest to the nanoseconds: a whole second may stand for a time a few nanoseconds
    below it (1764640000.999999999 is 1764640001.0), for which rsync prints the second before.
    """
    return text == rsync_time_text(mtime) or (mtime.is_integer() and text == rsync_time_text(mtime - 1))


@lru_cache(maxsize=4096)
def _time_text(mtime_s: int) -> str:
    return time.strftime("%Y/%m/%d-%H:%M:%S", time.localtime(mtime_s))


def _raise_for(code: int, lines: list[str], source: Location, dest: Location) -> None:
    ssh_trouble = next((ln for ln in lines if any(t in ln for t in _SSH_TROUBLE)), None)
    remote = dest if dest.is_remote else source
    if code in _HOST_EXITS and remote.is_remote and ssh_trouble is not None:
        raise HostUnreachable(f"cannot reach host: {ssh_trouble}", remote.ssh_target)
    full = next((ln for ln in lines if _DISK_FULL in ln), None)
    if full is not None:
        raise TransportError(f"destination disk full: {full}", str(dest))
    # The first error rsync printed is the cause; later ones follow from it (the sender's
    # "Broken pipe" once the receiver has died).  ssh's warnings and banners come before it.
    own = [ln for ln in lines if ln.startswith(("rsync:", "ERROR:")) and not ln.startswith("rsync error:")]
    message = own[0] if own else (lines[-1] if lines else "")
    if code == 20:
        raise TransportError(f"rsync was interrupted (exit 20): {message}", f"{source} -> {dest}")
    if code == 30:
        raise TransportError(f"rsync timed out (exit 30): {message}", f"{source} -> {dest}")
    raise TransportError(f"rsync failed (exit {code}): {message}", f"{source} -> {dest}")
