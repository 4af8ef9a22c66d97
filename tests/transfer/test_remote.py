"""Shared ssh connections, opened as soon as the config is read (real sshd on loopback)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from obsflow.config import Config, load_config, parse_location
from obsflow.errors import HostUnreachable, RemoteCommandFailed, TransportError
from obsflow.transfer.remote import (
    CONTROL_PARENT,
    CONTROL_PREFIX,
    STALE_CONTROL_S,
    Shell,
    remote_targets,
    remove_stale_control_dirs,
    shared_connections,
)
from tests.transfer.conftest import write_config

WHO_AM_I = 'printf %s "$SSH_CONNECTION"'  # client address and port: the same for one TCP connection


@pytest.fixture
def config(tmp_path: Path, sshd) -> Config:
    path = tmp_path / "obsflow.toml"
    write_config(path, sshd, tmp_path / "inst", tmp_path / "suth", tmp_path / "cape")
    return load_config(path)


def test_commands_share_the_connection_opened_early(config: Config) -> None:
    cape = parse_location("cape.test:/")
    with shared_connections(config, ["cape.test"]) as shell:
        assert shell.control_dir is not None and list(Path(shell.control_dir).iterdir()) == []  # not waited for yet
        first, second = shell.run(cape, WHO_AM_I), shell.run(cape, WHO_AM_I)
        assert len(list(Path(shell.control_dir).iterdir())) == 1  # one master socket
    assert first == second and first.count(b" ") == 3


def test_without_multiplex_every_command_connects_anew(config: Config) -> None:
    cape = parse_location("cape.test:/")
    with shared_connections(dataclasses.replace(config, ssh_multiplex=False), ["cape.test"]) as shell:
        assert shell.control_dir is None
        assert shell.run(cape, WHO_AM_I) != shell.run(cape, WHO_AM_I)  # two TCP connections, two client ports


def test_a_host_that_cannot_be_reached_fails_every_command_with_one_line(config: Config) -> None:
    down = parse_location("down.test:/data")
    with shared_connections(config, ["down.test", "cape.test"]) as shell:
        errors = []
        for _ in range(2):
            with pytest.raises(HostUnreachable) as err:
                shell.run(down, "true")
            errors.append(err.value.one_line())
        assert shell.run(parse_location("cape.test:/"), "printf ok") == b"ok"  # the other host still works
    assert errors[0] == errors[1] and "down.test" in errors[0] and "refused" in errors[0] and "\n" not in errors[0]


def test_a_plain_shell_opens_nothing_early() -> None:
    shell = Shell()
    shell.open_early(["cape.test"])  # no control folder: nothing to share, nothing started
    assert shell.run(parse_location("/"), "printf ok") == b"ok"


def test_remote_targets_are_the_hosts_the_chosen_hops_reach(config: Config) -> None:
    assert remote_targets(config) == ["sha.test", "shd.test", "spupnic.test", "cape.test"]
    assert remote_targets(config, hop="suth:cape") == ["cape.test"]
    assert remote_targets(config, hop="instruments:suth", instrument="shd") == ["shd.test"]
    with_locks = dataclasses.replace(config, locks=("filler.test:/home/sdfits-locks", "/local/locks"))
    assert remote_targets(with_locks, hop="suth:cape") == ["cape.test", "filler.test"]


def test_aliases_of_one_host_get_a_master_each(config: Config) -> None:
    """sha.test, shd.test and cape.test all resolve to this sshd: one socket each, none left without."""
    targets = ["sha.test", "shd.test", "cape.test"]
    with shared_connections(config, targets) as shell:
        replies = {t: shell.run(parse_location(f"{t}:/"), WHO_AM_I) for t in targets}
        assert shell.control_dir is not None and len(list(Path(shell.control_dir).iterdir())) == 3
        assert replies == {t: shell.run(parse_location(f"{t}:/"), WHO_AM_I) for t in targets}  # each kept its own
    assert len(set(replies.values())) == 3


def test_an_unused_connection_still_opening_is_stopped_at_the_end(config: Config, sshd) -> None:
    """A run that ends (or is interrupted) before using a host does not wait for, or leave, its connection."""
    with socket.socket() as silent:  # accepts nothing: ssh waits for its ConnectTimeout (10 s)
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        options = (*config.ssh_options, "-o", f"Port={silent.getsockname()[1]}")
        started = time.monotonic()
        with shared_connections(dataclasses.replace(config, ssh_options=options), ["cape.test"]) as shell:
            opening = shell._early.opening["cape.test"]
        assert time.monotonic() - started < 5 and opening.poll() is not None



def test_a_verbose_ssh_does_not_hold_up_the_run(config: Config) -> None:
    """With -v the background master keeps stderr open: waiting for it to close would take ControlPersist."""
    verbose = dataclasses.replace(config, ssh_options=(*config.ssh_options, "-v"))
    started = time.monotonic()
    with shared_connections(verbose, ["cape.test"]) as shell:
        assert shell.run(parse_location("cape.test:/"), "printf ok") == b"ok"
    assert time.monotonic() - started < 3


def test_a_command_that_cannot_be_started_is_one_transport_error(tmp_path) -> None:
    with pytest.raises(TransportError) as caught:
        Shell().run(parse_location(str(tmp_path)), "true " + "x" * 200_000)  # one argument over the kernel's limit
    assert caught.value.one_line() == "cannot run sh: Argument list too long (localhost)"


def test_a_run_removes_the_empty_socket_folders_that_killed_runs_left(config: Config) -> None:
    """A SIGKILLed sync cannot remove its socket folder; a run a day later does, if it is empty."""
    tag = f"{time.monotonic_ns()}-"
    old_empty, old_in_use, new_empty = (Path(tempfile.mkdtemp(prefix=CONTROL_PREFIX + tag, dir=CONTROL_PARENT))
                                        for _ in range(3))  # fmt: skip
    (old_in_use / "socket").write_text("")
    for folder in (old_empty, old_in_use):
        os.utime(folder, (time.time() - 2 * STALE_CONTROL_S,) * 2)
    try:
        with shared_connections(config, []) as shell:
            # tidied while the run's handshakes are under way; the run's own (new, empty) folder kept
            assert shell.control_dir is not None and Path(shell.control_dir).is_dir() and not old_empty.exists()
        assert not old_empty.exists() and old_in_use.is_dir() and new_empty.is_dir()
        assert not Path(shell.control_dir).exists() and remove_stale_control_dirs() == []
    finally:
        for folder in (old_empty, old_in_use, new_empty):
            shutil.rmtree(folder, ignore_errors=True)


def test_a_remembered_connection_already_up_but_not_the_runs_own_is_not_used(config: Config) -> None:
    """A stale memo's ssh that authenticated before the run compared it has left for the background, holding the
    socket the run's own connection would use: the run must not talk through it (another command line's connection)."""
    import subprocess

    from obsflow.transfer import early, remote

    folder = early.SocketFolder.new()
    own = Shell(config.ssh_options, control_dir=folder.name).early_argv("cape.test")
    stale = [part.replace("ConnectTimeout=10", "ConnectTimeout=11") for part in own]
    started = early._spawn(stale)
    assert started is not None and started.wait() == 0  # up, and gone to the background
    started.stderr.close()
    probe = [*remote.ssh_argv(config.ssh_options, folder.name, "cape.test"), "cape.test", WHO_AM_I]
    through_stale = subprocess.run(probe, capture_output=True, check=True).stdout
    remembered = early.Remembered(("x", 0, 0, 0, 0, "", ""), folder, {"cape.test": (stale, started)})
    remote.open_before_sync(config, ["cape.test"], remembered)
    with shared_connections(config, ["cape.test"]) as shell:
        assert shell.control_dir == folder.name
        assert shell.run(parse_location("cape.test:/"), WHO_AM_I) != through_stale


def _collect(shell: Shell, script: str, stdin: bytes = b"", where: str = "/") -> list[tuple[float, bytes]]:
    pieces: list[tuple[float, bytes]] = []
    shell.stream(parse_location(where), script, lambda data: pieces.append((time.monotonic(), data)), stdin=stdin)
    return pieces


def test_a_streamed_command_hands_over_its_output_as_it_comes(config: Config) -> None:
    # The first piece is in hand while the command still runs: a listing is parsed as find prints it.
    for where in ("/", "cape.test:/"):
        with shared_connections(config, ["cape.test"]) as shell:
            started = time.monotonic()
            pieces = _collect(shell, "printf first; sleep 0.5; printf second", where=where)
            ended = time.monotonic()
        assert b"".join(data for _, data in pieces) == b"firstsecond"
        assert len(pieces) >= 2 and ended - pieces[0][0] >= 0.4 and pieces[0][0] > started


def test_a_streamed_command_with_much_input_and_chatter_never_blocks() -> None:
    # 1 MiB in, 1 MiB on stderr while stdout is read: more than any pipe holds.
    script = "head -c 1048576 /dev/zero >&2; wc -c"
    pieces = _collect(Shell(timeout_s=30), script, stdin=b"x" * (1 << 20))
    assert b"".join(data for _, data in pieces).strip() == b"1048576"


def test_a_streamed_command_that_fails_says_so_in_one_line(config: Config) -> None:
    with pytest.raises(RemoteCommandFailed, match=r"exit 3\): cannot list /x"):
        _collect(Shell(), "printf partial; echo 'cannot list /x' >&2; exit 3")
    with shared_connections(config, ["down.test"]) as shell, pytest.raises(HostUnreachable, match="down.test"):
        _collect(shell, "true", where="down.test:/")


def test_a_streamed_command_stops_when_its_reader_gives_up_or_its_time_is_out(tmp_path: Path) -> None:
    def refuse(data: bytes) -> None:
        raise ValueError("not a listing")

    started = time.monotonic()
    with pytest.raises(ValueError, match="not a listing"):
        Shell().stream(parse_location("/"), f"printf x; sleep 30; touch {tmp_path}/late", refuse)
    with pytest.raises(RemoteCommandFailed, match="no answer after 0.5 s"):
        _collect(Shell(timeout_s=0.5), f"sleep 30; touch {tmp_path}/late")
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not (tmp_path / "late").exists()


def test_connections_taken_over_from_the_memo_are_stopped_when_the_others_cannot_start(
    config: Config, monkeypatch, tmp_path: Path
) -> None:
    from obsflow.transfer import remote
    from obsflow.transfer.early import Remembered, SocketFolder, Started

    folder = SocketFolder.new()
    argv = Shell(config.ssh_options, control_dir=folder.name).early_argv("cape.test")
    read_end, write_end = os.pipe()
    pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 2)])
    os.close(write_end)  # stands for the remembered ssh of cape.test (same command line: taken over)
    remembered = Remembered(("key",), folder, {"cape.test": (argv, Started(pid, read_end))})
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh here: suth.test's connection cannot start
    monkeypatch.setattr(remote, "_opened_before", None)
    with pytest.raises(OSError):
        remote.open_before_sync(config, ["cape.test", "suth.test"], remembered)
    remote._abandon_unclaimed()  # what the exit handler does when no run came to take them
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # stopped and reaped
    assert not Path(folder.name).exists()
