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
