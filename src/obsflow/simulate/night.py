"""One simulated observing night, end to end: the demo of everything obsflow does.

    telescope simulator --raw scans--> online filler --SDFITS, index, flags-->  out/
    3 instruments --CCD frames, 30 nights--> sync hop 1 --> site archive --> hop 2 --> remote archive
    out/ (SDFITS products, honouring the filler's locks) ----^
    some files go missing --> verify names them --> status page shows it all

Nothing here is hard-wired that a real configuration would set: the night writes
a real ``obsflow.toml`` and drives the ordinary commands with it.  The hosts are
played by a loopback OpenSSH server when one can be started, else local folders.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from obsflow.config import ARCHIVE_MARKER
from obsflow.errors import UsageError

__all__ = ["NightResult", "run_night"]

log = logging.getLogger(__name__)

MARKER = ".obsflow-demo"
PROJECT = "AGBT26B_042_01"
INSTRUMENTS = ("sha", "shd", "spupnic")
ARCHIVE_PATHS = {"sha": "74in/sha", "shd": "40in/shd", "spupnic": "74in/spupnic"}
PRODUCTS_SETTLE_S = 1  # settle_seconds of the SDFITS products in the demo's config


@dataclass
class NightResult:
    """What the night produced, and where to look."""

    workdir: Path
    config: Path
    over_ssh: bool
    filled_scans: int = 0
    sync_exit: int = -1
    verify_exit: int = -1
    removed: list[str] = field(default_factory=list)
    report_html: Path | None = None
    report_text: Path | None = None


def fresh_workdir(workdir: Path) -> Path:
    """An empty work folder: a previous demo's is cleared, anything else is refused."""
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise UsageError("work folder exists and was not made by 'obsflow demo'; choose another", workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by obsflow demo; removed by the next demo run\n")
    return workdir


def _config_text(work: Path, ssh_config: Path | None, port: int) -> str:
    def where(host: str, path: Path) -> str:
        return f"{host}:{path}" if ssh_config else str(path)

    lines = [
        "# Written by `obsflow demo`: a real configuration, used by every step of the demo.",
        "window_days = 30",
        "settle_seconds = 5",
        'patterns = ["*.fits"]',
        f'locks = ["{work / "sdfits" / "locks"}"]',
        'state_dir = "state"',
        "",
        "[ssh]",
        f'options = ["-F", "{ssh_config}"]' if ssh_config else "options = []",
        "",
    ]
    for name in INSTRUMENTS:
        lines += [
            f"[instruments.{name}]",
            f'source = "{where(f"{name}.test", work / "instruments" / name)}"',
            'layout = "{yyyy}/{mmdd}"',
            f'path = "{ARCHIVE_PATHS[name]}"',
            "",
        ]
    lines += [
        "[instruments.gbt]         # the online filler's SDFITS products (step 1): folders not dated,",
        f'source = "{where("instruments.test", work / "sdfits")}"',
        'layout = "*"              # so the window picks files by modification time',
        'path = "gbt/sdfits"',
        'patterns = ["*.fits", "*.index"]',
        f"settle_seconds = {PRODUCTS_SETTLE_S}        # a real site: minutes (see docs/transfer.md)",
        "grows = true              # a grown file replaces our own older copy, kept in .obsflow-superseded/",
        "keep_superseded_days = 14 # ... for two weeks",
        "",
        "[archives.suth]           # the site archive: the host this job runs on",
        f'location = "{work / "archive" / "suth"}"',
        "require_marker = true     # written only while it holds .obsflow-archive (its disk is mounted)",
        "[archives.cape]           # the remote archive, "
        + ("over ssh" if ssh_config else "a local folder here (over ssh at a real site)"),
        f'location = "{where("cape.test", work / "archive" / "cape")}"',
        "require_marker = true",
        "",
        "[[hops]]",
        'from = "instruments"',
        'to = "suth"',
        "[[hops]]",
        'from = "suth"',
        'to = "cape"',
        "",
        "[mail]",
        'server = "localhost:25"',
        'sender = "obsflow@astro.suth"',
        'to = ["ops@example.org"]',
        'when = "always"',
        "",
        "[filler]",
        f'raw_root = "{work / "gbtdata"}"',
        f'out_root = "{work / "sdfits"}"',
        "",
        "[web]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "",
    ]
    return "\n".join(lines)


def _observe_and_fill(work: Path, say: Callable[[str], None], scans: int, speed: float) -> int:
    """The telescope writes scans in accelerated real time while the online daemon fills them."""
    from obsflow.online.daemon import fill_lag_s
    from obsflow.online.service import build_daemon
    from obsflow.simulate.telescope import TelescopeSimulator, TelescopeSpec

    raw_root, out_root = work / "gbtdata", work / "sdfits"
    raw_root.mkdir(parents=True, exist_ok=True)
    spec = TelescopeSpec(project=PROJECT, scans=scans, procedure="OnOff", banks=2, pols=2, channels=4096,
                         integrations=20, integration_s=1.0, tsys_k=20.0, tcal_k=1.5, line_peak_k=1.0,
                         start=datetime.now(UTC).replace(microsecond=0), seed=42)  # fmt: skip
    daemon = build_daemon(raw_root, out_root, poll_s=0.1)
    thread = threading.Thread(target=daemon.run, name="online-filler", daemon=True)
    thread.start()
    sim = TelescopeSimulator(spec, raw_root)
    for plan in sim.plans:
        sim.start_scan(plan)
        time.sleep(plan.duration_s / speed)
        sim.finish_scan(plan)
        say(f"  telescope: scan {plan.number} ({plan.procname} {plan.procscan}) finished")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and daemon.engine.pending(PROJECT):
        time.sleep(0.1)
    time.sleep(0.3)
    daemon.stop()
    thread.join(timeout=30)
    filled = len(daemon.engine.project(PROJECT).filled)
    lags = [lag for r in daemon.status.recent if (lag := fill_lag_s(r)) is not None]
    if lags:
        say(f"  online filler: {filled} scans filled, {max(lags):.2f} s at most after each scan ended")
    return filled


def _let_products_settle(out_root: Path) -> None:
    """Wait until the last fill is older than the products' settle time.

    Else the sync takes them for files still being written and the demo exits 1: with --local
    it starts well within the second (over ssh, the handshakes used to hide the race).
    """
    newest = max((p.stat().st_mtime for p in out_root.rglob("*") if p.is_file()), default=0.0)
    time.sleep(max(0.0, newest + PRODUCTS_SETTLE_S + 0.2 - time.time()))


def _make_files_go_missing(work: Path) -> list[str]:
    """Lose a few files downstream, as a disk or an operator would: verify must name them."""
    removed = []
    today = date.today()
    for archive, inst in (("cape", "sha"), ("cape", "spupnic"), ("suth", "shd")):
        folder = work / "archive" / archive / ARCHIVE_PATHS[inst] / f"{today:%Y}" / f"{today:%m%d}"
        victims = sorted(folder.glob("*.fits"))
        if victims:
            victims[0].unlink()
            removed.append(f"{archive}: {victims[0].relative_to(work / 'archive' / archive)}")
    return removed


def run_night(
    workdir: Path,
    say: Callable[[str], None],
    scans: int = 4,
    speed: float = 20.0,
    nights: int = 30,
    port: int = 8080,
    use_ssh: bool = True,
) -> NightResult:
    """Run the whole simulated night in ``workdir``; return where everything is."""
    from obsflow.cli import main as obsflow_main
    from obsflow.simulate.instrument import simulate_instruments

    work = fresh_workdir(workdir)
    ssh_config = None
    if use_ssh:
        try:
            from obsflow.simulate.sshd import start_sshd

            server = start_sshd(work / "ssh")
            ssh_config = server.ssh_config
            say(f"hosts: a loopback OpenSSH server on port {server.port} plays the instrument computers and cape")
        except (OSError, RuntimeError) as err:
            say(f"hosts: no loopback sshd ({err}); using local folders instead")
    else:
        say("hosts: local folders")
    config = work / "obsflow.toml"
    config.write_text(_config_text(work, ssh_config, port))
    for archive in ("suth", "cape"):  # an operator makes each archive's folder and marker once
        (work / "archive" / archive).mkdir(parents=True)
        (work / "archive" / archive / ARCHIVE_MARKER).write_text("obsflow archive: the sync writes here\n")
    result = NightResult(workdir=work, config=config, over_ssh=ssh_config is not None)
    try:
        say(f"1/5 telescope + online filler: {scans} OnOff scans of project {PROJECT}, {speed:g}x real time")
        result.filled_scans = _observe_and_fill(work, say, scans, speed)
        say(f"2/5 instruments: {', '.join(INSTRUMENTS)} write CCD frames over {nights} nights")
        simulate_instruments(work / "instruments", list(INSTRUMENTS), nights=nights, end_date=date.today(), frames=3)
        _let_products_settle(work / "sdfits")
        say("3/5 sync: the last 30 nights and the SDFITS products, instruments -> suth -> cape")
        result.sync_exit = obsflow_main(["sync", "--config", str(config)])
        result.removed = _make_files_go_missing(work)
        say(f"4/5 some files go missing: {'; '.join(result.removed)}")
        say("5/5 verify: is every file of this and last month on every hop?")
        result.report_html = work / "verify-report.html"
        result.verify_exit = obsflow_main(["verify", "--config", str(config), "--html", str(result.report_html)])
    finally:
        if ssh_config is not None:
            server.stop()
    return result
