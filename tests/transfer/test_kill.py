"""SIGKILL at random moments never leaves a partial file under its final name; the next run completes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

from obsflow.transfer.catalog import Catalog
from obsflow.transfer.sync import SyncRequest, run_sync
from tests.transfer.conftest import INSTRUMENTS, TELESCOPE, make_site, ssh_config

OBSFLOW = Path(sys.executable).parent / "obsflow"
TRIALS = 20


def _final_files(archive: Path) -> dict[str, Path]:
    """Every file under a final (non-hidden) name below ``archive``."""
    found = {}
    for path in archive.rglob("*"):
        rel = path.relative_to(archive)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            found[str(rel)] = path
    return found


@pytest.mark.slow
def test_sigkill_at_random_moments_never_exposes_a_partial_file(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=3, frames=2, rsync_options='["--bwlimit=6000"]')
    night = site.inst / "sha" / f"{site.today:%Y}" / f"{site.today:%m%d}"
    rng = random.Random(20260907)
    old = time.time() - 3600
    for i in range(3):  # a few big frames, so kills land mid-file
        big = night / f"SHA_{site.today:%Y%m%d}.{100 + i:04d}.fits"
        big.write_bytes(rng.randbytes(6 << 20))
        os.utime(big, (old, old))
    sources = {}
    for inst in INSTRUMENTS:
        base = site.inst / inst
        sources |= {f"{TELESCOPE[inst]}/{inst}/{p.relative_to(base)}": p.read_bytes() for p in base.rglob("*.fits")}

    command = [str(OBSFLOW), "sync", "-c", str(site.config_path)]
    for _ in range(TRIALS):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, 3.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # obsflow, rsync and ssh of this run
        proc.wait()
        for archive in (site.suth, site.cape):
            for rel, path in _final_files(archive).items():
                assert path.read_bytes() == sources[rel], f"partial or wrong file under its final name: {path}"

    report = run_sync(site.config, SyncRequest(today=site.today))
    assert report.exit_code == 0, [o.to_json() for o in report.outcomes if o.status != "ok"]
    for archive in (site.suth, site.cape):
        assert {rel: p.read_bytes() for rel, p in _final_files(archive).items()} == sources
        leftovers = [p for p in archive.rglob("*") if p.is_file() and p.name.startswith(".")]
        assert leftovers == [] or all(".rsync-partial" in str(p) for p in leftovers)
    with Catalog(site.config.catalog_path) as catalog:
        for rel, content in sources.items():
            telescope, inst, path = rel.split("/", 2)
            for host in ("instruments", "suth", "cape"):
                record = catalog.get(host, inst, path)
                assert record is not None and record.xxh128 == xxhash.xxh128(content).hexdigest(), (host, rel)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_an_interrupted_big_file_resumes_instead_of_restarting(tmp_path: Path, sshd, sig: signal.Signals) -> None:
    """Over ssh, a big file cut off midway is sent on from its hidden partial, not from byte 0."""
    site = make_site(tmp_path, sshd, nights=1, frames=1, rsync_options='["--bwlimit=5000"]')  # ~5 MB/s
    rel = f"{site.today:%Y}/{site.today:%m%d}/SHA_{site.today:%Y%m%d}.0100.fits"
    big = site.source_file("sha", rel)
    big.write_bytes(random.Random(7).randbytes(24 << 20))
    old = time.time() - 3600
    os.utime(big, (old, old))
    dest = site.archive_file(site.suth, "sha", rel)
    command = [str(OBSFLOW), "sync", "-c", str(site.config_path), "-i", "sha", "--hop", "instruments:suth", "--json"]

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while _received(dest) < 8 << 20:  # a third of the file has arrived (in rsync's hidden temp file)
        assert proc.poll() is None and time.monotonic() < deadline, "the copy ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait()
    assert not dest.exists()  # nothing under the final name
    cut_at = _received(dest)
    assert 8 << 20 <= cut_at < 24 << 20

    done = subprocess.run(command, capture_output=True, text=True, check=False)
    outcome = next(o for o in json.loads(done.stdout)["hops"] if rel in o["copied_files"])
    assert dest.read_bytes() == big.read_bytes()
    assert outcome["bytes"] >= 24 << 20 and outcome["sent_bytes"] < (24 << 20) - cut_at + (2 << 20), outcome
    assert not list(dest.parent.glob(".*")) or all(not p.is_file() for p in dest.parent.glob(".rsync-partial/*"))


def _received(dest: Path) -> int:
    """Bytes of ``dest`` held in rsync's temp file (``.name.XXXXXX``) or its partial folder."""
    hidden = [*dest.parent.glob(f".{dest.name}.*"), dest.parent / ".rsync-partial" / dest.name]
    return max((p.stat().st_size for p in hidden if p.is_file()), default=0)


@pytest.mark.slow
def test_a_connection_lost_mid_copy_counts_only_the_files_that_reached_the_archive(tmp_path: Path, sshd) -> None:
    """rsync pushing to a remote archive reports each file once it has sent it, before the far
    end has checked it and renamed it into place; the far end is killed mid-copy."""
    source, cape = tmp_path / "sha", tmp_path / "cape"
    night = source / "2026" / "1201"
    night.mkdir(parents=True)
    rng = random.Random(5)
    old = time.time() - 3600
    frames = {}
    for i in range(300):
        path = night / f"SHA_20261201.{i:04d}.fits"
        path.write_bytes(rng.randbytes(64 << 10))
        os.utime(path, (old, old))
        frames[f"2026/1201/{path.name}"] = path.read_bytes()
    cape.mkdir(exist_ok=True)
    config = ssh_config(
        tmp_path,
        sshd,
        '[transfer]\nrsync_options = ["--bwlimit=2000"]\n'  # ~2 MB/s: 20 MB take ~10 s
        f'[instruments.sha]\nsource = "{source}"\npath = "sha"\n'
        f'[archives.cape]\nlocation = "cape.test:{cape}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n',
    )
    command = [str(OBSFLOW), "sync", "-c", str(config), "-d", "2026-12-01", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(_final_files(cape)) < 20:
        assert proc.poll() is None and time.monotonic() < deadline, "the copy ended before it could be cut"
        time.sleep(0.05)
    subprocess.run(["pkill", "-f", f"rsync --server .* {cape}/sha"], check=True)  # the far end dies
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 2
    (hop,) = json.loads(out)["hops"]
    landed = {rel: p.read_bytes() for rel, p in _final_files(cape / "sha").items()}
    assert 20 <= len(landed) < len(frames) and all(frames[rel] == data for rel, data in landed.items())
    assert sorted(hop["copied_files"]) == sorted(landed)  # not the files sent but never renamed into place
    assert hop["failure"] and "\n" not in hop["failure"]
    with Catalog(tmp_path / "state" / "catalog.sqlite") as catalog:
        assert catalog.copied_here("cape", "sha", list(frames)) == set(landed)

    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
    assert sorted(json.loads(done.stdout)["hops"][0]["copied_files"]) == sorted(set(frames) - set(landed))
    assert {rel: p.read_bytes() for rel, p in _final_files(cape / "sha").items()} == frames


@pytest.mark.slow
def test_a_run_killed_on_its_own_keeps_the_run_lock_while_its_rsync_still_copies(tmp_path: Path) -> None:
    """kill (or cron's timeout, or the OOM killer) may stop obsflow and not its rsync: a second run must
    not start copying beside that rsync."""
    night = tmp_path / "sha" / "2026" / "1201"
    night.mkdir(parents=True)
    frame = night / "SHA_20261201.0001.fits"
    frame.write_bytes(random.Random(3).randbytes(8 << 20))
    old = time.time() - 3600
    os.utime(frame, (old, old))
    (tmp_path / "suth").mkdir()
    config = tmp_path / "obsflow.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[transfer]\nrsync_options = ["--bwlimit=2000"]\n'  # ~4 s
        f'[instruments.sha]\nsource = "{tmp_path / "sha"}"\npath = "sha"\n'
        f'[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    command = [str(OBSFLOW), "sync", "-c", str(config), "-d", "2026-12-01"]
    dest = tmp_path / "suth" / "sha" / "2026" / "1201" / frame.name
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while _received(dest) < 1 << 20:
        assert first.poll() is None and time.monotonic() < deadline, "the copy ended before it could be cut"
        time.sleep(0.02)
    first.kill()  # obsflow alone: its rsync goes on
    first.wait()
    second = subprocess.run(command, capture_output=True, text=True, check=False)
    assert second.returncode == 2 and "another sync is running" in second.stderr, second.stderr
    while subprocess.run(["pgrep", "-f", f"rsync .*{tmp_path / 'suth'}"], capture_output=True, check=False).stdout:
        assert time.monotonic() < deadline + 30, "the orphaned rsync never ended"
        time.sleep(0.1)
    with Catalog(tmp_path / "state" / "catalog.sqlite", read_only=True) as catalog:
        assert [run.status for run in catalog.runs()] == ["running"]  # the killed run never closed its row
    third = subprocess.run(command, capture_output=True, text=True, check=False)
    assert third.returncode == 0, third.stdout + third.stderr
    assert dest.read_bytes() == frame.read_bytes()
    with Catalog(tmp_path / "state" / "catalog.sqlite", read_only=True) as catalog:
        assert [run.status for run in catalog.runs()] == ["ok", "interrupted"]  # newest first


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_an_interrupted_big_staged_file_resumes_instead_of_restarting(tmp_path: Path, sshd, sig: signal.Signals) -> None:
    """A file modified within the hour goes through the staging folder; cut off there, it resumes too
    (found by staging review: the next run's clear_staging removed a SIGKILLed rsync's temp)."""
    site = make_site(tmp_path, sshd, nights=1, frames=1, rsync_options='["--bwlimit=5000"]')  # ~5 MB/s
    rel = f"{site.today:%Y}/{site.today:%m%d}/SHA_{site.today:%Y%m%d}.0100.fits"
    big = site.source_file("sha", rel)
    big.write_bytes(random.Random(7).randbytes(24 << 20))
    recent = time.time() - 600  # settled (settle_seconds = 120), but within the hour: staged
    os.utime(big, (recent, recent))
    dest = site.archive_file(site.suth, "sha", rel)
    staged = site.suth / TELESCOPE["sha"] / "sha" / ".obsflow-staging" / rel
    command = [str(OBSFLOW), "sync", "-c", str(site.config_path), "-i", "sha", "--hop", "instruments:suth", "--json"]

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while _received(staged) < 8 << 20:
        assert proc.poll() is None and time.monotonic() < deadline, "the copy ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait()
    while subprocess.run(["pgrep", "-f", f"rsync .*{site.suth}"], capture_output=True, check=False).stdout:
        assert time.monotonic() < deadline, "rsync never ended"  # SIGTERM: rsync saves its partial first
        time.sleep(0.05)
    assert not dest.exists() and not staged.exists()
    cut_at = _received(staged)
    assert 8 << 20 <= cut_at < 24 << 20

    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = next(o for o in json.loads(done.stdout)["hops"] if rel in o["copied_files"])
    assert dest.read_bytes() == big.read_bytes()
    assert outcome["bytes"] >= 24 << 20 and outcome["sent_bytes"] < (24 << 20) - cut_at + (2 << 20), outcome
