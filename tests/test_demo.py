"""The README's first command: a whole simulated night, in under 2 minutes, from a real config;
then its status page in a real headless Chromium, checked against the catalog and the files on disk."""

from __future__ import annotations

import base64
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from obsflow.config import load_config
from obsflow.online.layout import OutputLayout
from obsflow.sdfits import writer
from obsflow.transfer.catalog import Catalog
from obsflow.web.pages import human_bytes
from obsflow.web.server import make_server
from tests.web.test_browser import browser  # noqa: F401  (the headless Chromium fixture)

PROJECT = "AGBT26B_042_01"


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[Path, str, float]:
    work = tmp_path_factory.mktemp("demo") / "night"
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "obsflow", "demo", "--workdir", str(work), "--no-serve"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result.stdout, time.monotonic() - start


def _removed(out: str) -> list[str]:
    removed = [line.split("go missing: ", 1)[1] for line in out.splitlines() if "go missing: " in line][0]
    return [item.split(": ", 1)[1] for item in removed.split("; ")]


def test_demo_runs_a_whole_night(night):
    work, out, elapsed = night
    assert elapsed < 120
    assert "loopback OpenSSH server" in out
    # The filler filled every scan, with index and flag files beside the FITS files.
    product = OutputLayout(work / "sdfits").product_dir(PROJECT)
    names = sorted(p.name for p in product.iterdir())
    assert f"{PROJECT}.raw.vegas.A.fits" in names and f"{PROJECT}.raw.vegas.A.index" in names
    assert (product / f"{PROJECT}.raw.vegas.A.flag").is_symlink()
    # The products went on to both archives, byte for byte (FITS and index files, no flags or locks).
    products = {p.relative_to(work / "sdfits"): p.read_bytes() for p in sorted((work / "sdfits").rglob("*"))
                if p.suffix in (".fits", ".index") and p.is_file() and not p.is_symlink()}  # fmt: skip
    assert len(products) >= 3
    for archive in ("suth", "cape"):
        copies = work / "archive" / archive / "gbt" / "sdfits"
        assert {p.relative_to(copies): p.read_bytes() for p in sorted(copies.rglob("*")) if p.is_file()} == products
    # Both archives hold the 30 nights but for the files the demo removed, which verify names.
    removed = _removed(out)
    assert len(removed) == 3
    for path in removed:
        assert path.split("/", 2)[2] in out
    config = load_config(work / "obsflow.toml")
    assert config.window_days == 30 and [h.label for h in config.hops] == ["instruments:suth", "suth:cape"]
    html = (work / "verify-report.html").read_text()
    assert all(Path(p).name in html for p in removed)
    # --no-serve: no URL that is dead by the time anyone opens it, but the command that serves it
    me = f"{sys.executable} -m obsflow"  # as the demo was run: `obsflow` may be on no PATH (review)
    assert f"status page       {me} serve -c {work / 'obsflow.toml'}" in out and "http://127.0.0.1:" not in out


def test_status_page_of_the_night_in_chromium(night, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    work, _, _ = night
    config = load_config(work / "obsflow.toml")
    server = make_server(config, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(server.url)
        text = browser.find_element(By.TAG_NAME, "body").text
    finally:
        server.shutdown()
        server.server_close()
    # Per instrument: the files the catalog holds for each host, as the page shows them.
    with Catalog(config.catalog_path) as catalog:
        for inst in config.instruments:
            for host in ("instruments", "suth", "cape"):
                records = list(catalog.files(host, inst))
                shown = f"{len(records)} files / {human_bytes(sum(r.size for r in records))}"
                assert shown in text, (inst, host, shown)
            runs = catalog.runs(instrument=inst)
            expected = 90 if inst != "gbt" else len(list(catalog.files("instruments", "gbt")))  # frames; products
            assert {r.copied for r in runs} == {expected} and expected >= 3
    # The verification: the missing files, by name.
    assert "FAILED: 3 missing" in text
    missing = _removed_from_disk(work)
    assert len(missing) == 3
    for path in missing:
        assert path.split("/", 2)[2] in text
    # The filler: its last scan is the last scan in the FITS files on disk.
    layout = OutputLayout(work / "sdfits")
    on_disk = max(s for s, _ in writer.scans_in_file(layout.bank_fits(PROJECT, "A")))
    assert f"last active project {PROJECT}" in text and f" {on_disk} " in text  # the daemon stopped with the night
    assert f"{PROJECT} (active)" not in text
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    png = tmp_path / "night-status.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 30_000


def _removed_from_disk(work: Path) -> list[str]:
    """Files the instruments have that an archive lacks: what the demo removed, found from the disks."""
    config = load_config(work / "obsflow.toml")
    missing = []
    for archive in ("suth", "cape"):
        for inst in config.instruments.values():
            source = Path(inst.source.path)
            dest = Path(config.archives[archive].location.path) / inst.path
            for path in source.rglob("*.fits"):
                rel = path.relative_to(source)
                upstream_has_it = archive == "suth" or (work / "archive" / "suth" / inst.path / rel).exists()
                if upstream_has_it and not (dest / rel).exists():
                    missing.append(f"{inst.path}/{rel}")
    return missing


def test_demo_with_local_folders_carries_every_product_and_exits_0(tmp_path) -> None:
    # Without ssh the sync started within the products' settle time of the last fill: they were
    # "still being written", never copied, and the demo exited 1.
    result = subprocess.run([sys.executable, "-m", "obsflow", "demo", "--local", "--workdir", str(tmp_path / "night"),
                             "--no-serve"], check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "instruments:suth gbt: copied 5" in result.stdout and "suth:cape gbt: copied 5" in result.stdout


def test_the_demo_says_when_its_commands_cannot_be_repeated_by_hand(night) -> None:
    # "again by hand obsflow sync -c ..." failed with 'cannot reach host' once the demo's sshd had
    # stopped, and nothing said why.
    work, out, _ = night
    (again,) = [line.split("again by hand", 1)[1] for line in out.splitlines() if "again by hand" in line]
    sync = shlex.split(again.split(";")[0])  # the command exactly as printed
    done = subprocess.run([*sync, "-n"], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "cannot reach host" in done.stdout
    assert f"only while a demo runs: `{sys.executable} -m obsflow demo --local`" in out


def test_a_status_page_port_in_use_is_refused_before_the_night(tmp_path) -> None:
    # Found by review: the night ran whole (half a minute over ssh), then the demo failed on the port
    # with an error naming "[web] port", and its summary of where to look was never printed.
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "obsflow", "demo", "--local", "--serve", "--port", str(port),
                                 "--workdir", str(tmp_path / "night")], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and f"port {port}" in result.stderr and "--port" in result.stderr
    assert not (tmp_path / "night").exists()
    result = subprocess.run([sys.executable, "-m", "obsflow", "demo", "--port", "70000", "--workdir",
                             str(tmp_path / "night")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "--port" in result.stderr and not (tmp_path / "night").exists()
