"""obsflow sync vs plain ``rsync -a``, side by side over loopback SSH (one run, three cases).

Cases (the same trees for both commands, pulled from an "instrument host" over ssh into a
local archive, as the first SAAO hop does):

  big     4 x 256 MiB files in one dated folder          (copy into an empty archive)
  small   10 000 x 64 KiB files in 30 dated folders      (copy into an empty archive)
  noop    the small tree again, everything present       (nothing to copy)
  push    with --push: the small tree pushed from here into an archive over ssh, as the second
          SAAO hop (site -> remote archive) does (copy into an empty archive)

The commands alternate (which one goes first rotates every repeat), each case is repeated
``--repeats`` times (>= 5), and the medians are compared: obsflow's time / rsync's time.
Goals: <= 1.05 for copies, <= 1.0 for the no-op run.  Both use the same ssh client options
(so the same cipher) and log in as the same account; obsflow is timed end to end as the
``obsflow sync`` command.

A third command, ``rsync -a --trust-sender --files-from`` with the list of every file (what
obsflow hands rsync when everything is planned; --trust-sender: see transfer/rsync.py),
separates rsync's own price for a file list from obsflow's: handed a list, rsync 3.5's sender
opens each listed path component by component (O_NOFOLLOW, its guard against symlink races;
strace: ~17 more system calls per file than when it walks folders) and checks every listed
file even when nothing is to be copied.
obsflow needs the list (a file that appears after the listing may still be being written),
but runs no rsync at all when nothing is to be copied.

The account: run as root, both log in as ``obsflow-bench`` (created if missing, Debian's
default dotfiles), as an observatory's transfer account would be.  This machine's root
account runs ``pyenv init`` from its ``.bashrc`` in every ssh session (~0.09 s each, against
~0.01 s for a plain account), which no transfer account would; ``--ssh-user root`` measures
with it anyway.

    .venv/bin/python benchmarks/transfer.py [--root /dev/shm/obsflow-bench] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.sshd import SshServer, start_sshd  # noqa: E402

OBSFLOW = str(Path(sys.executable).parent / "obsflow")
# The same sync without the `obsflow` command's start-up (which imports every subcommand).
ENGINE = (
    "import sys; from obsflow.config import load_config; from obsflow.transfer.sync import SyncRequest, run_sync; "
    "sys.exit(run_sync(load_config(sys.argv[1]), SyncRequest(days=30)).exit_code)"
)
MiB = 1 << 20
BENCH_USER = "obsflow-bench"


def ssh_account(requested: str | None) -> str | None:
    """The account both tools log in as: ``requested``, or a plain one when run as root (created if missing)."""
    if requested or os.getuid() != 0:
        return requested
    if subprocess.run(["id", BENCH_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", BENCH_USER], check=True)
        subprocess.run(["usermod", "-p", "*", BENCH_USER], check=True)  # no password, but not locked: keys work
    return BENCH_USER


def make_tree(root: Path, files_per_folder: dict[str, int], size: int) -> int:
    """Files of random bytes with an old mtime (settled); return the total size."""
    total = 0
    old = time.time() - 86400
    for folder, count in files_per_folder.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / folder / f"SHA_{folder.replace('/', '')}.{i:04d}.fits"
            with open(path, "wb") as handle:
                remaining = size
                while remaining:
                    chunk = min(remaining, 64 * MiB)
                    handle.write(os.urandom(chunk))
                    remaining -= chunk
            os.utime(path, (old, old))
            total += size
    return total


def write_config(path: Path, sshd: SshServer, source: Path, archive: Path, state: Path) -> None:
    options = ", ".join(f'"{o}"' for o in sshd.ssh_options)
    path.write_text(
        f'state_dir = "{state}"\nsettle_seconds = 120\n[ssh]\noptions = [{options}]\n'
        f'[instruments.bench]\nsource = "instruments.test:{source}"\npath = "bench"\n'
        f'[archives.site]\nlocation = "{archive}"\n[[hops]]\nfrom = "instruments"\nto = "site"\n'
    )


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    return elapsed


def run_case(
    name: str, commands: dict[str, list[str]], reset: dict[str, Callable[[], None]], repeats: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {tool: [] for tool in commands}
    order = list(commands)
    for rep in range(repeats):
        for tool in order[rep % len(order) :] + order[: rep % len(order)]:  # rotate who goes first
            reset[tool]()
            times[tool].append(timed(commands[tool]))
        print(f"  {name} repeat {rep + 1}: " + ", ".join(f"{t} {times[t][-1]:.2f} s" for t in order), flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/dev/shm/obsflow-bench") if Path("/dev/shm").is_dir()
                        else Path("/tmp/obsflow-bench"))  # fmt: skip
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--ssh-user", default=None, help=f"account to log in as (default: {BENCH_USER} when run as root)")
    parser.add_argument("--push", action="store_true", help="also time the small tree pushed into a remote archive")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    root: Path = args.root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    user = ssh_account(args.ssh_user)
    sshd = start_sshd(root / "sshd", user=user)
    print(f"ssh logins as {user or 'the current user'}", flush=True)
    try:
        results = bench(root, sshd, args)
    finally:
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(results, args)


def bench(root: Path, sshd: SshServer, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    today = date.today()
    night = f"{today:%Y}/{today:%m%d}"
    nights = [f"{d:%Y}/{d:%m%d}" for d in (today - timedelta(days=k) for k in range(30))]
    per_night = {n: args.small_files // 30 + (1 if i < args.small_files % 30 else 0) for i, n in enumerate(nights)}
    ssh = " ".join(["ssh", *sshd.ssh_options])
    results = {}
    for case, layout, size in (("big", {night: 4}, args.big_mib * MiB), ("small", per_night, 64 * 1024)):
        src, dst = root / case / "src", root / case / "dst"
        total = make_tree(src, layout, size)
        print(f"{case}: {sum(layout.values())} files, {total / MiB:.0f} MiB", flush=True)
        cfg, state = root / case / "obsflow.toml", root / case / "state"
        write_config(cfg, sshd, src, dst, state)
        file_list = root / case / "files"
        file_list.write_text("".join(f"{p.relative_to(src)}\n" for p in sorted(src.rglob("*.fits"))))
        commands = {
            "obsflow": [OBSFLOW, "sync", "-c", str(cfg), "--days", "30", "--json"],
            "engine": [sys.executable, "-c", ENGINE, str(cfg)],
            "rsync": ["rsync", "-a", "-e", ssh, f"instruments.test:{src}/", f"{dst / 'bench'}/"],
            "listed": ["rsync", "-a", "--trust-sender", f"--files-from={file_list}", "-e", ssh, f"instruments.test:{src}/",
                       f"{dst / 'bench'}/"],
        }

        def clean(dst: Path = dst, state: Path = state) -> None:
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
            dst.mkdir(parents=True)

        results[case] = run_case(case, commands, dict.fromkeys(commands, clean), args.repeats)
        if case == "small":
            clean()
            timed(commands["obsflow"])  # fill the archive (and the catalog) once, then time no-ops
            results["noop"] = run_case("noop", commands, dict.fromkeys(commands, lambda: None), args.repeats)
        shutil.rmtree(src)
        shutil.rmtree(dst, ignore_errors=True)
    if args.push:
        results["push"] = push_case(root / "push", sshd, per_night, args.repeats)
    results["startup"] = {"obsflow --version": [timed([OBSFLOW, "--version"]) for _ in range(args.repeats)]}
    return results


def push_case(root: Path, sshd: SshServer, layout: dict[str, int], repeats: int) -> dict[str, list[float]]:
    """The small tree pushed from here into an (empty) archive the ssh account owns: the second hop's direction.

    "listed" reads its list on the receiving host, as obsflow's pushes of many files do (see rsync.py)."""
    src, dst, state, cfg = root / "src", root / "dst", root / "state", root / "obsflow.toml"
    total = make_tree(src, layout, 64 * 1024)
    print(f"push: {sum(layout.values())} files, {total / MiB:.0f} MiB", flush=True)
    options = ", ".join(f'"{o}"' for o in sshd.ssh_options)
    cfg.write_text(
        f'state_dir = "{state}"\nsettle_seconds = 120\n[ssh]\noptions = [{options}]\n'
        f'[instruments.bench]\nsource = "{src}"\npath = "bench"\n'
        f'[archives.cape]\nlocation = "cape.test:{dst}"\n[[hops]]\nfrom = "instruments"\nto = "cape"\n'
    )
    file_list = root / "files"
    file_list.write_text("".join(f"{p.relative_to(src)}\n" for p in sorted(src.rglob("*.fits"))))
    ssh = " ".join(["ssh", *sshd.ssh_options])
    commands = {
        "obsflow": [OBSFLOW, "sync", "-c", str(cfg), "--days", "30", "--json"],
        "engine": [sys.executable, "-c", ENGINE, str(cfg)],
        "rsync": ["rsync", "-a", "-e", ssh, f"{src}/", f"cape.test:{dst / 'bench'}/"],
        "listed": ["rsync", "-a", f"--files-from=:{file_list}", "-e", ssh, f"{src}/", f"cape.test:{dst / 'bench'}/"],
    }

    login = sshd.run("cape.test", "id -un").stdout.strip()  # the account that writes the archive

    def clean() -> None:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        dst.mkdir(parents=True)
        shutil.chown(dst, login)

    try:
        return run_case("push", commands, dict.fromkeys(commands, clean), repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    goals = {"big": 1.05, "small": 1.05, "noop": 1.0, "push": 1.05}
    print(f"\nmedians of {args.repeats} alternated runs (range in brackets); ratio = obsflow / rsync -a")
    print("  obsflow = the `obsflow sync` command; engine = the same run_sync() from a bare python process")
    print("  paired = median over repeats of (obsflow / rsync -a of the same repeat): steadier when the load drifts")
    print("  listed = rsync -a --files-from with every file's name; vs listed = obsflow / listed")
    print(f"{'case':6} {'obsflow s':>20} {'engine s':>20} {'rsync -a s':>20} {'listed s':>20} {'ratio':>6} {'paired':>6} "
          f"{'engine':>6} {'vs listed':>9} {'goal':>5}")
    fmt = lambda xs: f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"  # noqa: E731
    for case, goal in goals.items():
        if case not in results:
            continue  # push: only with --push
        ours, engine, theirs, listed = (results[case][tool] for tool in ("obsflow", "engine", "rsync", "listed"))
        ratio = statistics.median(ours) / statistics.median(theirs)
        paired = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
        engine_ratio = statistics.median(engine) / statistics.median(theirs)
        listed_ratio = statistics.median(ours) / statistics.median(listed)
        verdict = "ok" if ratio <= goal else ("engine ok" if engine_ratio <= goal else "MISSED")
        print(f"{case:6} {fmt(ours):>20} {fmt(engine):>20} {fmt(theirs):>20} {fmt(listed):>20} {ratio:6.2f} "
              f"{paired:6.2f} {engine_ratio:6.2f} {listed_ratio:9.2f} {goal:5.2f} {verdict}")
    startup = results["startup"]["obsflow --version"]
    print(f"(obsflow command start-up alone, `obsflow --version`: median {statistics.median(startup):.2f} s)")


if __name__ == "__main__":
    main()
