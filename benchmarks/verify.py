"""Benchmark: ``obsflow verify`` against ``rclone check`` on the same trees, side by side.

Builds N files (default 100,000) of 1 KiB for 3 instruments x 60 nights, copies them to a
site archive (suth) and a remote archive (cape), then damages a known set of files: deleted
and truncated on suth, deleted and altered (same size) on cape.  Each case times the two
tools alternately (the order flips every repeat), >= 5 repeats, and prints medians, ranges
and the ratio obsflow / rclone.  Every run of both tools must report exactly the expected
differences: the benchmark asserts it.

Cases:
  local        all three trees are local folders
  ssh          instruments and cape behind the loopback OpenSSH server (obsflow: one
               ``find`` per side over ssh; rclone: its sftp backend), suth local
  checksum     local trees, contents compared: ``obsflow verify --checksum --rehash``
               (every file hashed anew, as rclone does) vs ``rclone check`` (md5);
               also ``--checksum`` with hashes from a warm catalog

rclone checks a whole hop in one command because the instrument trees share the archive
layout (``<root>/74in/sha/YYYY/MMDD``); it runs ``--one-way`` (verify reports files on A
not on B) with its default 8 checkers, the two hops one after the other.  rclone's sftp
backend hashes by running ``md5sum`` once per file on the server, hours for 100,000 files,
so contents are compared on local trees only.

Usage:  .venv/bin/python benchmarks/verify.py [--files 100000] [--repeats 5] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.sshd import SshServer, start_sshd  # noqa: E402  (the loopback sshd of the tests)

OBSFLOW = str(Path(sys.executable).with_name("obsflow"))
RCLONE = shutil.which("rclone") or "/usr/bin/rclone"
INSTRUMENTS = {"sha": "74in/sha", "shd": "74in/shd", "spupnic": "1m/spupnic"}
FIRST_NIGHT = date(2026, 9, 1)
NIGHTS = 60
FILE_BYTES = 1024
DAMAGE_EACH = 5  # files per kind of damage

Diffs = set[tuple[str, str]]  # (hop, path under the archive root), e.g. ("suth:cape", "74in/sha/2026/0901/x.fits")


@dataclass
class Expected:
    size_only: Diffs
    contents: Diffs  # with hashes: size differences and same-size content differences


def build_trees(root: Path, files: int) -> Expected:
    """Write the instrument trees, mirror them to suth and cape, damage a known set."""
    per_night = max(1, files // (len(INSTRUMENTS) * NIGHTS))
    inst = root / "inst"
    rng = random.Random(20261123)
    all_paths = []
    for sub in INSTRUMENTS.values():
        for n in range(NIGHTS):
            day = FIRST_NIGHT + timedelta(days=n)
            folder = inst / sub / f"{day:%Y}" / f"{day:%m%d}"
            folder.mkdir(parents=True)
            prefix = sub.rsplit("/", 1)[1].upper()
            for number in range(per_night):
                name = f"{prefix}_{day:%Y%m%d}.{number:04d}.fits"
                (folder / name).write_bytes(rng.randbytes(FILE_BYTES))
                all_paths.append(f"{sub}/{day:%Y}/{day:%m%d}/{name}")
    for archive in ("suth", "cape"):
        subprocess.run(["cp", "-a", f"{inst}/.", str(root / archive)], check=True)

    chosen = rng.sample(all_paths, 4 * DAMAGE_EACH)
    gone_suth, cut_suth, gone_cape, bent_cape = (chosen[i * DAMAGE_EACH : (i + 1) * DAMAGE_EACH] for i in range(4))
    for path in gone_suth:
        (root / "suth" / path).unlink()
    for path in cut_suth:
        os.truncate(root / "suth" / path, FILE_BYTES // 2)
    for path in gone_cape:
        (root / "cape" / path).unlink()
    for path in bent_cape:
        target = root / "cape" / path
        data = bytearray(target.read_bytes())
        data[100] ^= 0xFF
        target.write_bytes(bytes(data))
    hop1, hop2 = "instruments:suth", "suth:cape"
    size_only = {(hop1, p) for p in gone_suth + cut_suth} | {(hop2, p) for p in cut_suth + gone_cape}
    return Expected(size_only, size_only | {(hop2, p) for p in bent_cape})


def write_config(root: Path, sshd: SshServer | None) -> Path:
    """An obsflow config; with ``sshd`` the instruments and cape are reached over ssh."""
    inst_host = "instruments.test:" if sshd else ""
    cape_host = "cape.test:" if sshd else ""
    lines = ["settle_seconds = 0", f'state_dir = "{root}/state"']
    if sshd:
        lines += ["[ssh]", "options = [" + ", ".join(f'"{o}"' for o in sshd.ssh_options) + "]"]
    for name, sub in INSTRUMENTS.items():
        lines += [f"[instruments.{name}]", f'source = "{inst_host}{root}/inst/{sub}"', f'path = "{sub}"']
    lines += [
        "[archives.suth]", f'location = "{root}/suth"',
        "[archives.cape]", f'location = "{cape_host}{root}/cape"',
        "[[hops]]", 'from = "instruments"', 'to = "suth"',
        "[[hops]]", 'from = "suth"', 'to = "cape"',
    ]  # fmt: skip
    path = root / ("obsflow-ssh.toml" if sshd else "obsflow.toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_obsflow(config: Path, *extra: str) -> tuple[float, Diffs]:
    """Time one ``obsflow verify --json``; return the differences it reports."""
    last = FIRST_NIGHT + timedelta(days=NIGHTS - 1)
    argv = [OBSFLOW, "verify", "-c", str(config), "--since", f"{FIRST_NIGHT}", "--until", f"{last}", "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"obsflow verify failed ({done.returncode}): {done.stderr}")
    found: Diffs = set()
    for folder in json.loads(done.stdout)["folders"]:
        sub = INSTRUMENTS[folder["instrument"]]
        names = folder["missing"] + [d["path"] for d in folder["size_differs"] + folder["hash_differs"]]
        found |= {(folder["hop"], f"{sub}/{path}") for path in names}
    return elapsed, found


def run_rclone(hops: list[tuple[str, str, str]], *extra: str) -> tuple[float, Diffs]:
    """Time ``rclone check --one-way`` over each hop in turn; return the differences reported."""
    found: Diffs = set()
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, source, dest in hops:
            report = Path(tmp) / "combined.txt"
            argv = [RCLONE, "check", source, dest, "--one-way", "--combined", str(report), *extra]
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            elapsed += time.perf_counter() - started
            if done.returncode not in (0, 1):
                raise SystemExit(f"rclone check failed ({done.returncode}): {done.stderr[-2000:]}")
            for line in report.read_text().splitlines():
                sigil, path = line[:1], line[2:]
                if sigil in "+*!":
                    found.add((label, path))
    return elapsed, found


def rclone_sftp(sshd: SshServer, path: Path) -> str:
    """An rclone connection string for the loopback sshd (same key as obsflow's ssh)."""
    key = sshd.ssh_config.parent / "client_ed25519"
    user = os.environ.get("USER") or "root"
    return f":sftp,host=127.0.0.1,port={sshd.port},user={user},key_file={key}:{path}"


@dataclass
class Timing:
    case: str
    obsflow: list[float]
    rclone: list[float]

    def line(self) -> str:
        ours, theirs = statistics.median(self.obsflow), statistics.median(self.rclone)
        return (
            f"{self.case:<34} obsflow {ours:6.2f} s [{min(self.obsflow):.2f}-{max(self.obsflow):.2f}]   "
            f"rclone {theirs:6.2f} s [{min(self.rclone):.2f}-{max(self.rclone):.2f}]   "
            f"ratio {ours / theirs:.2f}x"
        )


def compare(case: str, repeats: int, expected: Diffs, ours: Callable[[], tuple[float, Diffs]],
            theirs: Callable[[], tuple[float, Diffs]]) -> Timing:  # fmt: skip
    """Alternate the two commands, flipping the order each repeat; assert identical findings."""
    timing = Timing(case, [], [])
    for repeat in range(repeats):
        order = [("obsflow", ours), ("rclone", theirs)]
        for name, run in order if repeat % 2 == 0 else order[::-1]:
            elapsed, found = run()
            if found != expected:
                raise SystemExit(
                    f"{case}: {name} reported other differences than expected:\n"
                    f"  extra {sorted(found - expected)[:10]}\n  lacking {sorted(expected - found)[:10]}"
                )
            getattr(timing, name).append(elapsed)
    print(timing.line(), flush=True)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files per tree (default 100000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command per case (>= 5)")
    parser.add_argument("--root", type=Path, help="where to build the trees (default: a temp folder)")
    parser.add_argument("--cases", default="local,ssh,checksum", help="comma-separated: local, ssh, checksum")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    root = Path(tempfile.mkdtemp(prefix="obsflow-bench-verify-", dir=args.root))
    sshd = None
    try:
        started = time.perf_counter()
        expected = build_trees(root, args.files)
        count = sum(1 for _ in (root / "inst").rglob("*.fits"))
        print(f"{count} files per tree x 3 trees (instruments, suth, cape), 2 hops, under {root} "
              f"(built in {time.perf_counter() - started:.0f} s)")  # fmt: skip
        print(f"known differences: {len(expected.size_only)} by size, {len(expected.contents)} with contents")
        print(f"rclone: {subprocess.run([RCLONE, 'version'], capture_output=True, text=True).stdout.splitlines()[0]}")
        print(f"{args.repeats} alternating repeats per case, medians [min-max]\n", flush=True)
        local = write_config(root, None)
        local_hops = [
            ("instruments:suth", f"{root}/inst", f"{root}/suth"),
            ("suth:cape", f"{root}/suth", f"{root}/cape"),
        ]
        timings = []
        if "local" in cases:
            timings.append(compare(
                "size, local trees", args.repeats, expected.size_only,
                lambda: run_obsflow(local), lambda: run_rclone(local_hops, "--size-only"),
            ))  # fmt: skip
        if "ssh" in cases:
            sshd = start_sshd(root / "sshd")
            over_ssh = write_config(root, sshd)
            ssh_hops = [
                ("instruments:suth", rclone_sftp(sshd, root / "inst"), f"{root}/suth"),
                ("suth:cape", f"{root}/suth", rclone_sftp(sshd, root / "cape")),
            ]
            timings.append(compare(
                "size, instruments+cape over ssh", args.repeats, expected.size_only,
                lambda: run_obsflow(over_ssh), lambda: run_rclone(ssh_hops, "--size-only"),
            ))  # fmt: skip
        if "checksum" in cases:
            started = time.perf_counter()
            elapsed, found = run_obsflow(local, "--checksum")
            assert found == expected.contents, sorted(found ^ expected.contents)[:10]
            print(f"(obsflow --checksum, first run filling an empty catalog: {elapsed:.2f} s)")
            timings.append(compare(
                "contents, every file hashed", args.repeats, expected.contents,
                lambda: run_obsflow(local, "--checksum", "--rehash"), lambda: run_rclone(local_hops),
            ))  # fmt: skip
            timings.append(compare(
                "contents, obsflow warm catalog", args.repeats, expected.contents,
                lambda: run_obsflow(local, "--checksum"), lambda: run_rclone(local_hops),
            ))  # fmt: skip
        print("\nall runs of both tools reported exactly the known differences")
    finally:
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
