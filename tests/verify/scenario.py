"""Two instruments, two hops, all over the loopback sshd: the world verify checks in tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from obsflow.config import Config, parse_config
from obsflow.verify.period import Period
from tests.fixtures.sshd import SshServer
from tests.verify.trees import OLD, mirror, write_nights

PERIOD = Period(date(2026, 10, 1), date(2026, 11, 23))
NIGHTS = [date(2026, 10, 5), date(2026, 10, 31), date(2026, 11, 2)]
BEFORE_PERIOD = date(2026, 9, 30)
INSTRUMENTS = {"sha": ("SHA", "74in/sha"), "shd": ("SHD", "40in/shd")}


@dataclass
class World:
    """Trees on disk and a config that reaches them through ssh (``*.test`` aliases)."""

    root: Path
    config_path: Path
    files: dict[str, list[str]]  # instrument -> relative paths in the period

    @property
    def config(self) -> Config:
        config, problems = parse_config(self.config_path.read_text(), self.config_path)
        assert not problems and config is not None, problems
        return config

    def inst(self, name: str) -> Path:
        return self.root / "inst" / name

    def suth(self, name: str) -> Path:
        return self.root / "suth" / INSTRUMENTS[name][1]

    def cape(self, name: str) -> Path:
        return self.root / "cape" / INSTRUMENTS[name][1]


def config_text(root: Path, sshd: SshServer, extra: str = "", mail: str = "") -> str:
    inst = "\n".join(
        f'[instruments.{name}]\nsource = "instruments.test:{root}/inst/{name}"\npath = "{sub}"\n'
        for name, (_prefix, sub) in INSTRUMENTS.items()
    )
    return f"""\
settle_seconds = 60
state_dir = "{root}/state"
[ssh]
options = {sshd.ssh_options!r}
{inst}
[archives.suth]
location = "suth.test:{root}/suth"
[archives.cape]
location = "cape.test:{root}/cape"
{extra}
[[hops]]
from = "instruments"
to = "suth"
[[hops]]
from = "suth"
to = "cape"
{mail}
""".replace("'", '"')


def build_world(root: Path, sshd: SshServer, per_night: int = 4, extra: str = "", mail: str = "") -> World:
    """Every night copied to both archives, all equal; plus an old night outside the period."""
    mtime = time.time() - OLD
    files = {}
    for name, (prefix, _sub) in INSTRUMENTS.items():
        files[name] = write_nights(root / "inst" / name, prefix, NIGHTS, per_night, mtime)
        write_nights(root / "inst" / name, prefix, [BEFORE_PERIOD], 2, mtime)
    for name in INSTRUMENTS:
        mirror(root / "inst" / name, root / "suth" / INSTRUMENTS[name][1])
        mirror(root / "inst" / name, root / "cape" / INSTRUMENTS[name][1])
    config_path = root / "obsflow.toml"
    config_path.write_text(config_text(root, sshd, extra, mail))
    return World(root, config_path, files)
