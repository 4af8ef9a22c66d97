"""Pure comparison of two listings: each file of A in exactly one bucket."""

from obsflow.transfer.listing import FileStat
from obsflow.verify.compare import HashDiff, SizeDiff, compare_hashes, compare_listings, confirm, folders_of

NOW = 1_800_000_000.0
OLD = NOW - 86400


def stat(size: int, mtime: float = OLD, kind: str = "f") -> FileStat:
    return FileStat(size, mtime, kind)


def test_each_file_lands_in_one_bucket_sorted():
    a = {
        "2026/1101/c.fits": stat(10),
        "2026/1101/a.fits": stat(10),
        "2026/1101/b.fits": stat(20),
        "2026/1101/fresh.fits": stat(5, NOW - 30),
        "2026/1101/link.fits": stat(0, kind="l"),
        "2026/1102/z.fits": stat(7),
    }
    b = {"2026/1101/a.fits": stat(10, OLD - 5), "2026/1101/b.fits": stat(19), "2026/1101/only_b.fits": stat(1)}
    result = compare_listings(a, b, a_time=NOW, settle_s=120)
    assert result.missing == ["2026/1101/c.fits", "2026/1102/z.fits"]
    assert result.size_differs == [SizeDiff("2026/1101/b.fits", 20, 19)]
    assert result.same_size == ["2026/1101/a.fits"]  # mtime may differ: size decides, hashes on request
    assert result.in_flight == ["2026/1101/fresh.fits"]
    assert result.skipped == ["2026/1101/link.fits"]
    assert result.suspects == ["2026/1101/b.fits", "2026/1101/c.fits", "2026/1102/z.fits"]


def test_settle_time_uses_the_clock_of_a():
    a = {"x.fits": stat(1, NOW - 100)}
    assert compare_listings(a, {}, a_time=NOW, settle_s=120).in_flight == ["x.fits"]
    # Same file, A's clock runs ahead: it has settled there.
    assert compare_listings(a, {}, a_time=NOW + 50, settle_s=120).missing == ["x.fits"]


def test_a_non_regular_file_on_b_is_a_size_difference():
    result = compare_listings({"x.fits": stat(4)}, {"x.fits": stat(4, kind="l")}, a_time=NOW, settle_s=0)
    assert result.size_differs == [SizeDiff("x.fits", 4, 4, "l")]


def test_confirm_keeps_only_what_both_looks_agree_on():
    a = {name: stat(10) for name in ("gone.fits", "grew.fits", "copied.fits", "still.fits", "cut.fits", "now_cut.fits")}
    b = {"cut.fits": stat(5)}
    first = compare_listings(a, b, a_time=NOW, settle_s=60)
    assert len(first.suspects) == 6
    a_after = dict(a)
    del a_after["gone.fits"]  # deleted on A while checked
    a_after["grew.fits"] = stat(12, NOW - 1)  # rewritten on A while checked
    b_after = {"copied.fits": stat(10), "cut.fits": stat(5), "now_cut.fits": stat(3)}
    result = confirm(first, a, a_after, b_after)
    assert result.missing == ["still.fits"]
    assert result.size_differs == [SizeDiff("cut.fits", 10, 5), SizeDiff("now_cut.fits", 10, 3)]
    assert result.in_flight == ["copied.fits", "gone.fits", "grew.fits"]


def test_compare_hashes_names_differences_and_unhashable_files():
    differs, unhashed = compare_hashes(
        ["b", "a", "c"], {"a": "11", "b": "22", "c": "33"}, {"a": "11", "b": "99"}
    )
    assert differs == [HashDiff("b", "22", "99")]
    assert unhashed == ["c"]


def test_folders_of_picks_the_dated_folders_holding_paths():
    folders = ["2026/1101", "2026/1102", "2026/1103"]
    assert folders_of(["2026/1103/x.fits", "2026/1101/y/z.fits"], folders) == ["2026/1101", "2026/1103"]
    assert folders_of([], folders) == []
