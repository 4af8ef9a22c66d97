"""`obsflow sync` opens its ssh connections before the command line machinery loads (obsflow.launch),
and the run takes them over; anything unusual on the command line just means no early start."""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from obsflow.launch import sync_arguments
from tests.fixtures.sshd import DOWN_ALIAS
from tests.transfer.conftest import HOST, Site, make_site

OBSFLOW = str(Path(sys.executable).parent / "obsflow")
TAKEN_OVER = "taking over the ssh connections opened at start"


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["sync"], {"config": "obsflow.toml"}),
        (["sync", "-c", "a.toml", "-i", "sha", "--hop", "suth:cape"], {"config": "a.toml", "instrument": "sha",
                                                                        "hop": "suth:cape"}),
        (["-vv", "sync", "--config=b.toml", "--instrument=shd", "-n"], {"config": "b.toml", "instrument": "shd"}),
        (["-q", "sync", "-cc.toml", "-d", "20160907", "--json"], {"config": "c.toml"}),
        (["sync", "--help"], None),
        (["sync", "-c"], None),  # the command says what is missing
        (["verify", "-c", "a.toml"], None),
        ([], None),
    ],
)  # fmt: skip
def test_the_quick_look_at_the_command_line_finds_what_the_connections_need(argv, wanted, monkeypatch) -> None:
    monkeypatch.delenv("OBSFLOW_CONFIG", raising=False)
    assert sync_arguments(argv) == wanted


def test_the_config_named_in_the_environment_is_used(monkeypatch) -> None:
    monkeypatch.setenv("OBSFLOW_CONFIG", "/etc/obsflow.toml")
    assert sync_arguments(["sync", "-i", "sha"]) == {"config": "/etc/obsflow.toml", "instrument": "sha"}


def _control_folders() -> set[str]:
    return {p.name for p in Path("/tmp").glob("obsflow-ssh-*")}


def test_the_sync_command_takes_over_the_connections_opened_at_start(site: Site) -> None:
    before = _control_folders()
    done = subprocess.run([OBSFLOW, "-vv", "sync", "-c", str(site.config_path), "-i", "sha"], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(TAKEN_OVER) == 1
    assert "instruments:suth sha: copied 60" in done.stdout and "suth:cape sha: copied 60" in done.stdout
    assert _control_folders() <= before  # the early folder went with the run


def test_a_mistyped_option_still_gets_the_commands_own_error_and_nothing_is_left_behind(site: Site) -> None:
    before = _control_folders()
    done = subprocess.run([OBSFLOW, "sync", "-c", str(site.config_path), "--bogus"], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2 and "No such option '--bogus'" in done.stderr
    assert _control_folders() <= before  # the connections opened at start were stopped, their folder removed
    assert not any((site.suth / "74in").rglob("*.fits"))


def test_an_early_start_that_cannot_read_the_config_leaves_the_error_to_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "obsflow.toml"
    bad.write_text("window_days = 'thirty'\n")
    done = subprocess.run([OBSFLOW, "sync", "-c", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("obsflow: error: config: window_days") and done.stderr.count("\n") == 1


def test_a_sync_that_ends_without_the_interpreters_teardown_still_delivers_all_its_output(tmp_path: Path, sshd) -> None:
    """The sync command leaves with os._exit (launch._leave): its JSON, written into a file (block
    buffered), must be whole, its log lines out and its exit status the run's (2: a host unreachable)."""
    hosts = {**HOST, "shd": DOWN_ALIAS}
    site = make_site(tmp_path, sshd, nights=3, hosts=hosts)
    out = tmp_path / "out.json"
    with out.open("w") as stdout:
        done = subprocess.run([OBSFLOW, "-vv", "sync", "-c", str(site.config_path), "--json"], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=300, check=False)  # fmt: skip
    report = json.loads(out.read_text())
    assert done.returncode == report["exit_code"] == 2
    failed = [o for o in report["hops"] if o["failure"]]
    assert {o["instrument"] for o in failed} == {"shd"} and "cannot reach host" in failed[0]["failure"]
    assert sum(o["copied"] for o in report["hops"]) == 2 * 2 * 3 * 2  # 2 instruments x 2 hops x 3 nights x 2
    assert TAKEN_OVER in done.stderr  # the log lines reach stderr


def _sync(site: Site, cache: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([OBSFLOW, "-vv", "sync", "-c", str(site.config_path), *options], capture_output=True,
                          text=True, timeout=300, check=False, env=env)  # fmt: skip


def _memo(cache: Path) -> dict:
    return marshal.loads((cache / "obsflow" / "early-ssh.marshal").read_bytes())["configs"]


def test_the_next_sync_of_an_unchanged_config_starts_its_connections_before_reading_it(site: Site, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _sync(site, cache, "-i", "sha")
    assert first.returncode == 0, first.stderr
    assert "; 0 as the last run of this config did" in first.stderr, first.stderr.splitlines()[0]
    memo = cache / "obsflow" / "early-ssh.marshal"
    assert memo.stat().st_mode & 0o777 == 0o600 and (cache / "obsflow").stat().st_mode & 0o777 == 0o700
    (entry,) = _memo(cache).values()
    assert list(entry["argv"]) == ["sha.test", "cape.test"]  # the instrument host and the remote archive
    assert entry["argv"]["cape.test"][-3:] == ["-f", "-N", "cape.test"]

    again = _sync(site, cache, "-i", "sha")
    assert again.returncode == 0, again.stderr
    assert "; 2 as the last run of this config did, before it was read)" in again.stderr
    other = _sync(site, cache, "-i", "shd")  # other options: another memo entry, nothing started from the first
    assert other.returncode == 0 and "; 0 as the last run" in other.stderr and len(_memo(cache)) == 2
    site.config_path.write_text(site.config_path.read_text() + "\n")  # the config changed: not trusted
    changed = _sync(site, cache, "-i", "sha")
    assert changed.returncode == 0 and "; 0 as the last run" in changed.stderr


def test_a_remembered_command_line_that_is_not_the_runs_own_is_stopped_and_replaced(site: Site, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _sync(site, cache, "-i", "sha").returncode == 0
    memo = cache / "obsflow" / "early-ssh.marshal"
    data = marshal.loads(memo.read_bytes())
    (entry,) = data["configs"].values()
    entry["argv"]["cape.test"] = [part.replace("ConnectTimeout=10", "ConnectTimeout=11") for part in
                                  entry["argv"]["cape.test"]]  # fmt: skip
    memo.write_bytes(marshal.dumps(data))
    done = _sync(site, cache, "-i", "sha")
    assert done.returncode == 0, done.stderr
    assert "; 1 as the last run of this config did" in done.stderr  # sha.test's; cape.test's started anew
    (entry,) = _memo(cache).values()
    assert "ConnectTimeout=10" in entry["argv"]["cape.test"]  # and remembered right again


@pytest.mark.parametrize("loose", ["memo", "folder"])
def test_a_memo_others_could_write_is_never_run(site: Site, tmp_path: Path, loose: str) -> None:
    cache = tmp_path / "cache"
    assert _sync(site, cache, "-i", "sha").returncode == 0
    memo = cache / "obsflow" / "early-ssh.marshal"
    data = marshal.loads(memo.read_bytes())
    (entry,) = data["configs"].values()
    marker = tmp_path / "ran"
    entry["argv"]["cape.test"] = ["ssh", "-o", f"ProxyCommand=touch {marker}", "-f", "-N", "cape.test"]
    memo.write_bytes(marshal.dumps(data))
    (memo if loose == "memo" else memo.parent).chmod(0o666 if loose == "memo" else 0o777)
    done = _sync(site, cache, "-i", "sha")
    assert done.returncode == 0, done.stderr
    assert not marker.exists() and "; 0 as the last run" in done.stderr


def test_what_runs_before_the_first_ssh_starts_loads_nothing_heavy() -> None:
    # typing (with re and collections) or enum would put ~10 ms in front of every sync's handshake.
    probe = ("import sys; import obsflow.launch, obsflow.transfer.early; "
             "print(' '.join(sorted(m for m in ('typing', 'enum', 're', 'subprocess') if m in sys.modules)))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
