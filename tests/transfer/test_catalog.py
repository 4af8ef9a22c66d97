"""The SQLite catalog: files per host with their hashes, and sync runs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from obsflow.errors import CatalogError
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import FileStat
from tests.transfer.conftest import damage_catalog


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


def _writes(cat: Catalog) -> int:
    return cat._db.total_changes


def test_observe_writes_only_new_and_changed_files_and_returns_valid_hashes(tmp_path: Path) -> None:
    files = {f"2016/0907/f{i}.fits": FileStat(i, 100.0) for i in range(50)}
    with Catalog(tmp_path / "c.sqlite") as cat:
        assert cat.observe("suth", "sha", files, now=1.0, folders=["2016/0907"]) == {}
        cat.record_hashes("suth", "sha", [("2016/0907/f1.fits", 1, 100.0, "11" * 16),
                                          ("2016/0907/f2.fits", 2, 100.0, "22" * 16)])  # fmt: skip
        before = _writes(cat)
        hashes = cat.observe("suth", "sha", files, now=2.0, folders=["2016/0907"])
        assert _writes(cat) == before  # a no-op run writes nothing
        assert hashes == {"2016/0907/f1.fits": "11" * 16, "2016/0907/f2.fits": "22" * 16}
        changed = {**files, "2016/0907/f1.fits": FileStat(1, 200.0), "2016/0907/new.fits": FileStat(7, 100.0)}
        hashes = cat.observe("suth", "sha", changed, now=3.0, folders=["2016/0907"])
        assert _writes(cat) == before + 2
        assert hashes == {"2016/0907/f2.fits": "22" * 16}
        assert cat.get("suth", "sha", "2016/0907/f1.fits").xxh128 is None  # type: ignore[union-attr]
        assert cat.get("suth", "sha", "2016/0907/new.fits").first_seen == 3.0  # type: ignore[union-attr]


def test_reads_are_limited_to_the_folders_asked_for(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        for folder in ("2016/0906", "2016/0907", "2016/09070", "2016/0907.bak", "2016/0908"):
            cat.record_hashes("suth", "sha", [(f"{folder}/x.fits", 1, 1.0, "ab" * 16)])
        cat.observe("suth", "sha", {"2016/0907": FileStat(0, 0.0, "l", "/elsewhere")})  # a refused folder link
        assert set(cat.stored("suth", "sha", ["2016/0907"])) == {"2016/0907", "2016/0907/x.fits"}
        assert len(cat.stored("suth", "sha")) == 6
        listing = {f"{f}/x.fits": FileStat(1, 1.0) for f in ("2016/0906", "2016/0907")}
        assert set(cat.known_hashes("suth", "sha", listing, folders=["2016/0907"])) == {"2016/0907/x.fits"}


def test_record_hashes_is_one_transaction_and_keeps_marks_only_for_the_same_file(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.record_copy("instruments", "suth", "sha", [("a.fits", 5, 1.0, "11" * 16, "11" * 16)])
        assert cat.record_hashes("suth", "sha", [("a.fits", 5, 1.0, "11" * 16), ("b.fits", 6, 1.0, "33" * 16)]) == 2
        assert cat.get("suth", "sha", "a.fits").verified is not None  # type: ignore[union-attr]
        cat.record_hashes("suth", "sha", [("a.fits", 5, 9.0, "44" * 16)])  # another mtime: another file
        rec = cat.get("suth", "sha", "a.fits")
        assert rec is not None and rec.verified is None and rec.copied is None and rec.xxh128 == "44" * 16
        with pytest.raises(sqlite3.Error):  # a bad row rolls the whole batch back
            cat.record_hashes("suth", "sha", [("c.fits", 1, 1.0, "55" * 16), ("d.fits", None, 1.0, "66" * 16)])
        assert cat.get("suth", "sha", "c.fits") is None


def test_verification_runs_and_the_latest(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        assert cat.last_verification() is None
        cat.record_verification(started=10.0, ended=11.0, first_night="2026-10-01", last_night="2026-11-23",
                                checksum=True, status="ok", counts={"matched": 7}, report='{"status": "ok"}')  # fmt: skip
        cat.record_verification(started=20.0, ended=21.0, first_night="2026-10-01", last_night="2026-11-23",
                                checksum=False, status="differences", counts={"missing": 2, "matched": 5})  # fmt: skip
        last = cat.last_verification()
        assert last is not None and (last.status, last.missing, last.matched, last.checksum) == (
            "differences", 2, 5, False)  # fmt: skip
        content = cat.last_verification(checksum=True)
        assert content is not None and (content.started, content.report) == (10.0, '{"status": "ok"}')


def test_a_read_only_catalog_creates_nothing_and_reads_a_missing_or_empty_one_as_empty(tmp_path: Path) -> None:
    missing = tmp_path / "state" / "catalog.sqlite"
    with Catalog(missing, read_only=True) as cat:
        assert cat.runs() == [] and cat.stored("suth", "sha") == {}
    assert not missing.parent.exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with Catalog(empty, read_only=True) as cat:
        assert cat.runs() == [] and cat.last_success("sha") is None
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


def test_a_read_only_catalog_reads_what_the_sync_wrote(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with Catalog(path) as cat:
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(10, 100.0)}, now=1000.0)
        cat.finish_run(cat.start_run("instruments:suth", "sha", now=50.0), "ok", {"copied": 1})
    before = path.read_bytes()
    with Catalog(path, read_only=True) as cat:
        assert cat.stored("suth", "sha") == {"2016/0907/a.fits": (10, 100.0, None)}
        assert cat.last_success("sha") == 50.0
    assert path.read_bytes() == before


def test_a_read_only_catalog_answers_as_usual_but_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    with Catalog(path) as cat:
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(10, 100.0)})
        cat.record_hash("suth", "sha", "2016/0907/a.fits", 10, 100.0, "ab" * 16)
    before = path.read_bytes()
    files = {"2016/0907/a.fits": FileStat(10, 100.0), "2016/0907/b.fits": FileStat(5, 100.0)}
    with Catalog(path, read_only=True) as cat:  # what a dry run does
        assert cat.observe("suth", "sha", files) == {"2016/0907/a.fits": "ab" * 16}
        assert cat.record_hashes("suth", "sha", [("2016/0907/b.fits", 5, 100.0, "cd" * 16)]) == 1
        cat.record_copy("instruments", "cape", "sha", [("2016/0907/a.fits", 10, 100.0, "ab" * 16, "ab" * 16)])
        cat.mark_verified("suth", "sha", ["2016/0907/a.fits"])
        cat.finish_run(cat.start_run("instruments:suth", "sha", dry_run=True), "ok", {"copied": 1})
        assert cat.get("suth", "sha", "2016/0907/b.fits") is None and cat.runs() == []
    assert path.read_bytes() == before


def test_held_counts_files_and_bytes_in_the_folders_asked_for_and_below_them(tmp_path: Path) -> None:
    files = {
        "2016/0907/a.fits": FileStat(10, 100.0), "2016/0907/sub/b.fits": FileStat(20, 100.0),
        "2016/0908/c.fits": FileStat(40, 300.0),
        "2016/0907.bak/d.fits": FileStat(80, 100.0), "2016/09070/e.fits": FileStat(160, 100.0),  # beside 0907
        "2016/0906/f.fits": FileStat(320, 100.0),
    }  # fmt: skip
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.observe("suth", "sha", files)
        cat.observe("cape", "sha", {"2016/0907/a.fits": FileStat(10, 100.0)})
        assert cat.held("suth", "sha", ["2016/0907", "2016/0908"]) == (3, 70)
        assert cat.held("cape", "sha", ["2016/0907", "2016/0908"]) == (1, 10)
        assert cat.held("suth", "shoc", ["2016/0907"]) == (0, 0)
        assert cat.held("suth", "sha", ["."], modified=(200.0, 400.0)) == (1, 40)  # an undated tree
        assert cat.held("suth", "sha", ["."]) == (6, 630)


def test_reading_one_folder_costs_the_same_however_long_the_history(tmp_path: Path) -> None:
    """Counted in SQLite's own VM steps (not time): a read that scanned the history would grow 40x."""

    def steps(cat: Catalog, read: Callable[[], object]) -> int:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        cat._db.set_progress_handler(tick, 10)
        read()
        cat._db.set_progress_handler(None, 10)
        return count[0]

    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.observe("suth", "sha", {f"2016/0907/{i}.fits": FileStat(1, 1.0) for i in range(50)})
        cost = {}
        for history in (0, 2000):
            cat.observe("suth", "sha", {f"2015/{i:04d}/x.fits": FileStat(1, 1.0) for i in range(history)})
            cost[history] = (steps(cat, lambda: cat.stored("suth", "sha", ["2016/0907"])),
                             steps(cat, lambda: cat.held("suth", "sha", ["2016/0907"])))  # fmt: skip
        assert cost[2000][0] <= cost[0][0] * 1.2 and cost[2000][1] <= cost[0][1] * 1.2, cost


def test_a_damaged_catalog_is_one_catalog_error_line_on_every_read_and_write(tmp_path: Path) -> None:
    """Found by review: SQLite's "database disk image is malformed" came out of the catalog's
    reads as a raw sqlite3.DatabaseError, which `obsflow sync` printed as an internal error with a
    traceback."""
    path = tmp_path / "catalog.sqlite"
    files = {f"2016/0907/f{i:05d}.fits": FileStat(i, 100.0) for i in range(3000)}
    with Catalog(path) as cat:
        cat.observe("suth", "sha", files)
        cat.finish_run(cat.start_run("instruments:suth", "sha"), "ok", {"copied": 1})
    damage_catalog(path)
    for read_only in (False, True):
        with Catalog(path, read_only=read_only) as cat:
            calls: list[Callable[[], object]] = [
                lambda: cat.stored("suth", "sha"), lambda: cat.last_success("sha"), cat.runs,
                lambda: cat.files("suth"), lambda: cat.observe("suth", "sha", files, folders=["2016/0907"]),
            ]  # fmt: skip
            for call in calls:
                with pytest.raises(CatalogError) as caught:
                    call()
                assert caught.value.one_line().startswith("catalog damaged (")
                assert "move it aside" in caught.value.one_line() and str(path) in caught.value.one_line()
                assert "\n" not in caught.value.one_line()


def test_a_catalog_from_before_runs_kept_their_nights_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    _catalog_from_before_run_nights(path)
    with Catalog(path, read_only=True) as cat:  # a dry run: nothing changed, the nights unknown
        assert cat.completed_windows("sha", "instruments:suth") == [(100.0, None, None)]
        assert cat.runs()[0].first_night is None
    with Catalog(path) as cat:
        night = (date(2026, 11, 3), date(2026, 12, 2))
        cat.finish_run(cat.start_run("instruments:suth", "sha", now=200.0, nights=night), "incomplete", {})
        assert sorted(cat.completed_windows("sha", "instruments:suth")) == [(100.0, None, None), (200.0, *night)]


def _catalog_from_before_run_nights(path: Path) -> None:
    with Catalog(path) as cat:
        cat.finish_run(cat.start_run("instruments:suth", "sha", now=100.0), "ok", {})
    with sqlite3.connect(path) as db:  # as an older obsflow made it
        db.execute("ALTER TABLE runs DROP COLUMN first_night")
        db.execute("ALTER TABLE runs DROP COLUMN last_night")
    db.close()


def test_a_catalog_upgraded_by_another_process_meanwhile_still_opens(tmp_path: Path) -> None:
    """Found by review: the upgrade added the two columns unless both were there, outside a
    transaction: a sync and a verify opening an older catalog together, or an upgrade cut off between
    its two steps, left 'duplicate column name: first_night', and every later open failed."""
    path = tmp_path / "catalog.sqlite"
    _catalog_from_before_run_nights(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process, upgrading it right now
    other.execute("ALTER TABLE runs ADD COLUMN first_night TEXT")
    opened: list[object] = []
    thread = threading.Thread(target=lambda: opened.append(_open_and_read(path)))
    thread.start()
    thread.join(0.5)  # it found the columns missing and waits for the other's transaction
    other.execute("ALTER TABLE runs ADD COLUMN last_night TEXT")
    other.execute("COMMIT")
    other.close()
    thread.join(30)
    assert opened == [1]
    with sqlite3.connect(path) as db:  # an upgrade cut off after its first column
        db.execute("ALTER TABLE runs DROP COLUMN last_night")
    db.close()
    assert _open_and_read(path) == 1


def _open_and_read(path: Path) -> int | str:
    try:
        with Catalog(path) as cat:
            return len(cat.runs())
    except CatalogError as err:
        return err.one_line()


# ---- retention ----------------------------------------------------------------------------------

LAYOUTS = {"sha": "{yyyy}/{mmdd}", "gbt": "*"}
KEEP_FROM = date(2025, 3, 1)  # the oldest night kept


def _midnight(day: date) -> float:
    from datetime import datetime

    return datetime.combine(day, datetime.min.time()).timestamp()


def _paths(cat: Catalog, host: str, instrument: str) -> list[str]:
    return [record.path for record in cat.files(host, instrument)]


def test_prune_forgets_the_files_of_nights_older_than_kept_and_nothing_newer(tmp_path: Path) -> None:
    old, recent = _midnight(date(2024, 1, 1)), _midnight(KEEP_FROM)
    dated = {"2024/0101/a.fits": FileStat(1, recent),  # an old night, however recent its mtime
             "2025/0228/b.fits": FileStat(1, recent),  # the night before the oldest kept
             "2025/0301/c.fits": FileStat(1, old),  # the oldest night kept, however old its mtime
             "2026/0101/d.fits": FileStat(1, recent),
             ".notes/e.fits": FileStat(1, old), "notes/f.fits": FileStat(1, old)}  # in no dated folder: kept
    with Catalog(tmp_path / "c.sqlite") as cat:
        for host in ("instruments", "suth", "cape"):
            cat.observe(host, "sha", dated)
            cat.observe(host, "retired", {"2016/0907/x.fits": FileStat(1, old)})  # no layout: not ours to judge
            cat.observe(host, "monthly", {"2016/09/x.fits": FileStat(1, old)})  # which night? not ours to judge
        pruned = cat.prune(KEEP_FROM, {**LAYOUTS, "monthly": "{yyyy}/{mm}"})
        for host in ("instruments", "suth", "cape"):
            assert _paths(cat, host, "sha") == [".notes/e.fits", "2025/0301/c.fits", "2026/0101/d.fits", "notes/f.fits"]
            assert _paths(cat, host, "retired") == ["2016/0907/x.fits"]
            assert _paths(cat, host, "monthly") == ["2016/09/x.fits"]
    assert (pruned.files, pruned.runs, pruned.verifications) == (6, 0, 0)


def test_prune_leaves_an_undated_tree_alone(tmp_path: Path) -> None:
    """The sync lists an undated tree whole and records every file again at its next run: forgetting an idle
    product would be undone by the next run (and redone by its prune, every night), and would take the
    archive copy's copied mark that plan.take_grown needs when the product grows again."""
    old, recent = _midnight(date(2024, 6, 1)), _midnight(KEEP_FROM) + 3600
    grown, idle = "AGBT22A_325/AGBT22A_325.raw.vegas.A.fits", "AGBT16B_001/AGBT16B_001.raw.vegas.A.fits"
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.record_copy("instruments", "suth", "gbt", [(grown, 10, old, "11" * 16, "11" * 16),
                                                       (idle, 10, old, "22" * 16, "22" * 16)])  # fmt: skip
        cat.observe("instruments", "gbt", {grown: FileStat(20, recent), idle: FileStat(10, old)})  # it grew
        pruned = cat.prune(KEEP_FROM, LAYOUTS)
        assert _paths(cat, "instruments", "gbt") == _paths(cat, "suth", "gbt") == [idle, grown]
        assert cat.copied_here("suth", "gbt", [grown, idle]) == {grown, idle}
    assert pruned.files == 0


def test_prune_keeps_the_last_verification_of_each_kind_and_forgets_older_ones(tmp_path: Path) -> None:
    old, recent = _midnight(date(2024, 6, 1)), _midnight(KEEP_FROM) + 3600
    with Catalog(tmp_path / "c.sqlite") as cat:
        for i, (started, checksum) in enumerate([(old, True), (old + 10, True), (old + 20, False),
                                                 (recent, False), (old - 10, False)]):  # fmt: skip
            cat.record_verification(started=started, ended=started + 1, first_night="2024-05-01",
                                    last_night="2024-06-01", checksum=checksum, status="ok", counts={"matched": i},
                                    report="x" * 100_000)  # fmt: skip
        pruned = cat.prune(KEEP_FROM, LAYOUTS)
        last_checked, last = cat.last_verification(checksum=True), cat.last_verification()
        assert last_checked is not None and (last_checked.started, last_checked.matched) == (old + 10, 1)
        assert last is not None and (last.started, last.matched) == (recent, 3)
        assert sorted(started for (started,) in cat._db.execute("SELECT started FROM verifications")) == [
            old + 10, recent]
    assert pruned.verifications == 3


def test_prune_forgets_old_runs_but_the_last_of_each_instrument_and_hop_and_those_asked_for(tmp_path: Path) -> None:
    old, recent = _midnight(date(2024, 6, 1)), _midnight(KEEP_FROM) + 3600
    with Catalog(tmp_path / "c.sqlite") as cat:
        def ran(hop: str, started: float, status: str, dry_run: bool = False) -> int:
            run = cat.start_run(hop, "sha", dry_run=dry_run, now=started)
            cat.finish_run(run, status, {})
            return run

        kept = ran("instruments:suth", old, "ok")  # asked for (what missed_runs needs)
        ran("instruments:suth", old + 1, "ok")
        last_ok = ran("instruments:suth", old + 2, "ok")  # the status page's last success
        ran("instruments:suth", old + 3, "failed")
        ran("instruments:suth", old + 4, "ok", dry_run=True)
        ran("instruments:suth", recent, "failed")  # its last run: kept for its age
        only = ran("suth:cape", old, "ok")  # the last success on this hop
        running = cat.start_run("suth:cape", "sha", now=old + 1)  # under way: never ours to drop
        last = ran("suth:cape", old + 2, "failed")  # the last run on this hop
        before = [cat.runs(limit=1, hop=hop, real_only=True) + [cat.last_success("sha", hop)]
                  for hop in ("instruments:suth", "suth:cape")]  # fmt: skip
        pruned = cat.prune(KEEP_FROM, LAYOUTS, keep_runs={kept})
        assert sorted(run.id for run in cat.runs(limit=None) if run.started < recent) == sorted(
            [kept, last_ok, only, running, last])
        assert before == [cat.runs(limit=1, hop=hop, real_only=True) + [cat.last_success("sha", hop)]
                          for hop in ("instruments:suth", "suth:cape")]  # fmt: skip
    assert pruned.runs == 3


def test_prune_keeps_the_nights_of_a_run_it_keeps_and_forgets_them_with_it(tmp_path: Path) -> None:
    """A catch-up run (``--days`` past keep_catalog_days, or ``-d`` an old night) records files of nights older
    than the kept ones: they stay as long as the run does (started since the oldest kept night), or the same
    run's prune forgot what it had just copied and verified, and the next catch-up hashed it all again."""
    old, recent = _midnight(date(2024, 1, 1)), _midnight(KEEP_FROM) + 3600
    nights = ["2024/0101", "2024/0430", "2024/0501", "2024/0630", "2024/0701", "2024/0901", "2025/0228", "2025/0301"]
    with Catalog(tmp_path / "c.sqlite") as cat:
        for host in ("instruments", "suth"):
            cat.observe(host, "sha", {f"{night}/a.fits": FileStat(1, old) for night in nights})
            cat.observe(host, "shd", {"01-06-2024/a.fits": FileStat(1, old), "01-07-2024/a.fits": FileStat(1, old)})

        def ran(started: float, first: date, last: date, instrument: str = "sha", dry_run: bool = False) -> None:
            run = cat.start_run("instruments:suth", instrument, dry_run=dry_run, now=started, nights=(first, last))
            cat.finish_run(run, "failed", {})  # however it ended: what it recorded stays with it

        ran(recent, date(2024, 5, 1), date(2024, 6, 30))  # a catch-up ending on an old night (-d with --days)
        ran(recent, date(2025, 2, 28), date(2025, 3, 30))  # a window reaching one night past the kept ones
        ran(old, date(2023, 12, 1), date(2024, 1, 31))  # a catch-up itself older than the kept nights: no longer kept
        ran(recent, date(2024, 9, 1), date(2024, 9, 1), dry_run=True)  # a dry run records nothing
        ran(recent, date(2024, 7, 1), date(2024, 7, 1), instrument="shd")  # another instrument's nights
        pruned = cat.prune(KEEP_FROM, {**LAYOUTS, "shd": "{dd}-{mm}-{yyyy}"})  # its folders: not in night order
        kept = ["2024/0501/a.fits", "2024/0630/a.fits", "2025/0228/a.fits", "2025/0301/a.fits"]
        assert _paths(cat, "instruments", "sha") == _paths(cat, "suth", "sha") == kept
        assert _paths(cat, "suth", "shd") == ["01-07-2024/a.fits"]  # the night a run of shd covered
        assert (pruned.files, pruned.kept_from) == (10, date(2024, 5, 1))
        # once the catch-up is older than the kept nights too, its nights go with it
        assert cat.prune(date(2025, 6, 1), LAYOUTS).files == 8
        assert _paths(cat, "suth", "sha") == []


def test_prune_with_nothing_old_writes_nothing_and_a_read_only_catalog_is_never_pruned(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with Catalog(path) as cat:
        cat.observe("suth", "sha", {"2016/0907/a.fits": FileStat(1, 1.0), "2026/0101/b.fits": FileStat(1, 1.0)})
        cat.finish_run(cat.start_run("instruments:suth", "sha", now=1.0), "failed", {})
        cat.finish_run(cat.start_run("instruments:suth", "sha", now=2.0), "failed", {})
    with Catalog(path, read_only=True) as cat:  # a dry run
        assert cat.prune(KEEP_FROM, LAYOUTS).total == 0
        assert len(cat.files("suth")) == 2 and len(cat.runs()) == 2
    with Catalog(path) as cat:
        assert cat.prune(KEEP_FROM, LAYOUTS).total == 2
        before = _writes(cat)
        assert cat.prune(KEEP_FROM, LAYOUTS).total == 0
        assert _writes(cat) == before


def test_runs_since_a_day_are_read_through_an_index_in_new_and_older_catalogs(tmp_path: Path) -> None:
    """The status page's bytes per day reads the runs of its window: without an index on the start time it
    read every run ever recorded."""
    path = tmp_path / "catalog.sqlite"
    _catalog_from_before_run_nights(path)
    with sqlite3.connect(path) as db:  # as obsflow made it before the index
        db.execute("DROP INDEX IF EXISTS runs_by_start")
    db.close()
    for read_only in (False, True):  # a sync upgrades it; the status page then reads it
        with Catalog(path, read_only=read_only) as cat:
            statements: list[str] = []
            cat._db.set_trace_callback(statements.append)
            cat.runs(limit=None, since=1000.0, real_only=True)
            cat._db.set_trace_callback(None)
            [query] = statements  # as run, its values in it
            plan = " ".join(row[-1] for row in cat._db.execute("EXPLAIN QUERY PLAN " + query))
            assert "USING INDEX runs_by_start" in plan, plan


def test_a_long_history_is_forgotten_a_limited_number_of_rows_at_a_time_oldest_first(tmp_path: Path) -> None:
    files = {f"2024/{month:02d}01/a.fits": FileStat(1, 1.0) for month in range(1, 13)}
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.observe("suth", "sha", {**files, "2026/0101/b.fits": FileStat(1, 1.0)})
        for started in range(5):
            cat.record_verification(started=float(started), ended=1.0, first_night="x", last_night="y",
                                    checksum=False, status="ok", counts={})  # fmt: skip
        first = cat.prune(KEEP_FROM, LAYOUTS, limit=5)
        assert (first.files, first.verifications, first.more) == (5, 4, True)
        assert _paths(cat, "suth", "sha")[:2] == ["2024/0601/a.fits", "2024/0701/a.fits"]
        assert [cat.prune(KEEP_FROM, LAYOUTS, limit=5).more for _ in range(2)] == [True, False]
        assert _paths(cat, "suth", "sha") == ["2026/0101/b.fits"]
