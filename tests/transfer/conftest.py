"""Three hosts on one loopback sshd: instrument computers, the site archive (local: the sync runs
there, as at SAAO) and the remote archive, with simulated data for 3 instruments."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from obsflow.config import Config, load_config
from obsflow.simulate.instrument import Simulation, simulate_instruments
from tests.fixtures.sshd import SshServer

INSTRUMENTS = ("sha", "shd", "spupnic")
TELESCOPE = {"sha": "74in", "shd": "40in", "spupnic": "74in"}
HOST = {"sha": "sha.test", "shd": "shd.test", "spupnic": "spupnic.test"}


@dataclass
class Site:
    """Paths of the three simulated hosts and the config that ties them together."""

    root: Path
    inst: Path  # instrument computers: <inst>/<name>/YYYY/MMDD
    suth: Path  # site archive (local)
    cape: Path  # remote archive (over ssh)
    config_path: Path
    sim: Simulation
    today: date

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def archive_file(self, archive: Path, inst: str, relpath: str) -> Path:
        return archive / TELESCOPE[inst] / inst / relpath

    def source_file(self, inst: str, relpath: str) -> Path:
        return self.inst / inst / relpath


def write_config(path: Path, sshd: SshServer, inst: Path, suth: Path, cape: Path, extra: str = "",
                 hosts: dict[str, str] | None = None, rsync_options: str = "[]") -> None:  # fmt: skip
    hosts = hosts or HOST
    blocks = [
        "window_days = 30",
        "settle_seconds = 120",
        'patterns = ["*.fits"]',
        f'state_dir = "{path.parent / "state"}"',
        extra,
        "[ssh]",
        f"options = {list(sshd.ssh_options)!r}".replace("'", '"'),
        "[transfer]",
        f"rsync_options = {rsync_options}",
    ]
    for name in INSTRUMENTS:
        blocks += [
            f"[instruments.{name}]",
            f'source = "{hosts[name]}:{inst / name}"',
            'layout = "{yyyy}/{mmdd}"',
            f'path = "{TELESCOPE[name]}/{name}"',
        ]
    blocks += [
        "[archives.suth]", f'location = "{suth}"',
        "[archives.cape]", f'location = "cape.test:{cape}"',
        "[[hops]]", 'from = "instruments"', 'to = "suth"',
        "[[hops]]", 'from = "suth"', 'to = "cape"',
    ]  # fmt: skip
    path.write_text("\n".join(blocks) + "\n")


def make_site(tmp_path: Path, sshd: SshServer, nights: int = 40, frames: int = 2, growing: bool = False,
              **config_kw: object) -> Site:  # fmt: skip
    today = date.today()
    inst, suth, cape = tmp_path / "inst", tmp_path / "suth", tmp_path / "cape"
    sim = simulate_instruments(inst, list(INSTRUMENTS), nights, today, frames=frames, seed=7, growing=growing)
    suth.mkdir()
    cape.mkdir()
    config_path = tmp_path / "obsflow.toml"
    write_config(config_path, sshd, inst, suth, cape, **config_kw)  # type: ignore[arg-type]
    return Site(tmp_path, inst, suth, cape, config_path, sim, today)


@pytest.fixture
def site(tmp_path: Path, sshd: SshServer) -> Site:
    """40 nights x 3 instruments x 2 frames on the instrument host, empty archives."""
    return make_site(tmp_path, sshd)


def ssh_config(tmp_path: Path, sshd: SshServer, body: str) -> Path:
    """``<tmp_path>/obsflow.toml``: the state folder in ``tmp_path``, the loopback sshd's client options, then ``body``."""
    options = ", ".join(f'"{o}"' for o in sshd.ssh_options)
    path = tmp_path / "obsflow.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[ssh]\noptions = [{options}]\n{body}')
    return path


def damage_catalog(path: Path) -> None:
    """Overwrite every page after the first (the schema stays readable) with garbage, as a bad disk
    sector or a copy cut short might leave it."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(bytes(range(256)) * ((size - 4096) // 256))

