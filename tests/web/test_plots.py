"""The status page's plots: real PNG images drawn from the same data as the JSON."""

from __future__ import annotations

from pathlib import Path

from obsflow.web.server import StatusServer
from tests.web.conftest import Site
from tests.web.reading import fetch, fetch_json
from tests.web.test_quicklook import assert_png_image


def _png(server: StatusServer, path: str, tmp_path: Path) -> Path:
    code, kind, body = fetch(server, path)
    assert code == 200 and kind == "image/png", (code, kind)
    out = tmp_path / Path(path).name
    out.write_bytes(body)
    return out


def test_bytes_per_day_plot(site: Site, server: StatusServer, tmp_path: Path) -> None:
    assert fetch_json(server, "/api/sync.json")["bytes_per_day"]["hops"]  # there is something to draw
    assert_png_image(_png(server, "/plots/bytes_per_day.png", tmp_path), min_bytes=10_000)


def test_fill_latency_plot(site: Site, server: StatusServer, tmp_path: Path) -> None:
    assert_png_image(_png(server, "/plots/fill_latency.png", tmp_path), min_bytes=10_000)


def test_fill_history_comes_from_the_fill_logs_when_the_status_forgot(site: Site) -> None:
    import json

    from obsflow.web.status import fill_history, filler_layout

    layout = filler_layout(site.config)
    data = json.loads(layout.status_path.read_text())
    data["recent"] = []  # the daemon keeps only the last few hundred fills
    layout.status_path.write_text(json.dumps(data))
    history = fill_history(site.config)
    expected = sorted(site.filler.fills, key=lambda r: r["filled_at"])  # type: ignore[arg-type, return-value]
    assert [h["scan"] for h in history] == [r["scan"] for r in expected]
    assert [h["latency_s"] for h in history] == [
        round(r["filled_at"] - r["finished_seen_at"], 3) for r in expected  # type: ignore[operator]
    ]


def test_fill_history_reads_only_the_fill_logs_written_within_its_days(site: Site, monkeypatch) -> None:
    """A fill log is appended to: one not written for longer than the plot's days holds none of its fills.
    After years the logs hold every fill of every project; the plot must not read them all."""
    import os
    import time

    from obsflow.online import layout as layout_module
    from obsflow.web.status import fill_history, filler_layout

    layout = filler_layout(site.config)
    before = fill_history(site.config)
    old = layout.fill_log("AGBT24A_001_01")
    then = time.time() - 60 * 86400
    old.write_text("".join(f"2024-10-01T00:00:00Z project=AGBT24A_001_01 scan={n} timestamp=2024_10_01_00:00:00 "
                           f"banks=A rows=8 seconds=0.1 filled_at={then} finished_at={then - 1}\n" for n in range(1, 500)))
    os.utime(old, (then, then))
    read = []
    reader = layout_module._read_fill_log
    monkeypatch.setattr(layout_module, "_read_fill_log", lambda path: read.append(path.name) or reader(path))
    assert fill_history(site.config, days=7) == before
    assert read and old.name not in read
