"""The loopback sshd really works and really pins its host key."""

import subprocess

from tests.fixtures.sshd import DOWN_ALIAS


def test_sshd_runs_commands(sshd):
    result = sshd.run("suth.test", "echo hello-$((40+2))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello-42"


def test_unreachable_alias_fails_fast(sshd):
    result = sshd.run(DOWN_ALIAS, "true")
    assert result.returncode == 255


def test_unknown_host_key_is_refused(sshd, tmp_path):
    config = sshd.ssh_config.read_text().replace(str(sshd.ssh_config.parent / "known_hosts"), str(tmp_path / "empty"))
    (tmp_path / "empty").write_text("")
    (tmp_path / "cfg").write_text(config)
    result = subprocess.run(["ssh", "-F", str(tmp_path / "cfg"), "suth.test", "true"], capture_output=True, text=True)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
