"""The one TOML configuration file: sites, hosts, instruments, hops, mail, filler.

``load_config(path)`` returns a frozen :class:`Config` or raises one
:class:`~obsflow.errors.ConfigError` naming the first problem; ``check_config``
returns every problem, one :class:`Problem` per key (``obsflow config check``).

A *location* is ``[user@]host:path`` (remote, reached with the OpenSSH client) or
a local path; as in rsync, a ``:`` before the first ``/`` makes it remote.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from obsflow.errors import ConfigError

__all__ = [
    "ARCHIVE_MARKER",
    "Archive",
    "Config",
    "FillerConfig",
    "Hop",
    "Instrument",
    "Location",
    "MailConfig",
    "Problem",
    "check_config",
    "load_config",
    "parse_config",
    "parse_location",
]

INSTRUMENTS = "instruments"  # the ``from`` of the first hop: every instrument's source
LAYOUT_FIELDS = ("yyyy", "mm", "dd", "mmdd", "yyyymmdd")
UNDATED = "*"  # a layout: no dated folders; every file under the source, chosen by its modification time
WHOLE_ROOT = "."  # the one folder an undated layout lists: the whole root
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Location:
    """Where files live: a local folder, or a folder on ``[user@]host`` over ssh."""

    path: str
    host: str | None = None
    user: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    @property
    def ssh_target(self) -> str:
        """``user@host`` or ``host`` for the OpenSSH client."""
        if self.host is None:
            raise ValueError("a local location has no ssh target")
        return f"{self.user}@{self.host}" if self.user else self.host

    def join(self, *parts: str) -> Location:
        """This location with ``parts`` appended to its path."""
        return Location(str(PurePosixPath(self.path, *parts)), self.host, self.user)

    def __str__(self) -> str:
        return f"{self.ssh_target}:{self.path}" if self.is_remote else self.path


@dataclass(frozen=True)
class Instrument:
    """An instrument computer writing FITS files into dated folders under ``source``.

    Or, with the layout ``*`` (:data:`UNDATED`), any tree whose folders are not dated, such as
    the online filler's SDFITS products (``<PROJ>/<PROJ>.raw.vegas/...``): the window then
    picks files by their modification time.
    """

    name: str
    source: Location
    layout: str  # e.g. "{yyyy}/{mmdd}", or "*"
    path: str  # where its files go inside every archive, e.g. "74in/sha"
    patterns: tuple[str, ...]
    settle_seconds: float | None = None  # this source's own settle time; None: the config's
    grows: bool = False  # files grow by appending (SDFITS products): a grown file replaces our own copy
    keep_superseded_days: float | None = None  # with grows: remove replaced copies this old; None: keep all


#: the file whose presence in an archive's folder says "this is the archive's disk, mounted"
ARCHIVE_MARKER = ".obsflow-archive"


@dataclass(frozen=True)
class Archive:
    """A site or remote archive holding every instrument under ``location/<instrument.path>``.

    ``require_marker``: the sync reads and writes the archive only while ``location`` holds
    :data:`ARCHIVE_MARKER`; an unmounted disk leaves its mount point as an empty folder, which
    would otherwise pass for an empty archive (and be written beneath, on the wrong disk).
    """

    name: str
    location: Location
    require_marker: bool = False

    @property
    def marker(self) -> str | None:
        """The path (on the archive's host) of the marker file it must hold, if it must hold one."""
        return self.location.join(ARCHIVE_MARKER).path if self.require_marker else None


@dataclass(frozen=True)
class Hop:
    """One copy step: ``source`` ("instruments" or an archive name) to an archive."""

    source: str
    dest: str

    @property
    def label(self) -> str:
        return f"{self.source}:{self.dest}"


@dataclass(frozen=True)
class MailConfig:
    """Where and when the verification report is mailed."""

    server: str = "localhost:25"
    starttls: bool = False
    sender: str = "obsflow@localhost"
    to: tuple[str, ...] = ()
    when: str = "always"  # or "problems"
    username: str | None = None
    password_env: str | None = None  # name of an environment variable holding the password
    password_file: str | None = None  # a file holding the password

    @property
    def host(self) -> str:
        return self.server.rsplit(":", 1)[0] if ":" in self.server else self.server

    @property
    def port(self) -> int:
        return int(self.server.rsplit(":", 1)[1]) if ":" in self.server else 25

    def password(self) -> str | None:
        """The SMTP password from the environment or a file; never stored in the config."""
        if self.password_env:
            return os.environ.get(self.password_env)
        if self.password_file:
            return Path(self.password_file).expanduser().read_text().strip()
        return None


@dataclass(frozen=True)
class FillerConfig:
    """Settings of the online SDFITS filler."""

    raw_root: str = "/home/gbtdata"
    out_root: str = "/home/sdfits"
    flags_dir: str | None = None  # default: <out_root>/flags
    locks_dir: str | None = None  # default: <out_root>/locks
    backends: tuple[str, ...] = ("vegas",)
    projects: tuple[str, ...] = ()  # empty: every project
    poll_seconds: float = 1.0
    lock_timeout_seconds: float = 60.0
    retry_limit: int = 5


@dataclass(frozen=True)
class Config:
    """The whole configuration, as read from one TOML file."""

    path: Path | None
    window_days: int = 30
    settle_seconds: float = 120.0
    patterns: tuple[str, ...] = ("*.fits",)
    locks: tuple[str, ...] = ()
    state_dir: str = "~/.local/state/obsflow"
    ssh_options: tuple[str, ...] = ()
    ssh_multiplex: bool = True  # share one ssh connection per host during a sync
    rsync_options: tuple[str, ...] = ()  # extra rsync arguments, e.g. ["--bwlimit=20m"]
    sync_wait_seconds: float = 0.0  # how long a second `obsflow sync` waits for the first
    instruments: dict[str, Instrument] = field(default_factory=dict)
    archives: dict[str, Archive] = field(default_factory=dict)
    hops: tuple[Hop, ...] = ()
    mail: MailConfig = field(default_factory=MailConfig)
    filler: FillerConfig = field(default_factory=FillerConfig)
    web_host: str = "127.0.0.1"
    web_port: int = 8080

    @property
    def state_path(self) -> Path:
        """The folder for the catalog, run locks and logs (relative to the config file)."""
        base = self.path.parent if self.path else Path.cwd()
        return (base / Path(self.state_dir).expanduser()).resolve()

    @property
    def catalog_path(self) -> Path:
        return self.state_path / "catalog.sqlite"

    def host_root(self, name: str) -> list[tuple[Instrument, Location]]:
        """For ``instruments`` or an archive: each instrument and the folder holding its dated folders."""
        return [(inst, self.instrument_root(name, inst)) for inst in self.instruments.values()]

    def settle_seconds_for(self, inst: Instrument) -> float:
        """How long ``inst``'s files must be left alone before they count as written: its own, else the config's."""
        return self.settle_seconds if inst.settle_seconds is None else inst.settle_seconds

    def instrument_root(self, name: str, inst: Instrument) -> Location:
        """The folder holding ``inst``'s dated folders on hop end ``name`` (``instruments`` or an archive)."""
        return inst.source if name == INSTRUMENTS else self.archives[name].location.join(inst.path)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file: the key, what is wrong, and the line."""

    key: str
    what: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.key}: {self.what}{where}"


def parse_location(text: str) -> Location:
    """``[user@]host:path`` (a ``:`` before the first ``/``) or a local path."""
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        target, path = text[:colon], text[colon + 1 :]
        user, _, host = target.rpartition("@")
        return Location(path=path or ".", host=host, user=user or None)
    return Location(path=str(Path(text).expanduser()))


def load_config(path: Path | str) -> Config:
    """Read and validate the TOML file at ``path``; raise ConfigError on the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError("config file not found (use --config or OBSFLOW_CONFIG)", path) from err
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror}", path) from err
    config, problems = parse_config(text, path)
    if problems:
        raise ConfigError(f"config: {problems[0]}", path)
    assert config is not None
    return config


def check_config(path: Path | str) -> list[Problem]:
    """Every problem in the config file at ``path`` (empty when it is valid)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        return [Problem("(file)", f"cannot read: {err.strerror}")]
    return parse_config(text, path)[1]


class _Reader:
    """Pulls typed values out of the parsed TOML, collecting problems with line numbers."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.problems: list[Problem] = []

    def line_of(self, key: str) -> int | None:
        """Best-effort line number of a dotted key such as ``instruments.sha.source``."""
        *tables, leaf = key.replace("]", "").replace("[", ".").split(".")
        tables = [t for t in tables if not t.isdigit()]
        start = 0
        if tables:
            header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(map(re.escape, tables)) + r"\s*\]\]?")
            start = next((i for i, ln in enumerate(self.lines) if header.match(ln)), 0)
        pattern = re.compile(r"^\s*" + re.escape(leaf) + r"\s*=")
        for i in range(start, len(self.lines)):
            if pattern.match(self.lines[i]):
                return i + 1
        return start + 1 if tables else None

    def problem(self, key: str, what: str) -> None:
        self.problems.append(Problem(key, what, self.line_of(key)))

    def get(self, table: dict[str, Any], key: str, dotted: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.problem(dotted, f"must be a {name}, not {type(value).__name__} {value!r}")
            return default
        return value

    def strings(self, table: dict[str, Any], key: str, dotted: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(table, key, dotted, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            self.problem(dotted, "must be a list of strings")
            return default
        return tuple(value)

    def unknown(self, table: dict[str, Any], known: set[str], prefix: str) -> None:
        for key in table:
            if key not in known:
                self.problem(f"{prefix}{key}", "unknown key")


_TOP_KEYS = {
    "window_days", "settle_seconds", "patterns", "locks", "state_dir",
    "ssh", "transfer", "instruments", "archives", "hops", "mail", "filler", "web",
}  # fmt: skip


# rsync options a site may add: they tune how bytes travel, never what is copied, where, or how
# it lands (an allowlist: an alias such as --remove-sent-files must not slip through a list of
# forbidden names).  Options that change rsync's report lines (-h, --info, -q, --protocol) are out.
_ALLOWED_RSYNC_OPTIONS = {
    "--bwlimit", "--timeout", "--contimeout", "-z", "--compress", "--compress-choice", "--zc", "--compress-level",
    "--zl", "--skip-compress", "--rsync-path", "--address", "--port", "--sockopts", "--blocking-io",
    "--no-blocking-io", "-4", "--ipv4", "-6", "--ipv6", "-W", "--whole-file", "--no-whole-file", "--numeric-ids",
    "--no-perms", "--no-owner", "--no-group", "--chmod", "--outbuf", "--max-alloc",
}  # fmt: skip
# ... and those that would let a partial, a replacement or a deletion through: refused with the reason
_UNSAFE_RSYNC_OPTIONS = {
    "--partial", "-P", "--inplace", "--append", "--append-verify", "--remove-source-files", "--remove-sent-files",
    "--partial-dir", "--delete", "--delete-before", "--delete-during", "--delete-delay", "--delete-after",
    "--delete-excluded", "--delete-missing-args", "--temp-dir", "-T", "--checksum-choice", "--cc", "--out-format",
    "--files-from", "--keep-dirlinks", "-K",
}  # fmt: skip


def parse_config(text: str, path: Path | None = None) -> tuple[Config | None, list[Problem]]:
    """Parse TOML ``text``; return the config (None if it is unusable) and every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = re.search(r"line (\d+)", str(err))
        return None, [Problem("(syntax)", f"not valid TOML: {err}", int(line.group(1)) if line else None)]
    r = _Reader(text)
    r.unknown(data, _TOP_KEYS, "")
    window_days = r.get(data, "window_days", "window_days", int, 30)
    if window_days < 1:
        r.problem("window_days", "must be at least 1")
    settle = r.get(data, "settle_seconds", "settle_seconds", float, 120.0)
    if settle < 0:
        r.problem("settle_seconds", "must not be negative")
    patterns = r.strings(data, "patterns", "patterns", ("*.fits",))
    locks = r.strings(data, "locks", "locks", ())
    state_dir = r.get(data, "state_dir", "state_dir", str, "~/.local/state/obsflow")
    ssh = r.get(data, "ssh", "ssh", dict, {})
    r.unknown(ssh, {"options", "multiplex"}, "ssh.")
    ssh_options = r.strings(ssh, "options", "ssh.options", ())
    ssh_multiplex = r.get(ssh, "multiplex", "ssh.multiplex", bool, True)
    transfer = r.get(data, "transfer", "transfer", dict, {})
    r.unknown(transfer, {"rsync_options", "wait_seconds"}, "transfer.")
    rsync_options = r.strings(transfer, "rsync_options", "transfer.rsync_options", ())
    for option in rsync_options:
        name = option.split("=", 1)[0]
        if name in _UNSAFE_RSYNC_OPTIONS or name[:2] in _UNSAFE_RSYNC_OPTIONS:  # -T/tmp: -T with its value
            r.problem("transfer.rsync_options", f"{option!r} would break obsflow's no-overwrite, no-partial rules")
        elif name not in _ALLOWED_RSYNC_OPTIONS:
            r.problem("transfer.rsync_options", f"{option!r} is not an option obsflow passes to rsync (allowed: "
                      "--bwlimit, --timeout, --contimeout, -z, --rsync-path, --chmod, -W and the like; "
                      "one option per string)")  # fmt: skip
    sync_wait = r.get(transfer, "wait_seconds", "transfer.wait_seconds", float, 0.0)
    if sync_wait < 0:
        r.problem("transfer.wait_seconds", "must not be negative")

    instruments = _parse_instruments(r, r.get(data, "instruments", "instruments", dict, {}), patterns)
    _check_paths_apart(r, instruments)
    archives = _parse_archives(r, r.get(data, "archives", "archives", dict, {}))
    hops = _parse_hops(r, r.get(data, "hops", "hops", list, []), archives)
    mail = _parse_mail(r, r.get(data, "mail", "mail", dict, {}))
    filler = _parse_filler(r, r.get(data, "filler", "filler", dict, {}))
    web = r.get(data, "web", "web", dict, {})
    r.unknown(web, {"host", "port"}, "web.")
    config = Config(
        path=path.resolve() if path else None,
        window_days=window_days,
        settle_seconds=settle,
        patterns=patterns,
        locks=locks,
        state_dir=state_dir,
        ssh_options=ssh_options,
        ssh_multiplex=ssh_multiplex,
        rsync_options=rsync_options,
        sync_wait_seconds=sync_wait,
        instruments=instruments,
        archives=archives,
        hops=hops,
        mail=mail,
        filler=filler,
        web_host=r.get(web, "host", "web.host", str, "127.0.0.1"),
        web_port=r.get(web, "port", "web.port", int, 8080),
    )
    return config, r.problems


def _parse_instruments(r: _Reader, table: dict[str, Any], patterns: tuple[str, ...]) -> dict[str, Instrument]:
    instruments = {}
    for name, spec in table.items():
        prefix = f"instruments.{name}."
        if not _NAME.match(name):
            r.problem(f"instruments.{name}", "name may hold only letters, digits, '_', '-' and '.'")
        if not isinstance(spec, dict):
            r.problem(f"instruments.{name}", "must be a table")
            continue
        r.unknown(spec, {"source", "layout", "path", "patterns", "settle_seconds", "grows", "keep_superseded_days"},
                  prefix)
        source = r.get(spec, "source", prefix + "source", str, "")
        if not source:
            r.problem(prefix + "source", "is required ([user@]host:path or a local path)")
        layout = r.get(spec, "layout", prefix + "layout", str, "{yyyy}/{mmdd}")
        _check_layout(r, layout, prefix + "layout")
        settle = r.get(spec, "settle_seconds", prefix + "settle_seconds", float, None)
        if settle is not None and settle < 0:
            r.problem(prefix + "settle_seconds", "must not be negative")
        grows = r.get(spec, "grows", prefix + "grows", bool, False)
        keep = r.get(spec, "keep_superseded_days", prefix + "keep_superseded_days", float, None)
        if keep is not None and keep < 0:
            r.problem(prefix + "keep_superseded_days", "must not be negative")
        elif keep is not None and not grows:
            r.problem(prefix + "keep_superseded_days", "only grown files are superseded: it needs grows = true")
        sub = r.get(spec, "path", prefix + "path", str, name)
        if sub.startswith("/") or ".." in PurePosixPath(sub).parts:
            r.problem(prefix + "path", f"must be a relative path inside the archive, not {sub!r}")
        instruments[name] = Instrument(
            name=name,
            source=parse_location(source or "."),
            layout=layout,
            path=sub,
            patterns=r.strings(spec, "patterns", prefix + "patterns", patterns),
            settle_seconds=settle,
            grows=grows,
            keep_superseded_days=keep,
        )
    return instruments


def _check_paths_apart(r: _Reader, instruments: dict[str, Instrument]) -> None:
    """Each instrument needs a folder of its own in the archives: two sharing one (or one inside
    the other) would each take the other's files for its own, and its housekeeping too."""
    seen: dict[str, tuple[str, ...]] = {}
    for name, inst in instruments.items():
        parts = PurePosixPath(inst.path).parts
        for other, other_parts in seen.items():
            common = min(len(parts), len(other_parts))
            if parts[:common] == other_parts[:common]:
                r.problem(f"instruments.{name}.path", f"{inst.path!r} overlaps instruments.{other}.path "
                          f"{instruments[other].path!r}: each instrument needs its own folder in the archives")  # fmt: skip
                break
        seen[name] = parts


def _check_layout(r: _Reader, layout: str, key: str) -> None:
    if layout == UNDATED:
        return
    fields = re.findall(r"\{(\w+)\}", layout)
    unknown = [f for f in fields if f not in LAYOUT_FIELDS]
    if unknown:
        r.problem(key, f"unknown field {{{unknown[0]}}} (use {', '.join('{' + f + '}' for f in LAYOUT_FIELDS)})")
    elif not fields:
        r.problem(key, 'must name the date, e.g. "{yyyy}/{mmdd}", or be "*" for a tree that is not dated')


def _parse_archives(r: _Reader, table: dict[str, Any]) -> dict[str, Archive]:
    archives = {}
    for name, spec in table.items():
        prefix = f"archives.{name}."
        if name == INSTRUMENTS:
            r.problem(f"archives.{name}", f"'{INSTRUMENTS}' is reserved for the instrument sources")
        if not isinstance(spec, dict):
            r.problem(f"archives.{name}", "must be a table")
            continue
        r.unknown(spec, {"location", "require_marker"}, prefix)
        location = r.get(spec, "location", prefix + "location", str, "")
        if not location:
            r.problem(prefix + "location", "is required ([user@]host:path or a local path)")
        require_marker = r.get(spec, "require_marker", prefix + "require_marker", bool, False)
        archives[name] = Archive(name=name, location=parse_location(location or "."), require_marker=require_marker)
    return archives


def _parse_hops(r: _Reader, items: list[Any], archives: dict[str, Archive]) -> tuple[Hop, ...]:
    hops = []
    for i, spec in enumerate(items):
        prefix = f"hops[{i}]."
        if not isinstance(spec, dict):
            r.problem(f"hops[{i}]", "must be a table")
            continue
        r.unknown(spec, {"from", "to"}, prefix)
        source = r.get(spec, "from", prefix + "from", str, "")
        dest = r.get(spec, "to", prefix + "to", str, "")
        if source != INSTRUMENTS and source not in archives:
            r.problem(prefix + "from", f"unknown archive {source!r} (use '{INSTRUMENTS}' or an [archives] name)")
        if dest not in archives:
            r.problem(prefix + "to", f"unknown archive {dest!r}")
        if source == dest:
            r.problem(prefix + "to", "a hop must go to another archive")
        hops.append(Hop(source=source, dest=dest))
    return tuple(hops)


def _parse_mail(r: _Reader, table: dict[str, Any]) -> MailConfig:
    known = {"server", "starttls", "sender", "to", "when", "username", "password_env", "password_file", "password"}
    r.unknown(table, known, "mail.")
    if "password" in table:
        r.problem("mail.password", "never put a password in the config: use password_env or password_file")
    when = r.get(table, "when", "mail.when", str, "always")
    if when not in ("always", "problems"):
        r.problem("mail.when", f"must be 'always' or 'problems', not {when!r}")
    server = r.get(table, "server", "mail.server", str, "localhost:25")
    if ":" in server and not server.rsplit(":", 1)[1].isdigit():
        r.problem("mail.server", f"port must be a number in {server!r}")
    return MailConfig(
        server=server,
        starttls=r.get(table, "starttls", "mail.starttls", bool, False),
        sender=r.get(table, "sender", "mail.sender", str, "obsflow@localhost"),
        to=r.strings(table, "to", "mail.to", ()),
        when=when,
        username=r.get(table, "username", "mail.username", str, None),
        password_env=r.get(table, "password_env", "mail.password_env", str, None),
        password_file=r.get(table, "password_file", "mail.password_file", str, None),
    )


def _parse_filler(r: _Reader, table: dict[str, Any]) -> FillerConfig:
    known = {
        "raw_root", "out_root", "flags_dir", "locks_dir", "backends", "projects",
        "poll_seconds", "lock_timeout_seconds", "retry_limit",
    }  # fmt: skip
    r.unknown(table, known, "filler.")
    default = FillerConfig()
    return FillerConfig(
        raw_root=r.get(table, "raw_root", "filler.raw_root", str, default.raw_root),
        out_root=r.get(table, "out_root", "filler.out_root", str, default.out_root),
        flags_dir=r.get(table, "flags_dir", "filler.flags_dir", str, None),
        locks_dir=r.get(table, "locks_dir", "filler.locks_dir", str, None),
        backends=r.strings(table, "backends", "filler.backends", default.backends),
        projects=r.strings(table, "projects", "filler.projects", ()),
        poll_seconds=r.get(table, "poll_seconds", "filler.poll_seconds", float, default.poll_seconds),
        lock_timeout_seconds=r.get(
            table, "lock_timeout_seconds", "filler.lock_timeout_seconds", float, default.lock_timeout_seconds
        ),
        retry_limit=r.get(table, "retry_limit", "filler.retry_limit", int, default.retry_limit),
    )
