"""Running obsflow as root *without* the capabilities that bypass file permissions.

The suite runs as root, for whom a folder of mode 000 is as readable as any other.  Dropping
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (from the bounding and inheritable sets, so the
command started gets neither) makes an unreadable folder really unreadable, as for the
archive's own account in production.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DROPPED = "-dac_override,-dac_read_search"
NOCAP = ["setpriv", f"--bounding-set={DROPPED}", f"--inh-caps={DROPPED}"]


def run_nocap(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` without the capabilities that bypass permissions."""
    return subprocess.run([*NOCAP, *argv], capture_output=True, text=True, timeout=180, check=False)


def obsflow_nocap(*args: str) -> subprocess.CompletedProcess[str]:
    """``obsflow <args>`` (this checkout's, through PYTHONPATH) without those capabilities."""
    return run_nocap(sys.executable, "-m", "obsflow", *args)


def assert_unreadable(folder: Path) -> None:
    """The test's premise: ``folder`` cannot be listed without the capabilities."""
    done = run_nocap("ls", str(folder))
    assert done.returncode != 0 and "Permission denied" in done.stderr, done
