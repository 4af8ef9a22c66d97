"""The pure planner: window, folders, and the bucket of every file."""

from __future__ import annotations

import math
import random
import time
from datetime import date, datetime, timedelta

import pytest

from obsflow.config import UNDATED
from obsflow.errors import UsageError
from obsflow.transfer.listing import FileStat, is_safe_relpath, unsafe_relpaths
from obsflow.transfer.locks import FillerLock, FillerLocks
from obsflow.transfer.plan import (
    dated_folders,
    modified_window,
    modified_within,
    parse_date,
    plan_copy,
    window_dates,
)

NOW = 1_000_000.0


def test_dates_and_folders() -> None:
    assert parse_date("20160907") == parse_date("2016-09-07") == date(2016, 9, 7)
    for bad in ("2016-13-01", "201609", "yesterday"):
        with pytest.raises(UsageError):
            parse_date(bad)
    days = window_dates(date(2016, 3, 1), 3)
    assert days == [date(2016, 2, 28), date(2016, 2, 29), date(2016, 3, 1)]
    assert list(dated_folders("{yyyy}/{mmdd}", days)) == ["2016/0228", "2016/0229", "2016/0301"]
    assert list(dated_folders("night{yyyymmdd}", days[:1])) == ["night20160228"]


def test_every_file_lands_in_one_bucket() -> None:
    old = NOW - 3600
    source = {
        "n/new.fits": FileStat(10, old),
        "n/same.fits": FileStat(10, old),
        "n/touched.fits": FileStat(10, old),
        "n/differs.fits": FileStat(10, old),
        "n/fresh.fits": FileStat(10, NOW - 5),
        "AGBT26A_001_01/x.fits": FileStat(10, old),
        "n/link.fits": FileStat(3, old, "l", "../../../etc/passwd"),
        "n/inside.fits": FileStat(3, old, "l", "same.fits"),
        "n/fifo.fits": FileStat(0, old, "p"),
        "n/../../evil.fits": FileStat(1, old),
    }
    dest = {
        "n/same.fits": FileStat(10, old + 0.4),
        "n/touched.fits": FileStat(10, old + 60),
        "n/differs.fits": FileStat(11, old),
    }
    plan = plan_copy(source, dest, source_time=NOW, settle_s=120, locks=FillerLocks({"AGBT26A_001_01": FillerLock("AGBT26A_001_01", "/locks", None)}))
    assert list(plan.copy) == ["n/new.fits"]
    assert plan.present == ["n/same.fits"]
    assert plan.check == ["n/touched.fits"]
    assert plan.conflicts == ["n/differs.fits"]
    assert plan.in_flight == ["n/fresh.fits"]
    assert plan.locked == ["AGBT26A_001_01/x.fits"]
    reasons = {r.path: r.reason for r in plan.refused}
    assert set(reasons) == {"n/link.fits", "n/inside.fits", "n/fifo.fits", "n/../../evil.fits"}
    assert "outside" in reasons["n/link.fits"] and "escapes" in reasons["n/../../evil.fits"]
    assert plan.copy_bytes == 10


def test_a_plain_listing_sorted_in_bulk_lands_as_sorted_one_by_one() -> None:
    # A listing of plain names without lock folders is mostly sorted in bulk (a no-op run of 10,000
    # files); one special file sends the whole listing through the one-by-one loop.  Same buckets.
    rng = random.Random(7)
    old, source, dest = NOW - 3600, {}, {}
    for i in range(2000):
        path = f"2026/{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}/f{i:05d}.fits"
        mtime = rng.choice([old + i * 1e-9, NOW - 5, NOW + 7200, old])
        source[path] = FileStat(rng.randrange(3), mtime)
        other = rng.choice(["same", "ns", "second", "size", "link", "none"])
        if other != "none":
            size = source[path].size + (other == "size")
            shift = {"ns": 1e-7, "second": 1.5}.get(other, 0.0)
            dest[path] = FileStat(size, mtime + shift, "l" if other == "link" else "f", "x" if other == "link" else "")
    bulk = plan_copy(source, dest, source_time=NOW, settle_s=120)
    one_by_one = plan_copy({**source, "zz/fifo": FileStat(0, old, "p")}, dest, source_time=NOW, settle_s=120)
    assert [r.path for r in one_by_one.refused] == ["zz/fifo"] and bulk.refused == []
    for bucket in ("copy", "present", "check", "conflicts", "in_flight"):
        assert getattr(bulk, bucket) == getattr(one_by_one, bucket), bucket
    assert len(bulk.present) > 200 and bulk.check and bulk.conflicts and bulk.in_flight and bulk.copy


SAFE = ["2016/0907/a.fits", "a", "2016/0907/..a.fits", "2016/0907/a..", ".hidden/x", "a/.b", "a/...", "a b/c d"]
UNSAFE = ["../x", "2016/../x", "2016/..", "..", ".", "./a", "a/./b", "/abs", "a/", "a//b", "", "a\\b", "a/b\0c"]


@pytest.mark.parametrize("unsafe", UNSAFE)
def test_one_unsafe_path_among_many_is_found_and_refused(unsafe: str) -> None:
    paths = [*SAFE, unsafe, *SAFE[::-1]]
    assert unsafe_relpaths(paths) == {unsafe} == {p for p in paths if not is_safe_relpath(p)}
    plan = plan_copy({p: FileStat(1, 0.0) for p in paths}, {}, source_time=1e9, settle_s=120)
    backslash = "name holds a backslash: not copied (rename it at the source)"  # refused, but it escapes nothing
    reason = backslash if unsafe == "a\\b" else "path escapes its root"
    assert [(r.path, r.reason) for r in plan.refused] == [(unsafe, reason)]
    assert sorted(plan.copy) == sorted(set(SAFE))


def test_safe_paths_are_all_safe() -> None:
    assert unsafe_relpaths(SAFE) == set() and all(is_safe_relpath(p) for p in SAFE)


def test_an_undated_window_reaching_today_takes_files_from_the_future_too() -> None:
    """A product whose mtime a wrong clock set a year ahead belongs to no past night: the window
    that reaches today takes it (the plan then judges whether it settled), a past night's does not."""
    today = date.today()
    since, until = modified_window(UNDATED, window_dates(today, 30), today=today)
    ahead = FileStat(1, time.time() + 365 * 86400)
    assert modified_within({"p.fits": ahead}, (since, until)) == {"p.fits": ahead}
    last_week = modified_window(UNDATED, window_dates(today - timedelta(days=7), 3), today=today)
    assert last_week is not None and last_week[1] < time.time() and modified_within({"p.fits": ahead}, last_week) == {}
    assert modified_window("{yyyy}/{mmdd}", window_dates(today, 30), today=today) is None


def test_the_open_end_follows_the_runs_own_today_not_the_clock() -> None:
    """A run told its day (``--today``, tests) judges "reaches today" by that day: a window ending
    on it is open, one ending the day before is closed, whatever the machine's date."""
    run_day = date(2016, 9, 7)
    assert modified_window(UNDATED, window_dates(run_day, 30), today=run_day)[1] == math.inf  # type: ignore[index]
    closed = modified_window(UNDATED, window_dates(run_day - timedelta(days=1), 30), today=run_day)
    assert closed is not None and closed[1] == datetime(2016, 9, 7).timestamp()


def test_a_paths_night_is_read_from_its_dated_folder() -> None:
    from obsflow.transfer.plan import folder_night

    assert folder_night("{yyyy}/{mmdd}", "2016/0907/SHA_20160907.0122.fits") == date(2016, 9, 7)
    assert folder_night("{yyyymmdd}", "20160907/a.fits") == date(2016, 9, 7)
    assert folder_night("/raw/{yyyy}/{mm}/{dd}/", "raw/2016/09/07/deeper/a.fits") == date(2016, 9, 7)
    assert folder_night("{yyyy}/{mmdd}", "2016/09070/a.fits") is None  # a neighbour of the folder, not in it
    assert folder_night("{yyyy}/{mmdd}", "2016/1340/a.fits") is None  # digits, but no date
    assert folder_night("{yyyy}/{yyyymmdd}", "2016/20170101/a.fits") is None  # two years: no night
    assert folder_night("{mmdd}", "0907/a.fits") is None  # which year?
    assert folder_night(UNDATED, "AGBT22A_325/a.fits") is None


def test_only_layouts_from_year_to_day_sort_as_their_nights() -> None:
    from obsflow.transfer.plan import sorts_by_night

    assert sorts_by_night("{yyyy}/{mmdd}") and sorts_by_night("{yyyymmdd}") and sorts_by_night("d/{yyyy}/{mm}/{dd}")
    assert not sorts_by_night("{mmdd}/{yyyy}") and not sorts_by_night("{dd}{mm}{yyyy}")
    assert not sorts_by_night("{yyyy}/{mm}") and not sorts_by_night(UNDATED)
