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
turns this off).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from obsflow.config import Location
from obsflow.errors import HostUnreachable, RemoteCommandFailed

__all__ = ["FORCED_SSH_OPTIONS", "Shell", "ssh_argv", "ssh_rsh"]

#: put before the user's options: ssh keeps the first value it sees for each option
FORCED_SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes")
#: put after the user's options, so their own setting wins
DEFAULT_SSH_OPTIONS = ("-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15")
SSH_FAILED = 255


def ssh_argv(options: Sequence[str], control_dir: str | None = None) -> list[str]:
    """``ssh`` with obsflow's forced options, the config's ``[ssh] options``, then defaults.

    With ``control_dir``, connections are shared through sockets in that folder.
    """
    shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=5"]
    return ["ssh", *FORCED_SSH_OPTIONS, *options, *(shared if control_dir else ()), *DEFAULT_SSH_OPTIONS]


def ssh_rsh(options: Sequence[str], control_dir: str | None = None) -> str:
    """The same ssh command as one string, for ``rsync -e``."""
    return shlex.join(ssh_argv(options, control_dir))


@dataclass(frozen=True)
class Shell:
    """Runs ``sh`` scripts on the host of a location (here, or over one ssh connection)."""

    ssh_options: tuple[str, ...] = ()
    timeout_s: float = 3600.0
    control_dir: str | None = None  # share one connection per host (see the module docstring)

    def run(self, location: Location, script: str, stdin: bytes = b"") -> bytes:
        """Run ``script`` with ``sh`` where ``location`` lives; return its stdout.

        Raises HostUnreachable when ssh cannot reach the host, RemoteCommandFailed when
        the script exits non-zero.
        """
        if location.is_remote:
            # The login shell may be csh or fish: always hand the script to sh.
            argv = [*ssh_argv(self.ssh_options, self.control_dir), location.ssh_target, "sh -c " + shlex.quote(script)]
        else:
            argv = ["sh", "-c", script]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise RemoteCommandFailed(f"no answer after {self.timeout_s:g} s", _where(location)) from err
        if done.returncode == 0:
            return done.stdout
        message = _last_line(done.stderr)
        if location.is_remote and done.returncode == SSH_FAILED:
            raise HostUnreachable(f"cannot reach host: {message or 'ssh failed'}", location.ssh_target)
        raise RemoteCommandFailed(f"command failed (exit {done.returncode}): {message}", _where(location))


def _where(location: Location) -> str:
    return location.ssh_target if location.is_remote else "localhost"


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
