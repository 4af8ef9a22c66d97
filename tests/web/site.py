"""A site for the status-page tests: a config with secrets in it, a catalog, a verification, a filler root.

Every record is made through the owning module's own API (Catalog, save_last, DaemonStatus,
OutputLayout, quicklook_png), so the page is tested against what obsflow really writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

from obsflow.atomic import write_atomic
from obsflow.config import Config, load_config
from obsflow.lock import take_lock
from obsflow.online.daemon import DAEMON_LOCK, DaemonStatus
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import FileStat
from obsflow.verify.compare import HashDiff
from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.last import save_last
from obsflow.verify.period import Period
from obsflow.web.quicklook import quicklook_path, quicklook_png
from obsflow.web.status import filler_layout
from tests.web.sdfits_files import ScanSpec, write_bank

# Values that must never reach the page.
SECRET_KEY_PATH = "/home/ops/.ssh/id_obsflow_SECRET_key"
SECRETS = (
    SECRET_KEY_PATH,
    "-oProxyJump=bastion-SECRET-hop",
    "OBSFLOW_SMTP_SECRET_PASSWORD",
    "/etc/obsflow/smtp-SECRET-password-file",
    "smtp-SECRET-user",
    "--bwlimit=4242",
)

PROJECT = "AGBT26A_042_01"

CONFIG = """\
window_days = 10
state_dir = "state"

[ssh]
options = ["-oIdentityFile={key}", "-oProxyJump=bastion-SECRET-hop"]

[transfer]
rsync_options = ["--bwlimit=4242"]

[instruments.sha]
source = "inst/sha"
layout = "{{yyyy}}/{{mmdd}}"
path = "74in/sha"

[instruments.shoc]
source = "inst/shoc"
layout = "{{yyyy}}/{{mmdd}}"

[archives.suth]
location = "archive/suth"

[archives.cape]
location = "backup@cape.invalid:/data/archive"

[[hops]]
from = "instruments"
to = "suth"

[[hops]]
from = "suth"
to = "cape"

[mail]
server = "smtp.invalid:587"
username = "smtp-SECRET-user"
password_env = "OBSFLOW_SMTP_SECRET_PASSWORD"
password_file = "/etc/obsflow/smtp-SECRET-password-file"
to = ["ops@invalid"]

[filler]
raw_root = "raw"
out_root = "sdfits"
"""


@dataclass(frozen=True)
class RunSpec:
    """One sync run to record."""

    hop: str
    instrument: str
    started: float
    status: str
    counts: dict[str, int]
    message: str = ""
    dry_run: bool = False


def write_config(root: Path) -> Config:
    path = root / "obsflow.toml"
    path.write_text(CONFIG.format(key=SECRET_KEY_PATH))
    return load_config(path)


def night_folder(day: date) -> str:
    return f"{day:%Y}/{day:%m%d}"


def today_noon() -> float:
    """Noon today (local): runs recorded at it fall on today's date whatever the hour the test runs."""
    return datetime.combine(date.today(), datetime.min.time()).timestamp() + 12 * 3600


def fill_catalog(config: Config) -> list[RunSpec]:
    """Files on three hosts (some outside the window, some missing downstream) and five runs; return the runs."""
    today = date.today()
    inside, older = night_folder(today - timedelta(days=1)), night_folder(today - timedelta(days=40))
    sha = {f"{inside}/SHA_{i}.fits": FileStat(1_000_000 + i, 1.7e9) for i in range(4)}
    sha[f"{older}/SHA_old.fits"] = FileStat(5_000, 1.6e9)  # outside the 10-night window
    shoc = {f"{inside}/SHOC_{i}.fits": FileStat(2_500_000, 1.7e9) for i in range(2)}
    noon = today_noon()
    runs = [
        RunSpec("instruments:suth", "sha", noon - 86400, "ok", {"copied": 1, "bytes": 1_000_000}),
        RunSpec("instruments:suth", "sha", noon, "incomplete",
                {"copied": 3, "bytes": 3_000_006, "present": 1, "in_flight": 1, "locked": 1}),
        RunSpec("instruments:suth", "sha", noon + 60, "ok", {"copied": 99, "bytes": 99}, dry_run=True),
        RunSpec("instruments:suth", "shoc", noon, "ok", {"copied": 2, "bytes": 5_000_000}),
        RunSpec("suth:cape", "sha", noon + 600, "failed", {},
                f"ssh -oIdentityFile={SECRET_KEY_PATH} cape.invalid: connection refused"),
    ]  # fmt: skip
    with Catalog(config.catalog_path) as catalog:
        catalog.observe("instruments", "sha", sha)
        catalog.observe("instruments", "shoc", shoc)
        catalog.observe("suth", "sha", {p: st for p, st in sha.items() if not p.endswith("_3.fits")})
        catalog.observe("suth", "shoc", shoc)
        catalog.observe("cape", "sha", {p: st for p, st in sha.items() if p.endswith("_0.fits")})
        for run in runs:
            run_id = catalog.start_run(run.hop, run.instrument, dry_run=run.dry_run, now=run.started)
            catalog.finish_run(run_id, run.status, run.counts, run.message)
    return runs


def save_verification(config: Config, checksum: bool = False, cape_unreachable: bool = False) -> Report:
    """A daily verification: three files missing; ``checksum``: contents compared too (``--checksum``), one
    file's differing on suth and cape's not hashable; ``cape_unreachable``: cape could not be listed, so its
    folder was not checked at all (an error, no findings, as ``verify`` makes it)."""
    today = date.today()
    missing = tuple(f"{night_folder(today - timedelta(days=1))}/SHA_{i}.fits" for i in (1, 2, 3))
    folders = (
        FolderResult("instruments:suth", "sha", "sha", "suth", "inst/sha", "archive/suth/74in/sha",
                     missing=missing[2:], matched=3),
        FolderResult("instruments:suth", "shoc", "shoc", "suth", "inst/shoc", "archive/suth/shoc", matched=2),
        FolderResult("suth:cape", "sha", "suth", "cape", "archive/suth/74in/sha", "backup@cape.invalid:/x",
                     missing=missing[:2], matched=1),
    )  # fmt: skip
    if checksum:
        sha, shoc, cape = (replace(folder, hash_checked=True) for folder in folders)
        differs = HashDiff(f"{night_folder(today - timedelta(days=2))}/SHOC_7.fits", "a" * 32, "b" * 32)
        folders = (sha, replace(shoc, hash_differs=(differs,), matched=1),
                   replace(cape, hash_error="cannot hash on cape: xxhsum: command not found"))  # fmt: skip
    if cape_unreachable:
        down = replace(folders[2], missing=(), matched=0, hash_error=None,
                       error=f"cannot list {folders[2].dest_location}: cannot reach host: timed out")  # fmt: skip
        folders = (*folders[:2], down)  # fmt: skip
    now = time.time()
    report = Report(Period(today - timedelta(days=30), today), now - 20, now - 5, 120.0, checksum, folders)
    save_last(report, config.state_path)
    return report


@dataclass(frozen=True)
class FillerSite:
    fills: list[dict[str, object]]
    bank_files: list[Path]


def write_filler(samples: Path, config: Config, running: bool = True) -> FillerSite:
    """Bank files with three scans, their quick looks, a daemon status with fills and a failure, fill logs."""
    layout = filler_layout(config)
    specs = [ScanSpec(n, f"2026_05_01_01:0{n}:00", 3, 10.0 * n) for n in (1, 2, 3)]
    banks = [write_bank(samples, layout.bank_fits(PROJECT, bank), specs, nchan=256) for bank in "AB"]
    now = time.time()
    status = DaemonStatus(pid=4242, host="gbt-filler", started=now - 3600, raw_root="raw",
                          out_root=str(layout.root), activity="idle", active_project=PROJECT, last_poll=now - 3)
    fills = []
    for i, spec in enumerate(specs):
        finished = now - 600 + 120 * i
        record = {"project": PROJECT, "scan": spec.scan, "timestamp": spec.timestamp, "banks": ["A", "B"],
                  "rows": 12, "seconds": 0.25 + 0.1 * i, "filled_at": finished + 1.5 + i,
                  "finished_seen_at": finished, "skipped": False, "note": ""}  # fmt: skip
        fills.insert(0, record)
        layout.append_fill_log(PROJECT, record)
        quicklook_png(banks, spec.scan, spec.timestamp, quicklook_path(layout.root, PROJECT, spec.scan))
    status.recent = fills
    status.projects[PROJECT] = {"last_scan": 3, "last_timestamp": specs[-1].timestamp,
                                "last_filled_at": fills[0]["filled_at"], "pending": 2}  # fmt: skip
    status.failures = [{"project": PROJECT, "scan": 4, "timestamp": "2026_05_01_01:04:00", "attempts": 5,
                        "last_error": f"bad raw file: VEGAS bank C truncated (raw/{PROJECT}/VEGAS/x.fits)",
                        "retry_at": now + 30, "given_up": True}]  # fmt: skip
    status.project_failures = [{"project": "AGBT26A_999_01", "pending": 7, "attempts": 3, "retry_at": now + 60,
                                "last_error": "cannot read which scans of AGBT26A_999_01 are filled: not a FITS file"}]
    layout.status_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.status_path, json.dumps(asdict(status), indent=1))
    if running:
        take_lock(layout.locks_dir, DAEMON_LOCK, timeout_s=0, purpose="online daemon (test)")
    return FillerSite(fills, banks)
