"""The SQLite catalog: files per host with their hashes, and sync runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import FileStat


def test_catalog_is_one_wal_file(tmp_path: Path) -> None:
    with Catalog(tmp_path / "state" / "catalog.sqlite"):
        pass
    mode = sqlite3.connect(tmp_path / "state" / "catalog.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_observe_keeps_first_seen_and_drops_a_stale_hash(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(10, 100.0)}, now=1000.0)
        cat.record_hash("suth", "sha", "2016/0907/a.fits", 10, 100.0, "ab" * 16)
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(10, 100.0)}, now=2000.0)
        rec = cat.get("suth", "sha", "2016/0907/a.fits")
        assert rec is not None and rec.first_seen == 1000.0 and rec.xxh128 == "ab" * 16
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(20, 200.0)}, now=3000.0)
        rec = cat.get("suth", "sha", "2016/0907/a.fits")
        assert rec is not None and (rec.size, rec.xxh128, rec.first_seen) == (20, None, 1000.0)


def test_a_copy_counts_only_with_equal_hashes(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.record_copy("instruments", "suth", "sha", [("a.fits", 5, 1.0, "11" * 16, "11" * 16),
                                                     ("b.fits", 5, 1.0, "11" * 16, "22" * 16)])  # fmt: skip
        good, bad = cat.get("suth", "sha", "a.fits"), cat.get("suth", "sha", "b.fits")
        assert good is not None and good.verified is not None and good.copied is not None
        assert bad is not None and bad.verified is None and bad.copied is None
        assert [r.path for r in cat.files("suth", "sha")] == ["a.fits", "b.fits"]
        assert cat.known_hashes("instruments", "sha", {"a.fits": FileStat(5, 1.0), "b.fits": FileStat(6, 1.0)}) == {
            "a.fits": "11" * 16
        }


def test_runs_and_last_success(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        ok = cat.start_run("instruments:suth", "sha", now=100.0)
        cat.finish_run(ok, "ok", {"copied": 3, "bytes": 30})
        bad = cat.start_run("instruments:suth", "sha", now=200.0)
        cat.finish_run(bad, "failed", {}, "cannot reach host")
        dry = cat.start_run("instruments:suth", "sha", dry_run=True, now=300.0)
        cat.finish_run(dry, "ok", {})
        assert cat.last_success("sha") == 100.0
        assert cat.last_success("shd") is None
        runs = cat.runs(instrument="sha")
        assert [(r.status, r.copied, r.bytes, r.message) for r in runs] == [
            ("ok", 0, 0, ""), ("failed", 0, 0, "cannot reach host"), ("ok", 3, 30, "")
        ]
        assert runs[0].dry_run and runs[2].ended is not None
