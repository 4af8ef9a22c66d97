"""SDFITS append cost: does the 200th scan cost what the 1st did, and how does it compare with ``cp``?

One scan = 64 rows x 32 768 channels (8.4 MB of rows), built from the real filler file's
rows (``AGBT22A_325_15``) with wide random spectra.  Each run creates a fresh file with
one scan, then appends 200 more with :func:`obsflow.sdfits.writer.append_rows` (read the
state, encode, write rows + padding, fdatasync, rewrite NAXIS2, fdatasync), timing each append;
it also times :func:`scans_in_file` (the duplicate check the fill does first), which reads
two fields of every row and so grows with the file.  The machine may be shared, so each
append is paired with a control: the same scan appended to a one-scan file (then rolled
back) right before or after it; growing-file / control at the end is the load-corrected ratio.

Then ``cp`` of the same bytes (one scan's encoded rows) is timed against one more append,
alternating which goes first, both with and without a following fsync (``sync FILE``).

Goals: append #200 / append #1 <= 1.2;  cp time / append time >= 0.5 (same durability).

    .venv/bin/python benchmarks/append_profile.py [--root /tmp/obsflow-append] [--repeats 5] [--appends 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from obsflow.sdfits import writer
from obsflow.sdfits.columns import COLUMN_NAMES

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared/data/sdfits_samples/testdata/AGBT22A_325_15/AGBT22A_325_15.raw.vegas.A.fits"
ROWS, NCHAN = 64, 32768
KEYWORDS = {"PROJID": "AGBT22A_325_15", "BACKEND": "VEGAS", "TELESCOP": "NRAO_GBT",
            "SITELONG": -79.83983, "SITELAT": 38.43312, "SITEELEV": 824.551}  # fmt: skip


def scan_rows(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """64 rows of the real file's metadata (cycled) with 32 768-channel random spectra."""
    with fits.open(REAL) as hdus:
        data = hdus[1].data
        pick = np.arange(ROWS) % len(data)
        rows = {}
        for name in COLUMN_NAMES:
            column = np.array(data[name])[pick]
            rows[name] = np.char.decode(column, "ascii") if column.dtype.kind == "S" else column
    rows["DATA"] = rng.normal(1e6, 1e3, size=(ROWS, NCHAN)).astype(np.float32)
    rows["TDIM7"] = np.full(ROWS, f"({NCHAN},1,1,1)")
    return rows


def with_scan(rows: dict[str, np.ndarray], scan: int) -> dict[str, np.ndarray]:
    out = dict(rows)
    out["SCAN"] = np.full(ROWS, scan, dtype=np.int32)
    return out


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def one_run(root: Path, rows: dict[str, np.ndarray], appends: int) -> tuple[list[float], list[float], float, float]:
    """(seconds per append to the growing file, seconds per control append, scans_in_file after #1 and #last).

    The control: right before or after each append (alternating), the same scan is appended
    to a one-scan file and rolled back, so both see the same machine load at the same moment.
    """
    path, control = root / "bench.raw.vegas.A.fits", root / "control.raw.vegas.A.fits"
    for each in (path, control):
        each.unlink(missing_ok=True)
        writer.create_file(each, with_scan(rows, 0), KEYWORDS)
    times, controls = [], []

    def grow(i: int) -> None:
        times.append(timed(lambda: writer.append_rows(path, with_scan(rows, i), KEYWORDS)))

    def control_append(i: int) -> None:
        start = time.perf_counter()
        plan = writer.plan_append(control, with_scan(rows, i), KEYWORDS)  # what append_rows does, kept to undo it
        writer.apply_append(plan)
        controls.append(time.perf_counter() - start)
        writer.rollback(control, plan.old_size, plan.undo)

    for i in range(1, appends + 1):
        for step in ((grow, control_append) if i % 2 else (control_append, grow)):
            step(i)
        if i == 1:
            scans_first = timed(lambda: writer.scans_in_file(path))
    scans_last = timed(lambda: writer.scans_in_file(path))
    assert writer.read_state(path).nrows == ROWS * (appends + 1)
    path.unlink()
    control.unlink()
    return times, controls, scans_first, scans_last


def cp_vs_append(root: Path, rows: dict[str, np.ndarray], repeats: int) -> dict[str, list[float]]:
    """Alternate cp (and cp + fsync) of one scan's bytes with one append of the same scan."""
    source = root / "scan.bin"
    source.write_bytes(writer.encode_rows(rows).tobytes())
    path = root / "cp.raw.vegas.A.fits"
    path.unlink(missing_ok=True)
    writer.create_file(path, with_scan(rows, 0), KEYWORDS)
    results: dict[str, list[float]] = {"append": [], "cp": [], "cp+sync": []}
    for r in range(max(10, 4 * repeats)):
        copy = root / f"copy{r}.bin"

        def do_cp(copy: Path = copy) -> None:
            subprocess.run(["cp", str(source), str(copy)], check=True)

        def do_cp_sync(copy: Path = copy) -> None:
            subprocess.run(["cp", str(source), str(copy)], check=True)
            subprocess.run(["sync", str(copy)], check=True)

        def do_append(r: int = r) -> None:
            writer.append_rows(path, with_scan(rows, r + 1), KEYWORDS)

        order = [("cp", do_cp), ("cp+sync", do_cp_sync), ("append", do_append)]
        if r % 2:
            order.reverse()
        for name, action in order:
            results[name].append(timed(action))
            copy.unlink(missing_ok=True)
    path.unlink()
    source.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/obsflow-append"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the control's rollbacks log a warning each
    args.root.mkdir(parents=True, exist_ok=True)
    rows = scan_rows(np.random.default_rng(1))
    scan_mb = writer.encode_rows(rows).nbytes / 1e6
    print(f"scan: {ROWS} rows x {NCHAN} channels = {scan_mb:.1f} MB; {args.appends} appends x {args.repeats} runs")
    med = statistics.median
    try:
        firsts, lasts, early, late, paired, scans_first, scans_last = [], [], [], [], [], [], []
        for run in range(args.repeats):
            times, controls, s_first, s_last = one_run(args.root, rows, args.appends)
            firsts.append(times[0])
            lasts.append(times[-1])
            early.append(med(times[:10]))
            late.append(med(times[-10:]))
            paired.append(med(times[-10:]) / med(controls[-10:]))
            scans_first.append(s_first)
            scans_last.append(s_last)
            print(f"run {run + 1}: append #1 {times[0] * 1e3:.1f} ms, #{args.appends} {times[-1] * 1e3:.1f} ms; "
                  f"median #1-10 {early[-1] * 1e3:.1f} ms, #{args.appends - 9}-{args.appends} {late[-1] * 1e3:.1f} ms "
                  f"(control {med(controls[-10:]) * 1e3:.1f} ms); all {med(times) * 1e3:.1f} ms")  # fmt: skip
        print(f"append #{args.appends} / #1 (medians over runs):                 {med(lasts) / med(firsts):.3f}"
              "   (goal <= 1.2)")  # fmt: skip
        print(f"appends #{args.appends - 9}-{args.appends} / #1-10 (median of per-run medians): "
              f"{med(late) / med(early):.3f}")  # fmt: skip
        print(f"appends #{args.appends - 9}-{args.appends} / same moment to a 1-scan file:      {med(paired):.3f}"
              "   (load-corrected)")  # fmt: skip
        print(f"scans_in_file after 1 append {med(scans_first) * 1e3:.2f} ms, after {args.appends}: "
              f"{med(scans_last) * 1e3:.2f} ms (reads 2 fields per row)")  # fmt: skip
        cmp = cp_vs_append(args.root, rows, args.repeats)
        append_s, cp_s, cp_sync_s = med(cmp["append"]), med(cmp["cp"]), med(cmp["cp+sync"])
        print(f"one scan: append {append_s * 1e3:.1f} ms ({scan_mb / append_s:.0f} MB/s), "
              f"cp {cp_s * 1e3:.1f} ms ({scan_mb / cp_s:.0f} MB/s), cp+sync {cp_sync_s * 1e3:.1f} ms "
              f"({scan_mb / cp_sync_s:.0f} MB/s)")  # fmt: skip
        print(f"speed vs cp+sync (cp time / append time): {cp_sync_s / append_s:.2f}   (goal >= 0.5)")
        print(f"speed vs cp without fsync:                {cp_s / append_s:.2f}")
    finally:
        shutil.rmtree(args.root, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
