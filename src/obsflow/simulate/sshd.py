"""A real OpenSSH server on 127.0.0.1 for the demo and the tests, with its own host key, client key and pinned known_hosts.

Several host aliases (``instruments.test``, ``suth.test``, ``cape.test``) all reach this one
server, so one sshd plays the instrument computers and both archives; ``down.test`` points at
a closed port and plays an unreachable host.  Clients use it through ``ssh -F <ssh_config>``,
exactly as obsflow's ``[ssh] options`` would in production.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST_ALIASES = ("instruments.test", "suth.test", "cape.test", "sha.test", "shd.test", "spupnic.test")
DOWN_ALIAS = "down.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SshServer:
    """A running loopback sshd and the client settings that reach it."""

    port: int
    ssh_config: Path
    process: subprocess.Popen[bytes]

    @property
    def ssh_options(self) -> list[str]:
        """What goes into ``[ssh] options`` of an obsflow config."""
        return ["-F", str(self.ssh_config)]

    def run(self, host: str, command: str) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` through the server (for test setup and checks)."""
        return subprocess.run(
            ["ssh", *self.ssh_options, host, command], capture_output=True, text=True, timeout=60, check=False
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(workdir: Path, user: str | None = None, launcher: Sequence[str] = ()) -> SshServer:
    """Start sshd on a free loopback port with keys under ``workdir``; return when it accepts.

    Clients log in as ``user`` (default: whoever runs this).  sshd reads the authorized keys
    with the user's rights, so for another account they are made readable to it.  ``launcher``
    is put before the sshd command (e.g. ``setpriv`` dropping capabilities for its sessions).
    """
    own = user in (None, _current_user())
    user = user or _current_user()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700 if own else 0o711)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _keygen(key)
    (workdir / "authorized_keys").write_text((workdir / "client_ed25519.pub").read_text())
    os.chmod(workdir / "authorized_keys", 0o600 if own else 0o644)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder

    port = free_port()
    sshd_config = workdir / "sshd_config"
    sshd_config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    host_pub = (workdir / "host_ed25519.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"obsflow-test-sshd {host_pub[0]} {host_pub[1]}\n")
    common = [
        "  HostName 127.0.0.1",
        "  Port {port}",
        f"  User {user}",
        f"  IdentityFile {client_key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  HostKeyAlias obsflow-test-sshd",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  ConnectTimeout 5",
        "  ControlMaster no",
    ]
    blocks = [f"Host {' '.join(HOST_ALIASES)}", *(line.format(port=port) for line in common), ""]
    blocks += [f"Host {DOWN_ALIAS}", *(line.format(port=free_port()) for line in common), ""]
    ssh_config = workdir / "ssh_config"
    ssh_config.write_text("\n".join(blocks))

    process = subprocess.Popen([*launcher, SSHD, "-D", "-e", "-f", str(sshd_config)], stderr=subprocess.PIPE)
    server = SshServer(port=port, ssh_config=ssh_config, process=process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"sshd exited at start: {err}")
        if server.run(HOST_ALIASES[0], "true").returncode == 0:
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError("sshd did not accept connections within 15 s")
