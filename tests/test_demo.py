"""The README's first command: a whole simulated night, in under 2 minutes, from a real config."""

import subprocess
import sys
import time
from pathlib import Path

from obsflow.config import load_config


def test_demo_runs_a_whole_night(tmp_path):
    work = tmp_path / "night"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "obsflow", "demo", "--workdir", str(work), "--no-serve"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 120
    out = result.stdout
    assert "loopback OpenSSH server" in out
    # The filler filled every scan, with index and flag files beside the FITS files.
    product = work / "sdfits" / "AGBT26B_042_01" / "AGBT26B_042_01.raw.vegas"
    names = sorted(p.name for p in product.iterdir())
    assert "AGBT26B_042_01.raw.vegas.A.fits" in names and "AGBT26B_042_01.raw.vegas.A.index" in names
    assert (product / "AGBT26B_042_01.raw.vegas.A.flag").is_symlink()
    # Both archives hold the 30 nights but for the files the demo removed, which verify names.
    removed = [line.split("go missing: ", 1)[1] for line in out.splitlines() if "go missing: " in line][0]
    removed_paths = [item.split(": ", 1)[1] for item in removed.split("; ")]
    assert len(removed_paths) == 3
    for path in removed_paths:
        assert path.split("/", 2)[2] in out  # named in the verification report
    config = load_config(work / "obsflow.toml")
    assert config.window_days == 30 and [h.label for h in config.hops] == ["instruments:suth", "suth:cape"]
    html = (work / "verify-report.html").read_text()
    assert all(Path(p).name in html for p in removed_paths)
    assert config.catalog_path.exists()
    assert "status page       http://127.0.0.1:" in out
