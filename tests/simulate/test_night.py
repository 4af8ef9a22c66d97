"""The demo's night: the config it writes (``simulate/night.py``)."""

from __future__ import annotations

from pathlib import Path

from obsflow.simulate.night import _config_text


def test_the_local_demo_config_does_not_say_its_remote_archive_is_over_ssh(tmp_path: Path) -> None:
    """Found by review: `demo --local` wrote "# the remote archive, over ssh" above a local folder."""
    local = _config_text(tmp_path, None, 8080)
    [line] = [ln for ln in local.splitlines() if ln.startswith("[archives.cape]")]
    assert "over ssh" not in line.split("#", 1)[1].split("(")[0] and "a local folder" in line
    over_ssh = _config_text(tmp_path, tmp_path / "ssh_config", 8080)
    [line] = [ln for ln in over_ssh.splitlines() if ln.startswith("[archives.cape]")]
    assert line.endswith("# the remote archive, over ssh")
