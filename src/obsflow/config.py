"""The one TOML configuration file: sites, hosts, instruments, hops, mail, filler.

``load_config(path)`` returns a frozen :class:`Config` or raises one
:class:`~obsflow.errors.ConfigError` naming the first problem; ``check_config``
returns every problem, one :class:`Problem` per key (``obsflow config check``).

A *location* is ``[user@]host:path`` (remote, reached with the OpenSSH client) or
a local path; as in rsync, a ``:`` before the first ``/`` makes it remote.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any

from obsflow.errors import ConfigError, OutputError
from obsflow.folder_access import READ, WRITE, folder_problem

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
MAX_WINDOW_DAYS = 3660  # ten years: a longer window is a typo (and past year 9999, a crash)
#: the catalog keeps what a sync window or a verification reads: window_days, plus verify's this month and
#: last month (up to 62 nights), before it may forget a night
CATALOG_MARGIN_DAYS = 62
DEFAULT_KEEP_CATALOG_DAYS = 400
MAX_KEEP_CATALOG_DAYS = 36600  # a century: a longer one is a typo (and far enough back, past year 1)
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
        """The SMTP password from the environment or a file; never stored in the config.

        The variable comes first when it is set; else the file (with both named, cron, which
        passes no such variable, still finds the password).
        """
        if self.password_env and (value := os.environ.get(self.password_env)) is not None:
            return value
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
    projects: tuple[str, ...] = ()  # empty: every project observed lately (follow_hours)
    follow_hours: float = 24.0  # without projects: follow those whose ScanLog changed this lately (0: all)
    forget_after_hours: float = 6.0  # a project with nothing left to fill and its ScanLog unchanged this long is let go
    poll_seconds: float = 1.0
    lock_timeout_seconds: float = 60.0
    retry_limit: int = 5
    # "deferred": a fill is reported once its bytes are written; the daemon flushes them when idle (a crash of
    # the machine before that rolls the scan back, and it is filled again). "per-scan": each fill waits for the disk.
    flush: str = "deferred"



def make_state_folder(path: Path) -> None:
    """Create the state folder (catalog, run lock, last verification) if missing; a one-line OutputError if not
    possible: the account's to fix, and a file of that name ("exists") is not worth an errno's words."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputError("cannot create state folder: a file of that name is in the way", path) from err
    except OSError as err:
        raise OutputError(f"cannot create state folder: {err.strerror}", path) from err

@dataclass(frozen=True)
class Config:
    """The whole configuration, as read from one TOML file."""

    path: Path | None
    window_days: int = 30
    keep_catalog_days: int = DEFAULT_KEEP_CATALOG_DAYS  # the catalog forgets nights (and runs) older than this
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
    has_filler: bool = False  # the file has a [filler] table (else ``filler`` is only defaults: no filler here)
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


def parse_location(text: str, base: Path | None = None) -> Location:
    """``[user@]host:path`` (a ``:`` before the first ``/``) or a local path.

    A relative local path is taken from ``base`` (the config file's folder), so a sync does
    not depend on the folder it was started from (cron's is not yours).
    """
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        target, path = text[:colon], text[colon + 1 :]
        user, _, host = target.rpartition("@")
        return Location(path=path or ".", host=host, user=user or None)
    return Location(path=str(_local_path(text, base)))


def _local_path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def load_config(path: Path | str) -> Config:
    """Read and validate the TOML file at ``path``; raise ConfigError on the first problem."""
    path = Path(path)
    try:
        text = _read_text(path)
    except FileNotFoundError as err:
        raise ConfigError("config file not found (use --config or OBSFLOW_CONFIG)", path) from err
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror}", path) from err
    except _NotText as err:
        raise ConfigError(f"config: {err.problem}", path) from err
    config, problems = parse_config(text, path)
    problems = [p for p in problems if p.key not in ONLY_WHERE_USED]  # those: see ONLY_WHERE_USED
    if problems:
        raise ConfigError(f"config: {problems[0]}", path)
    assert config is not None
    return config


#: Problems ``config check`` reports that stop only the commands that need the key (``verify
#: --mail`` checks its recipients itself): a nightly sync must not stop for the mail settings.
ONLY_WHERE_USED = frozenset({"mail.to"})
MAIL_TO_REQUIRED = "is required: without a recipient verify --mail cannot send the report"


def check_config(path: Path | str, paths: bool = False) -> list[Problem]:
    """Every problem in the config file at ``path`` (empty when it is valid).

    ``paths``: also every local folder it names that this account cannot use here (see
    :func:`_local_folders`); a key already wrong is not looked at (its default would be).
    """
    path = Path(path)
    try:
        text = _read_text(path)
    except OSError as err:
        return [Problem("(file)", f"cannot read: {err.strerror}")]
    except _NotText as err:
        return [err.problem]
    config, problems = parse_config(text, path)
    if paths and config is not None:
        wrong = {problem.key for problem in problems}
        problems += [p for p in _folder_problems(config, _Reader(text)) if p.key not in wrong]
    return problems


def _folder_problems(config: Config, lines: _Reader) -> list[Problem]:
    """A problem for each local folder of ``config`` this account cannot use as obsflow will."""
    problems = []
    for key, location, access, created_if_missing in _local_folders(config):
        if not location.is_remote and (what := folder_problem(Path(location.path), access, created_if_missing)):
            problems.append(Problem(key, what, lines.line_of(key)))
    return problems


def _local_folders(config: Config) -> Iterator[tuple[str, Location, int, bool]]:
    """Each folder ``config`` names: its key, where, the access obsflow needs, and whether obsflow makes it.

    Remote ones too (the caller skips them: ssh is not for a config check).  Sources and lock folders
    are only read; an archive is read (verify, the next hop) and written, and must be there: the
    sync never makes one (an unmounted disk's empty mount point would pass for an empty archive).
    The state folder and the filler's output folders are made on first run; its raw root is only read.
    """
    for lock in config.locks:
        yield "locks", parse_location(lock), READ, False
    yield "state_dir", Location(str(config.state_path)), WRITE, True
    for name, inst in config.instruments.items():
        yield f"instruments.{name}.source", inst.source, READ, False
    for name, archive in config.archives.items():
        yield f"archives.{name}.location", archive.location, READ | WRITE, False
    if config.has_filler:
        filler = config.filler
        out_root = Path(filler.out_root)
        yield "filler.raw_root", Location(filler.raw_root), READ, False
        yield "filler.out_root", Location(str(out_root)), READ | WRITE, True  # its status and journals are read back
        yield "filler.flags_dir", Location(filler.flags_dir or str(out_root / "flags")), WRITE, True
        yield "filler.locks_dir", Location(filler.locks_dir or str(out_root / "locks")), READ | WRITE, True


class _NotText(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _read_text(path: Path) -> str:
    """The file's text; _NotText (with the line) when it is not UTF-8, as TOML requires."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise _NotText(Problem("(file)", f"not UTF-8 text (byte 0x{data[err.start]:02x})", line)) from None


_TABLE_HEADER = re.compile(r"^\s*\[")


# A wrong type in TOML's words, not Python's ("must be an integer, not a string '30'", not "a int, not str")
_WANTED: dict[type, str] = {
    int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list", dict: "a table",
}  # fmt: skip
_GIVEN: dict[type, str] = {
    bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list", dict: "a table",
    datetime: "a date and time", date: "a date", time: "a time",
}  # fmt: skip


def _toml_value(value: object) -> str:
    """``a string '30'``, ``a boolean true``: the kind of a TOML value, then the value."""
    kind = next((name for k, name in _GIVEN.items() if isinstance(value, k)), type(value).__name__)
    shown = str(value).lower() if isinstance(value, bool) else str(value) if isinstance(value, date | time) else repr(value)
    return f"{kind} {shown}"


class _Reader:
    """Pulls typed values out of the parsed TOML, collecting problems with line numbers."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.problems: list[Problem] = []
        self.base: Path | None = None  # the config's folder: relative local paths start there

    def line_of(self, key: str) -> int | None:
        """Best-effort line number of a dotted key such as ``instruments.sha.source`` or ``hops[1].from``.

        The key's line within its table; a key that is missing there: the table's header line;
        a table itself (``archives.suth``): its header.
        """
        parts = re.findall(r"\[\d+\]|[^.\[\]]+", key)
        if (header := self._header_line(parts)) is not None:
            return header + 1
        *table, leaf = parts
        start = self._header_line(table) if table else -1
        if start is None:
            return None
        end = next((i for i in range(start + 1, len(self.lines)) if _TABLE_HEADER.match(self.lines[i])),
                   len(self.lines))  # fmt: skip
        assignment = re.compile(r"^\s*" + re.escape(leaf) + r"\s*=")
        found = next((i for i in range(start + 1, end) if assignment.match(self.lines[i])), None)
        if found is not None:
            return found + 1
        return start + 1 if table else None

    def _header_line(self, parts: list[str]) -> int | None:
        """The index of the line opening table ``parts`` (``[a.b]``; the n-th ``[[a]]`` for ``a``, ``[n]``)."""
        names = [part for part in parts if not part.startswith("[")]
        nth = next((int(part[1:-1]) for part in parts if part.startswith("[")), 0)
        if not names:
            return None
        header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(map(re.escape, names)) + r"\s*\]\]?\s*(#.*)?$")
        found = [i for i, line in enumerate(self.lines) if header.match(line)]
        return found[nth] if nth < len(found) else None

    def problem(self, key: str, what: str) -> None:
        self.problems.append(Problem(key, what, self.line_of(key)))

    def get(self, table: dict[str, Any], key: str, dotted: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            kinds = (kind,) if isinstance(kind, type) else kind
            wanted = " or ".join(_WANTED.get(k, f"a {k.__name__}") for k in kinds)
            self.problem(dotted, f"must be {wanted}, not {_toml_value(value)}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(dotted, f"must be a finite number, not {value!r}")  # nan compares false: no settle time
            return default
        return value

    def number_in(self, table: dict[str, Any], key: str, dotted: str, kind: type, default: Any,
                  low: float, high: float | None = None) -> Any:  # fmt: skip
        """``get``, and a problem when the value is below ``low`` or above ``high``."""
        value = self.get(table, key, dotted, kind, default)
        if value < low:
            self.problem(dotted, f"must be at least {low:g}")
        elif high is not None and value > high:
            self.problem(dotted, f"must be at most {high:g}")
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
    "window_days", "keep_catalog_days", "settle_seconds", "patterns", "locks", "state_dir",
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
        what = re.sub(r" \(at line \d+, column (\d+)\)$", r" (column \1)", str(err))  # the line comes once, last
        return None, [Problem("(syntax)", f"not valid TOML: {what}", int(line.group(1)) if line else None)]
    r = _Reader(text)
    r.unknown(data, _TOP_KEYS, "")
    window_days = r.number_in(data, "window_days", "window_days", int, 30, 1, MAX_WINDOW_DAYS)
    keep_catalog_days = _keep_catalog_days(r, data, window_days)
    settle = _seconds(r, data, "settle_seconds", "settle_seconds", 120.0)
    patterns = _patterns(r, data, "patterns", ("*.fits",))
    base = path.resolve().parent if path else None
    r.base = base
    locks = tuple(str(parse_location(entry, base)) for entry in r.strings(data, "locks", "locks", ()))
    state_dir = r.get(data, "state_dir", "state_dir", str, "~/.local/state/obsflow")
    ssh_options, ssh_multiplex = _parse_ssh(r, r.get(data, "ssh", "ssh", dict, {}))
    rsync_options, sync_wait = _parse_transfer(r, r.get(data, "transfer", "transfer", dict, {}))

    instruments = _parse_instruments(r, r.get(data, "instruments", "instruments", dict, {}), patterns)
    _check_paths_apart(r, instruments)
    archives = _parse_archives(r, r.get(data, "archives", "archives", dict, {}))
    hops = _parse_hops(r, r.get(data, "hops", "hops", list, []), archives)
    mail = _parse_mail(r, r.get(data, "mail", "mail", dict, {}), present="mail" in data)
    filler = _parse_filler(r, r.get(data, "filler", "filler", dict, {}))
    web_host, web_port = _parse_web(r, r.get(data, "web", "web", dict, {}))
    config = Config(
        path=path.resolve() if path else None,
        window_days=window_days,
        keep_catalog_days=keep_catalog_days,
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
        has_filler="filler" in data,
        web_host=web_host,
        web_port=web_port,
    )
    return config, r.problems


def _keep_catalog_days(r: _Reader, data: dict[str, Any], window_days: int) -> int:
    """How many nights the catalog keeps: never fewer than a sync window and verify's two months read
    (without the key: 400, or more for a longer window)."""
    shortest = window_days + CATALOG_MARGIN_DAYS
    keep: int = r.get(data, "keep_catalog_days", "keep_catalog_days", int, max(DEFAULT_KEEP_CATALOG_DAYS, shortest))
    if "keep_catalog_days" not in data:
        return keep
    if keep < shortest:
        r.problem("keep_catalog_days", f"must be at least {shortest} (window_days {window_days} + "
                  f"{CATALOG_MARGIN_DAYS}: the sync window and verify's two months read the catalog rows of "
                  "those nights)")  # fmt: skip
    elif keep > MAX_KEEP_CATALOG_DAYS:
        r.problem("keep_catalog_days", f"must be at most {MAX_KEEP_CATALOG_DAYS}")
    return keep


def _seconds(r: _Reader, table: dict[str, Any], key: str, dotted: str, default: float) -> float:
    """A time in seconds, which must not be negative (reported, and kept as given)."""
    seconds: float = r.get(table, key, dotted, float, default)
    if seconds < 0:
        r.problem(dotted, "must not be negative")
    return seconds


def _parse_ssh(r: _Reader, ssh: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """``[ssh]``: the options given to every ssh (checked to be options) and whether to multiplex."""
    r.unknown(ssh, {"options", "multiplex"}, "ssh.")
    options = r.strings(ssh, "options", "ssh.options", ())
    for stray in _not_ssh_options(options):
        r.problem("ssh.options", f"{stray!r} is not an ssh option nor an option's value (e.g. [\"-o\", \"ConnectTimeout=10\"]):"
                  " ssh would take it for the host, and the host for the command")  # fmt: skip
    multiplex = r.get(ssh, "multiplex", "ssh.multiplex", bool, True)
    return options, multiplex


def _parse_transfer(r: _Reader, transfer: dict[str, Any]) -> tuple[tuple[str, ...], float]:
    """``[transfer]``: the extra rsync options (only safe ones) and how long a second sync waits for the first."""
    r.unknown(transfer, {"rsync_options", "wait_seconds"}, "transfer.")
    rsync_options = r.strings(transfer, "rsync_options", "transfer.rsync_options", ())
    for option in rsync_options:
        _check_rsync_option(r, option)
    wait_seconds = _seconds(r, transfer, "wait_seconds", "transfer.wait_seconds", 0.0)
    return rsync_options, wait_seconds


def _check_rsync_option(r: _Reader, option: str) -> None:
    """Report an rsync option that would break obsflow's copy rules, or that it does not know."""
    name = option.split("=", 1)[0]
    if name in _UNSAFE_RSYNC_OPTIONS or name[:2] in _UNSAFE_RSYNC_OPTIONS:  # -T/tmp: -T with its value
        r.problem("transfer.rsync_options", f"{option!r} would break obsflow's no-overwrite, no-partial rules")
    elif name not in _ALLOWED_RSYNC_OPTIONS:
        r.problem("transfer.rsync_options", f"{option!r} is not an option obsflow passes to rsync (allowed: "
                  "--bwlimit, --timeout, --contimeout, -z, --rsync-path, --chmod, -W and the like; "
                  "one option per string)")  # fmt: skip


def _parse_web(r: _Reader, web: dict[str, Any]) -> tuple[str, int]:
    """``[web]``: the status page's host and port."""
    r.unknown(web, {"host", "port"}, "web.")
    return _web_host(r, web), r.number_in(web, "port", "web.port", int, 8080, 0, 65535)


def _web_host(r: _Reader, web: dict[str, Any]) -> str:
    host = r.get(web, "host", "web.host", str, "127.0.0.1")
    if not host.strip():
        r.problem("web.host", "must not be empty (an empty host listens on every address)")
    return host


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
            source=parse_location(source or ".", r.base),
            layout=layout,
            path=sub,
            patterns=_patterns(r, spec, prefix + "patterns", patterns),
            settle_seconds=settle,
            grows=grows,
            keep_superseded_days=keep,
        )
    return instruments


# OpenSSH client options that take a value (ssh(1)); "-oBatchMode=yes" carries its value itself
_SSH_VALUE_OPTIONS = set("BbcDEeFIiJLlmOopQRSWw")


def _not_ssh_options(options: Sequence[str]) -> list[str]:
    """The items of ``[ssh] options`` that are neither an option nor the value an option takes.

    As ssh's getopt reads them: in a bundle of flags (``-4i``) the first option that takes a value
    takes the rest of the item (``-p22``, ``-oBatchMode=yes``), or the next item when it ends the bundle.
    """
    stray, wants_value = [], False
    for item in options:
        if wants_value:
            wants_value = False
        elif item.startswith("-") and len(item) > 1:
            letters = item[1:]
            takes_value = next((i for i, letter in enumerate(letters) if letter in _SSH_VALUE_OPTIONS), None)
            wants_value = takes_value == len(letters) - 1
        else:
            stray.append(item)
    return stray


def _patterns(r: _Reader, table: dict[str, Any], dotted: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """The file name patterns set at ``dotted`` (else ``default``).  A pattern that can match no file
    name is a problem, not a quiet night: the sync would copy nothing and verify say "OK: 0 files"."""
    key = dotted.rsplit(".", 1)[-1]
    patterns = r.strings(table, key, dotted, default)
    if key not in table:
        return patterns  # the default, checked where it was set
    if not patterns:
        r.problem(dotted, 'must name at least one pattern, e.g. ["*.fits"]: an empty list matches no file')
    for pattern in patterns:
        if not pattern:
            r.problem(dotted, "an empty pattern matches no file")
        elif "/" in pattern:  # rclone's "**/*.fits", or "2026/*.fits": the listing matches the name alone
            r.problem(dotted, f"{pattern!r} holds a '/': patterns match file names, not paths (e.g. \"*.fits\")")
    return patterns


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
        archives[name] = Archive(name=name, location=parse_location(location or ".", r.base),
                                 require_marker=require_marker)  # fmt: skip
    _check_archives_apart(r, archives)
    return archives


def _check_archives_apart(r: _Reader, archives: dict[str, Archive]) -> None:
    """Two archives in one folder (or one inside the other) would count one copy as two."""
    seen: list[tuple[str, Location]] = []
    for name, archive in archives.items():
        here = archive.location
        for other, there in seen:
            if here.host == there.host and _nested(here.path, there.path):
                r.problem(f"archives.{name}.location", f"same folder as (or nested with) archives.{other} ({there})")
        seen.append((name, here))


def _nested(a: str, b: str) -> bool:
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


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


def _parse_mail(r: _Reader, table: dict[str, Any], present: bool = True) -> MailConfig:
    """The ``[mail]`` table; ``present``: the config has one (else the defaults, unused without ``--mail``)."""
    known = {"server", "starttls", "sender", "to", "when", "username", "password_env", "password_file", "password"}
    r.unknown(table, known, "mail.")
    if "password" in table:
        r.problem("mail.password", "never put a password in the config: use password_env or password_file")
    when = r.get(table, "when", "mail.when", str, "always")
    if when not in ("always", "problems"):
        r.problem("mail.when", f"must be 'always' or 'problems', not {when!r}")
    server = r.get(table, "server", "mail.server", str, "localhost:25")
    port = server.rsplit(":", 1)[1] if ":" in server else "25"
    if not port.isdigit():
        r.problem("mail.server", f"port must be a number in {server!r}")
    elif not 1 <= int(port) <= 65535:  # the resolver takes a larger one modulo 65536: 65561 reaches port 25
        r.problem("mail.server", f"port must be 1 to 65535 in {server!r}")
    to = r.strings(table, "to", "mail.to", ())
    if present and not to:  # with when = "problems", found out only on the morning a report must go out
        r.problem("mail.to", MAIL_TO_REQUIRED)
    return MailConfig(
        server=server,
        starttls=r.get(table, "starttls", "mail.starttls", bool, False),
        sender=r.get(table, "sender", "mail.sender", str, "obsflow@localhost"),
        to=to,
        when=when,
        username=r.get(table, "username", "mail.username", str, None),
        password_env=r.get(table, "password_env", "mail.password_env", str, None),
        password_file=r.get(table, "password_file", "mail.password_file", str, None),
    )


def _parse_filler(r: _Reader, table: dict[str, Any]) -> FillerConfig:
    known = {
        "raw_root", "out_root", "flags_dir", "locks_dir", "backends", "projects", "follow_hours",
        "forget_after_hours", "poll_seconds", "lock_timeout_seconds", "retry_limit", "flush",
    }  # fmt: skip
    r.unknown(table, known, "filler.")
    default = FillerConfig()
    backends = r.strings(table, "backends", "filler.backends", default.backends)
    if {b.lower() for b in backends} - {"vegas"}:
        r.problem("filler.backends", f"only 'vegas' can be filled, not {list(backends)!r}")
    return FillerConfig(
        raw_root=_folder(r, table, "raw_root", default.raw_root),
        out_root=_folder(r, table, "out_root", default.out_root),
        flags_dir=_folder(r, table, "flags_dir", None),
        locks_dir=_folder(r, table, "locks_dir", None),
        backends=backends,
        projects=r.strings(table, "projects", "filler.projects", ()),
        follow_hours=r.number_in(table, "follow_hours", "filler.follow_hours", float, default.follow_hours, 0),
        forget_after_hours=r.number_in(table, "forget_after_hours", "filler.forget_after_hours", float,
                                       default.forget_after_hours, 0),
        poll_seconds=r.number_in(table, "poll_seconds", "filler.poll_seconds", float, default.poll_seconds, 0.01),
        lock_timeout_seconds=r.number_in(
            table, "lock_timeout_seconds", "filler.lock_timeout_seconds", float, default.lock_timeout_seconds, 0
        ),
        retry_limit=r.number_in(table, "retry_limit", "filler.retry_limit", int, default.retry_limit, 1),
        flush=_flush_setting(r, table, default.flush),
    )


FLUSH_SETTINGS = ("deferred", "per-scan")


def _flush_setting(r: _Reader, table: dict[str, Any], default: str) -> str:
    value = r.get(table, "flush", "filler.flush", str, default)
    if value not in FLUSH_SETTINGS:
        r.problem("filler.flush", f"must be 'deferred' or 'per-scan', not {value!r}")
        return default
    return value


def _folder(r: _Reader, table: dict[str, Any], key: str, default: str | None) -> str | None:
    """A local folder of the filler's, relative to the config's folder unless absolute."""
    value = r.get(table, key, f"filler.{key}", str, default)
    return None if value is None else str(_local_path(value, r.base))
