"""The two-hop sync end to end: real sshd, real rsync, simulated instruments, three hosts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import xxhash

from obsflow.config import MAX_WINDOW_DAYS, Config, load_config, parse_config
from obsflow.lock import held
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.plan import HopPlan, window_dates
from obsflow.transfer.sync import Covered, SyncRequest, first_uncovered, missed_runs, run_sync
from tests.transfer.conftest import INSTRUMENTS, Site, make_site


def night_of(relpath: str) -> date:
    yyyy, mmdd = relpath.split("/")[:2]
    return date(int(yyyy), int(mmdd[:2]), int(mmdd[2:]))


def source_files(site: Site) -> dict[tuple[str, str], Path]:
    """{(instrument, relpath): path} of every simulated frame."""
    files = {}
    for path in site.sim.files:
        inst = path.relative_to(site.inst).parts[0]
        files[(inst, str(path.relative_to(site.inst / inst)))] = path
    return files


def archive_files(site: Site, archive: Path) -> set[tuple[str, str]]:
    found = set()
    for inst in INSTRUMENTS:
        base = site.archive_file(archive, inst, "")
        if base.is_dir():
            found |= {(inst, str(p.relative_to(base))) for p in base.rglob("*") if p.is_file()}
    return found


def digest(path: Path) -> str:
    return xxhash.xxh128(path.read_bytes()).hexdigest()


def test_default_window_copies_exactly_the_last_30_days_to_both_archives(site: Site) -> None:
    report = run_sync(site.config, SyncRequest(today=site.today))
    first = site.today - timedelta(days=29)
    wanted = {key for key in source_files(site) if night_of(key[1]) >= first}
    assert len(wanted) == 30 * 3 * 2
    assert archive_files(site, site.suth) == wanted
    assert archive_files(site, site.cape) == wanted
    assert report.exit_code == 0
    assert [(o.hop, o.instrument, len(o.copied)) for o in report.outcomes] == [
        (hop, inst, 60) for hop in ("instruments:suth", "suth:cape") for inst in INSTRUMENTS
    ]
    sources = source_files(site)
    with Catalog(site.config.catalog_path) as catalog:
        for inst, rel in wanted:
            expected = digest(sources[(inst, rel)])
            for host, archive in (("suth", site.suth), ("cape", site.cape)):
                assert digest(site.archive_file(archive, inst, rel)) == expected
                record = catalog.get(host, inst, rel)
                assert record is not None and record.xxh128 == expected and record.verified is not None
            source_record = catalog.get("instruments", inst, rel)
            assert source_record is not None and source_record.xxh128 == expected
        assert {r.status for r in catalog.runs()} == {"ok"}

    again = run_sync(site.config, SyncRequest(today=site.today))
    assert again.exit_code == 0
    assert [len(o.copied) for o in again.outcomes] == [0] * 6
    assert [o.present for o in again.outcomes] == [60] * 6


def test_one_date_and_one_instrument_select_exactly_that(site: Site) -> None:
    night = site.today - timedelta(days=35)  # outside the default window
    report = run_sync(site.config, SyncRequest(date=night, instrument="shd", today=site.today))
    wanted = {k for k in source_files(site) if k[0] == "shd" and night_of(k[1]) == night}
    assert len(wanted) == 2
    assert archive_files(site, site.suth) == wanted == archive_files(site, site.cape)
    assert [(o.hop, o.instrument) for o in report.outcomes] == [("instruments:suth", "shd"), ("suth:cape", "shd")]


def test_a_file_still_being_written_is_skipped_then_copied_later(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=2, growing=True)
    growing = site.sim.growing
    assert growing is not None
    rel = str(growing.path.relative_to(site.inst / "spupnic"))
    report = run_sync(site.config, SyncRequest(today=site.today))
    first = report.outcomes[2]
    assert first.in_flight == [rel] and report.exit_code == 1
    assert not site.archive_file(site.suth, "spupnic", rel).exists()
    assert not any(p.name.startswith(".") for p in site.suth.rglob("*"))

    growing.finish(mtime=time.time() - 600)  # the camera finished ten minutes ago
    report = run_sync(site.config, SyncRequest(today=site.today))
    assert report.exit_code == 0
    assert site.archive_file(site.cape, "spupnic", rel).read_bytes() == growing.content


def test_a_file_that_changes_during_the_copy_is_not_kept(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=1)
    victim = sorted(p for p in site.sim.files if "/sha/" in str(p))[0]
    rel = str(victim.relative_to(site.inst / "sha"))

    def append_meanwhile(plan: HopPlan) -> None:
        if rel in plan.copy:
            with open(victim, "ab") as handle:  # the writer came back after the settle time
                handle.write(b"\0" * 2880)

    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today), before_copy=append_meanwhile)
    assert report.outcomes[0].in_flight == [rel] and rel not in report.outcomes[0].copied
    assert not site.archive_file(site.suth, "sha", rel).exists()
    assert report.exit_code == 1
    old = time.time() - 600
    os.utime(victim, (old, old))
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today))
    assert report.exit_code == 0
    assert site.archive_file(site.cape, "sha", rel).read_bytes() == victim.read_bytes()


def test_a_file_that_changes_while_another_vanishes_is_still_not_kept(tmp_path: Path, sshd) -> None:
    """The same, when rsync also fails on a file (a planned file vanished: exit 23): its reports are
    checked at the destination first, and a changed file's copy that did land must still be found
    stale and removed."""
    site = make_site(tmp_path, sshd, nights=1)
    victim, gone = sorted(p for p in site.sim.files if "/sha/" in str(p))[:2]
    rel = str(victim.relative_to(site.inst / "sha"))

    def change_and_remove(plan: HopPlan) -> None:
        if rel in plan.copy:
            with open(victim, "ab") as handle:
                handle.write(b"\0" * 2880)
            gone.unlink()  # rsync cannot find it: exit 23

    report = run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", today=site.today),
                      before_copy=change_and_remove)  # fmt: skip
    (outcome,) = report.outcomes
    assert outcome.in_flight == [rel] and rel not in outcome.copied
    assert not site.archive_file(site.suth, "sha", rel).exists()
    gone_rel = str(gone.relative_to(site.inst / "sha"))
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith(f"{gone_rel}: not copied")


@pytest.mark.parametrize("remote", [False, True], ids=["local-locks", "remote-locks"])
def test_a_locked_file_is_skipped(tmp_path: Path, sshd, remote: bool) -> None:
    locks = tmp_path / "locks"
    where = f"instruments.test:{locks}" if remote else str(locks)
    site = make_site(tmp_path, sshd, nights=2, extra=f'locks = ["{where}"]')
    night = f"{site.today:%m%d}"
    with held(locks, night):  # a writer holds the lock named like tonight's folder
        report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today))
    locked = report.outcomes[0].locked
    assert len(locked) == 2 and all(f"/{night}/" in p for p in locked)
    assert report.exit_code == 1
    assert not any(site.archive_file(site.suth, "sha", p).exists() for p in locked)
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today))
    assert report.exit_code == 0 and sorted(report.outcomes[0].copied) == sorted(locked)


def test_a_conflicting_destination_file_is_kept_and_reported(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=1)
    sha = sorted(p for p in site.sim.files if "/sha/" in str(p))
    rel0, rel1 = (str(p.relative_to(site.inst / "sha")) for p in sha[:2])
    other_size = site.archive_file(site.suth, "sha", rel0)
    other_size.parent.mkdir(parents=True)
    other_size.write_bytes(b"someone else's data")
    same_size = site.archive_file(site.suth, "sha", rel1)
    same_size.write_bytes(b"X" * sha[1].stat().st_size)  # same size, other content, newer mtime
    before = {p: p.read_bytes() for p in sha}
    report = run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", today=site.today))
    assert sorted(report.outcomes[0].conflicts) == sorted([rel0, rel1])
    assert report.outcomes[0].present == 0  # a file whose hash differs is a conflict only, never also present
    assert report.exit_code == 1
    assert other_size.read_bytes() == b"someone else's data"
    assert same_size.read_bytes() == b"X" * sha[1].stat().st_size
    assert {p: p.read_bytes() for p in sha} == before  # the source is untouched


def test_paths_escaping_the_root_are_refused(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=1)
    night = site.inst / "sha" / f"{site.today:%Y}" / f"{site.today:%m%d}"
    secret = tmp_path / "secret.fits"
    secret.write_bytes(b"outside")
    os.symlink(secret, night / "escape.fits")
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today))
    refused = report.outcomes[0].refused
    assert [r.path.rsplit("/", 1)[-1] for r in refused] == ["escape.fits"]
    assert not site.archive_file(site.suth, "sha", str(night.relative_to(site.inst / "sha")) + "/escape.fits").exists()
    assert report.exit_code == 1


def test_an_unreachable_instrument_does_not_stop_the_others(tmp_path: Path, sshd) -> None:
    hosts = {"sha": "down.test", "shd": "shd.test", "spupnic": "spupnic.test"}
    site = make_site(tmp_path, sshd, nights=1, hosts=hosts)
    report = run_sync(site.config, SyncRequest(today=site.today))
    by_key = {(o.hop, o.instrument): o for o in report.outcomes}
    failure = by_key[("instruments:suth", "sha")].failure
    assert failure is not None and "cannot reach host" in failure and "down.test" in failure
    assert len(by_key[("instruments:suth", "shd")].copied) == 2
    assert len(by_key[("suth:cape", "spupnic")].copied) == 2
    assert report.exit_code == 2


def test_remote_to_remote_hop_runs_rsync_on_the_source_host(tmp_path: Path, sshd) -> None:
    site = make_site(tmp_path, sshd, nights=2)
    text = site.config_path.read_text().replace(f'location = "{site.suth}"', f'location = "suth.test:{site.suth}"')
    site.config_path.write_text(text)
    report = run_sync(site.config, SyncRequest(today=site.today))
    assert report.exit_code == 0
    assert archive_files(site, site.cape) == set(source_files(site))


def test_missed_runs_say_which_days_cover_the_gap(site: Site) -> None:
    config = site.config
    # an afternoon run: the night before it is over
    long_ago = datetime.combine(site.today - timedelta(days=45), datetime.min.time()).timestamp() + 13 * 3600
    with Catalog(config.catalog_path) as catalog:
        for hop in ("instruments:suth", "suth:cape"):
            catalog.finish_run(catalog.start_run(hop, "sha", now=long_ago), "ok", {})
    report = run_sync(config, SyncRequest(instrument="sha", today=site.today, dry_run=True))
    assert len(report.warnings) == 1
    first = site.today - timedelta(days=45)
    assert f"sha: no completed sync covered the night {first} (nor, maybe, some up to the 30-day" in report.warnings[0]
    assert "--days 46" in report.warnings[0]
    assert archive_files(site, site.suth) == set()  # dry run


def test_a_run_that_left_files_to_a_person_still_covered_its_window(site: Site) -> None:
    """Found by review: only ``ok`` runs counted, so a permanent conflict or refused name (every run
    ``incomplete``) brought a missed-runs warning every day after window_days, its --days growing."""
    def day(days_ago: int) -> float:
        return datetime.combine(site.today - timedelta(days=days_ago), datetime.min.time()).timestamp() + 13 * 3600

    def nightly(status: str) -> None:  # the cron job's runs of the last 44 days
        with Catalog(site.config.catalog_path) as catalog:
            for days_ago in range(44, 0, -1):
                for hop in ("instruments:suth", "suth:cape"):
                    catalog.finish_run(catalog.start_run(hop, "sha", now=day(days_ago)), status, {"conflicts": 1})

    with Catalog(site.config.catalog_path) as catalog:
        for hop in ("instruments:suth", "suth:cape"):
            catalog.finish_run(catalog.start_run(hop, "sha", now=day(45)), "ok", {})
    nightly("failed")
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today, dry_run=True))
    assert ["--days 46" in w for w in report.warnings] == [True]  # a failed run covered nothing
    nightly("incomplete")
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today, dry_run=True))
    assert report.warnings == []


def test_a_one_night_run_does_not_hide_the_nights_no_run_covered(site: Site) -> None:
    """Found in review: a run counted as covering its whole window up to its day, so after 45 days
    without runs, `obsflow sync -d <one night>` made the warning go, and 15 nights were never copied."""
    long_ago = datetime.combine(site.today - timedelta(days=45), datetime.min.time()).timestamp() + 13 * 3600
    with Catalog(site.config.catalog_path) as catalog:
        for hop in ("instruments:suth", "suth:cape"):
            catalog.finish_run(catalog.start_run(hop, "sha", now=long_ago), "ok", {})
    one_night = site.today - timedelta(days=35)
    assert run_sync(site.config, SyncRequest(instrument="sha", date=one_night, today=site.today)).exit_code == 0
    report = run_sync(site.config, SyncRequest(instrument="sha", today=site.today, dry_run=True))
    assert len(report.warnings) == 1 and "--days 46" in report.warnings[0]  # from the night after the old run's
    assert run_sync(site.config, SyncRequest(instrument="sha", days=46, today=site.today)).exit_code == 0
    assert run_sync(site.config, SyncRequest(instrument="sha", today=site.today, dry_run=True)).warnings == []


def _one_hop_config(tmp_path: Path) -> Config:
    text = (f'state_dir = "{tmp_path}"\n[instruments.sha]\nsource = "{tmp_path}/sha"\n'
            'layout = "{yyyy}/{mmdd}"\npath = "sha"\n'
            f'[archives.suth]\nlocation = "{tmp_path}/suth"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n')
    config, problems = parse_config(text)
    assert problems == []
    return config


def _ran(catalog: Catalog, day: date, nights: tuple[date, date] | None = None) -> None:
    """A completed run of sha on the one hop, started at 13:00 on ``day`` (nights: its window, default the config's)."""
    started = datetime.combine(day, datetime.min.time()).timestamp() + 13 * 3600
    catalog.finish_run(catalog.start_run("instruments:suth", "sha", now=started, nights=nights), "ok", {})


def test_a_run_before_the_night_is_over_does_not_cover_that_night(tmp_path: Path) -> None:
    """Found by review (real runs under faketime): a night is named by the date of its evening and observed
    into the next morning.  The nightly job ran at 00:30 up to 1 January, then not until 15 February: the
    warning named 1 January and its `--days 46`, so the frames of the night of 31 December written after
    00:30 were never copied, and no warning or verification (January and February) named that night."""
    config = _one_hop_config(tmp_path)
    with Catalog(config.catalog_path) as catalog:
        for day in window_dates(date(2027, 1, 1), 32):  # every night at 00:30, 1 December .. 1 January
            started = datetime.combine(day, datetime.min.time()).timestamp() + 1800
            catalog.finish_run(catalog.start_run("instruments:suth", "sha", now=started,
                                                 nights=(day - timedelta(days=29), day)), "ok", {})  # fmt: skip
        [warning] = missed_runs(catalog, config, ["sha"], date(2027, 2, 15))
    assert "no completed sync covered the night 2026-12-31" in warning
    assert "--days 47" in warning


def test_a_run_in_the_afternoon_covers_the_night_before(tmp_path: Path) -> None:
    """The night before an afternoon run is over: it is covered, and a nightly job never warns."""
    config = _one_hop_config(tmp_path)
    with Catalog(config.catalog_path) as catalog:
        for hour in (13, 8):
            for day in window_dates(date(2027, 1, 1), 32):
                started = datetime.combine(day, datetime.min.time()).timestamp() + hour * 3600
                catalog.finish_run(catalog.start_run("instruments:suth", "sha", now=started,
                                                     nights=(day - timedelta(days=29), day)), "ok", {})  # fmt: skip
            assert missed_runs(catalog, config, ["sha"], date(2027, 1, 2)) == []  # the nightly job never warns
        [warning] = missed_runs(catalog, config, ["sha"], date(2027, 2, 15))
    assert "no completed sync covered the night 2027-01-01" in warning  # the 13:00 run covered 31 December


def test_one_old_night_synced_by_hand_is_no_gap_in_the_nightly_history(tmp_path: Path) -> None:
    """Found in review: after `obsflow sync -d 2016-09-07` (docs/transfer.md's own example) beside a
    nightly job that never missed a night, every later run warned that no sync covered 2016-09-08
    and asked for a sync of ten years: a night chosen by hand starts no history, it only fills holes."""
    config, today = _one_hop_config(tmp_path), date(2026, 12, 2)
    with Catalog(config.catalog_path) as catalog:
        for days_ago in range(60, 0, -1):
            _ran(catalog, today - timedelta(days=days_ago))
        _ran(catalog, today - timedelta(days=20), nights=(date(2016, 9, 7), date(2016, 9, 7)))
        assert missed_runs(catalog, config, ["sha"], today) == []
        one_night_only = Catalog(tmp_path / "other.sqlite")
        _ran(one_night_only, date(2026, 11, 1), nights=(date(2016, 9, 7), date(2016, 9, 7)))
        assert missed_runs(one_night_only, config, ["sha"], today) == []  # as never synced: the next run covers its window
        one_night_only.close()


def test_a_gap_longer_than_the_longest_window_asks_for_a_days_the_command_takes(tmp_path: Path) -> None:
    """Found by the documentation audit: the warning asked for `--days 3738`, which `--days` refuses
    (1..3660)."""
    config, today = _one_hop_config(tmp_path), date(2026, 12, 2)
    with Catalog(config.catalog_path) as catalog:
        _ran(catalog, date(2016, 9, 8))  # the nightly job, then nothing for ten years
        [warning] = missed_runs(catalog, config, ["sha"], today)
    assert "no completed sync covered the night 2016-09-08" in warning
    days = int(warning.split("--days ")[1].split("`")[0])
    assert days == MAX_WINDOW_DAYS  # the longest window the command takes, not (today - 2016-09-08) + 1
    assert "-d" in warning.split("--days ")[1]  # and how the nights older than that are synced


def test_first_uncovered_finds_the_first_night_no_run_covered() -> None:
    d = date(2026, 11, 1)
    nights = lambda a, b, window=True: Covered(d + timedelta(days=a), d + timedelta(days=b), window)
    assert first_uncovered([], d) is None  # never synced
    assert first_uncovered([nights(0, 9), nights(10, 20)], d + timedelta(days=21)) is None  # back to back
    assert first_uncovered([nights(0, 9), nights(5, 20)], d + timedelta(days=21)) is None  # overlapping
    assert first_uncovered([nights(0, 9), nights(12, 20)], d + timedelta(days=21)) == d + timedelta(days=10)
    assert first_uncovered([nights(12, 20), nights(0, 9)], d + timedelta(days=30)) == d + timedelta(days=10)
    assert first_uncovered([nights(0, 9)], d + timedelta(days=10)) is None  # the window starts right after
    assert first_uncovered([nights(0, 9)], d + timedelta(days=12)) == d + timedelta(days=10)
    # nights chosen by hand (-d) fill holes, but the history starts at the first window run
    assert first_uncovered([nights(0, 0, window=False), nights(20, 29)], d + timedelta(days=30)) is None
    assert first_uncovered([nights(0, 0, window=False)], d + timedelta(days=30)) is None
    assert first_uncovered([nights(0, 9), nights(10, 11, window=False), nights(12, 20)], d + timedelta(days=21)) is None


@pytest.mark.parametrize("hop", ["instruments:suth"])
def test_dry_run_changes_nothing(site: Site, hop: str) -> None:
    report = run_sync(site.config, SyncRequest(hop=hop, dry_run=True, today=site.today))
    assert [len(o.copied) for o in report.outcomes] == [60, 60, 60]
    assert not any(site.suth.iterdir())


def test_many_files_go_in_parallel_streams_and_all_land_verified(tmp_path: Path, sshd) -> None:
    from obsflow.simulate.instrument import simulate_instruments
    from obsflow.transfer.hop import PARALLEL_MIN_FILES

    site = make_site(tmp_path, sshd, nights=1, frames=1)
    extra = simulate_instruments(site.inst, ["shd"], 3, site.today, frames=110, seed=9, image_size=8)
    assert len(extra.files) >= PARALLEL_MIN_FILES
    report = run_sync(site.config, SyncRequest(instrument="shd", days=3, today=site.today))
    assert report.exit_code == 0
    assert [len(o.copied) for o in report.outcomes] == [330, 330]
    with Catalog(site.config.catalog_path) as catalog:
        for path in extra.files:
            rel = str(path.relative_to(site.inst / "shd"))
            assert site.archive_file(site.cape, "shd", rel).read_bytes() == path.read_bytes()
            record = catalog.get("cape", "shd", rel)
            assert record is not None and record.xxh128 == digest(path) and record.verified


def test_parallel_streams_are_accepted_as_each_ends_and_a_failed_one_after_without_double_counting(
    tmp_path: Path, sshd
) -> None:
    """Each rsync stream that ends well is judged and recorded while the others still copy; a stream
    that fails (a planned file vanished: exit 23) is judged after all have ended, as before."""
    from obsflow.simulate.instrument import simulate_instruments
    from obsflow.transfer import hop

    site = make_site(tmp_path, sshd, nights=1, frames=1)
    extra = simulate_instruments(site.inst, ["shd"], 3, site.today, frames=110, seed=9, image_size=8)
    gone = sorted(extra.files)[0]
    gone_rel = str(gone.relative_to(site.inst / "shd"))
    accepted_early: list[int] = []
    real_record = hop._record

    def recording(job, catalog, planned, good, outcome) -> None:
        accepted_early.append(len(planned))
        real_record(job, catalog, planned, good, outcome)

    def remove(plan: HopPlan) -> None:
        if gone_rel in plan.copy:
            gone.unlink()  # rsync cannot find it: its stream ends with exit 23

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hop, "_record", recording)
        report = run_sync(site.config, SyncRequest(instrument="shd", hop="instruments:suth", days=3,
                                                   today=site.today), before_copy=remove)  # fmt: skip
    (outcome,) = report.outcomes
    # the two streams that ended well, each on its own, then what was left: the failed stream's files
    assert accepted_early == [110] * hop.PARALLEL_STREAMS
    assert sorted(outcome.copied) == sorted(set(outcome.copied)) and len(outcome.copied) == 329
    assert gone_rel not in outcome.copied
    assert outcome.errors == [e for e in outcome.errors if e.startswith(f"{gone_rel}: not copied")]
    assert len(outcome.errors) == 1
    with Catalog(site.config.catalog_path) as catalog:
        verified = [p for p in extra.files if p != gone
                    and (r := catalog.get("suth", "shd", str(p.relative_to(site.inst / "shd")))) and r.verified]  # fmt: skip
        assert len(verified) == 329


def _frame_set_ahead(tmp_path: Path) -> tuple[Path, float, Path]:
    """(frame, its time, where suth's copy of it goes): b"header" in tonight's folder of cam, dated two
    days ahead by the clock of the NFS server it lies on."""
    night = f"{date.today():%Y}/{date.today():%m%d}"
    (tmp_path / "cam" / night).mkdir(parents=True)
    frame = tmp_path / "cam" / night / "CAM_0001.fits"
    frame.write_bytes(b"header")
    ahead = time.time() + 2 * 86400
    os.utime(frame, (ahead, ahead))
    (tmp_path / "suth").mkdir(exist_ok=True)
    return frame, ahead, tmp_path / "suth" / "cam" / night / "CAM_0001.fits"


def _cam_config(tmp_path: Path, settle_s: float) -> Path:
    """The config of one hop, cam -> suth (both local), written (again) with ``settle_s``."""
    config_path = tmp_path / "obsflow.toml"
    config_path.write_text(
        f'state_dir = "{tmp_path / "state"}"\nsettle_seconds = {settle_s}\n[instruments.cam]\nsource = "{tmp_path / "cam"}"\n'
        f'path = "cam"\n[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    return config_path


def test_a_file_set_far_ahead_that_changes_soon_after_its_listing_is_not_kept(tmp_path: Path) -> None:
    """A file more than a day ahead of its host's clock counts as settled (transfer.plan.CLOCK_AHEAD_S),
    so its time cannot say how long it has rested: a writer on an NFS server whose clock runs days
    ahead stamps every write so.  The second listing after the copy was all that guarded it, and it
    ran at once: a writer that paused a moment had its partial file kept under the final name (and
    reported as a conflict ever after).  It must have stayed unchanged for the settle time, watched
    (before its copy: see the test below)."""
    frame, ahead, copy = _frame_set_ahead(tmp_path)
    config_path = _cam_config(tmp_path, settle_s=3)
    writers = []

    def write_on_after_a_pause() -> None:
        time.sleep(0.5)  # the exposure ends; the camera writes its data
        with open(frame, "ab") as handle:
            handle.write(b"data")
        os.utime(frame, (ahead + 1, ahead + 1))

    def start_writer(plan: HopPlan) -> None:
        writers.append(threading.Thread(target=write_on_after_a_pause))
        writers[-1].start()

    report = run_sync(load_config(config_path), SyncRequest(), before_copy=start_writer)
    for writer in writers:
        writer.join()
    (outcome,) = report.outcomes
    assert outcome.in_flight == [f"{date.today():%Y}/{date.today():%m%d}/CAM_0001.fits"] and outcome.copied == []
    assert not copy.exists()
    report = run_sync(load_config(config_path), SyncRequest())  # the writer is done: copied whole
    assert report.exit_code == 0 and copy.read_bytes() == b"headerdata"


def test_a_run_stopped_while_it_waits_on_a_file_set_far_ahead_leaves_no_copy_of_it(tmp_path: Path) -> None:
    """The wait for a file set more than a day ahead (seen unchanged for the settle time) came after its
    copy, which lay under its final name all that while: a run stopped then (cron's timeout, a shutdown)
    left it there unaccepted, and once its writer wrote on, it was a conflict every night."""
    frame, ahead, copy = _frame_set_ahead(tmp_path)
    config_path = _cam_config(tmp_path, settle_s=60)
    command = [str(Path(sys.executable).parent / "obsflow"), "sync", "-c", str(config_path)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 5  # listed and waiting long before this
    while not copy.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run did not wait"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=5) != 0
    assert not copy.exists()  # nothing unaccepted under the final name
    with open(frame, "ab") as handle:  # the writer goes on
        handle.write(b"data")
    os.utime(frame, (ahead + 1, ahead + 1))
    _cam_config(tmp_path, settle_s=1)
    report = run_sync(load_config(config_path), SyncRequest())
    assert report.exit_code == 0 and copy.read_bytes() == b"headerdata"


def test_a_run_that_crosses_midnight_keeps_the_day_it_started_on(tmp_path: Path, monkeypatch) -> None:
    """Found by review: the run's day was the local date asked anew at every use (the window, the
    missed-runs check, each hop's window of modification times), so in a run started just before
    midnight the hops ran after it with the old night's window closed at that midnight: a product
    modified after midnight (the session still observing) was copied by neither hop."""
    import obsflow.transfer.sync as sync_module

    started_on, real_today = date.today() - timedelta(days=1), date.today()
    calls: list[date] = []

    class Clock(date):
        @classmethod
        def today(cls) -> date:  # the first look is before midnight, every later one after it
            calls.append(started_on if not calls else real_today)
            return calls[-1]

    monkeypatch.setattr(sync_module, "date", Clock)
    product = tmp_path / "products" / "PROJ" / "PROJ.fits"
    product.parent.mkdir(parents=True)
    product.write_bytes(b"x" * 2880)
    os.utime(product, (time.time() - 600, time.time() - 600))  # settled, modified "after midnight"
    for archive in ("suth", "cape"):
        (tmp_path / archive).mkdir()
    config, problems = parse_config(
        f'state_dir = "{tmp_path}"\n[instruments.gbt]\nsource = "{tmp_path / "products"}"\nlayout = "*"\n'
        f'path = "gbt"\n[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[archives.cape]\n'
        f'location = "{tmp_path / "cape"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
        '[[hops]]\nfrom = "suth"\nto = "cape"\n'
    )  # fmt: skip
    assert problems == []
    report = run_sync(config, SyncRequest())
    assert report.dates[1] == started_on.isoformat()
    assert [len(o.copied) for o in report.outcomes] == [1, 1]
    assert (tmp_path / "cape" / "gbt" / "PROJ" / "PROJ.fits").is_file()


def test_a_file_rewritten_during_its_copy_under_its_old_time_is_not_kept(tmp_path: Path) -> None:
    """A copy counts only when the size rsync saw equals the listing's, not only its time: a file
    rewritten between listing and copy that kept its old mtime (``cp -p`` of a newer version, a
    camera's clock) must not be kept as the file that was listed."""
    night = f"{date.today():%Y}/{date.today():%m%d}"
    (tmp_path / "cam" / night).mkdir(parents=True)
    frame = tmp_path / "cam" / night / "CAM_0001.fits"
    frame.write_bytes(b"header")
    old = time.time() - 86400  # settled long ago: copied straight to its final name, not staged
    os.utime(frame, (old, old))
    (tmp_path / "suth").mkdir()
    copy = tmp_path / "suth" / "cam" / night / "CAM_0001.fits"
    config_path = _cam_config(tmp_path, settle_s=120)
    rel = f"{night}/CAM_0001.fits"

    def rewrite_under_its_old_time(plan: HopPlan) -> None:
        if rel in plan.copy:
            listed = frame.stat()
            with open(frame, "ab") as handle:
                handle.write(b"data")
            os.utime(frame, ns=(listed.st_atime_ns, listed.st_mtime_ns))

    report = run_sync(load_config(config_path), SyncRequest(), before_copy=rewrite_under_its_old_time)
    (outcome,) = report.outcomes
    assert outcome.in_flight == [rel] and outcome.copied == []
    assert not copy.exists() and report.exit_code == 1
    report = run_sync(load_config(config_path), SyncRequest())  # unchanged since: copied as it is now
    assert report.exit_code == 0 and copy.read_bytes() == b"headerdata"


# ---- the catalog forgets old runs, but not what the missed-runs check needs ------------------------

HOPS = ("instruments:suth", "suth:cape")


def _two_hop_config(tmp_path: Path, name: str) -> Config:
    text = (f'state_dir = "{tmp_path / name}"\nkeep_catalog_days = 400\n'
            f'[instruments.sha]\nsource = "{tmp_path}/sha"\nlayout = "{{yyyy}}/{{mmdd}}"\npath = "sha"\n'
            f'[archives.suth]\nlocation = "{tmp_path}/suth"\n[archives.cape]\nlocation = "{tmp_path}/cape"\n'
            '[[hops]]\nfrom = "instruments"\nto = "suth"\n[[hops]]\nfrom = "suth"\nto = "cape"\n')  # fmt: skip
    config, problems = parse_config(text)
    assert problems == [] and config is not None
    return config


def _run_at(catalog: Catalog, hop: str, day: date, hour: int, status: str, nights: tuple[date, date] | None,
            dry_run: bool = False, instrument: str = "sha") -> None:  # fmt: skip
    started = datetime.combine(day, datetime.min.time()).timestamp() + hour * 3600
    run = catalog.start_run(hop, instrument, dry_run=dry_run, now=started, nights=nights)
    catalog.finish_run(run, status, {})


def _three_years_of_runs(catalog: Catalog, first: date) -> date:
    """The nightly job (at 01:00, 08:00 or 13:00; some runs failed, some left files to a person) with two
    stops, nights synced by hand, a --days run, dry runs, a run from before runs kept their nights and an
    instrument no longer configured; returns the last day."""
    import random

    rng = random.Random(7)
    _run_at(catalog, HOPS[0], first - timedelta(days=3), 13, "ok", None)  # before runs kept their nights
    _run_at(catalog, HOPS[0], first - timedelta(days=900), 13, "ok", (date(2020, 1, 5),) * 2)  # -d, long ago
    for offset in range(1000):
        day = first + timedelta(days=offset)
        if 200 <= offset < 215 or 300 <= offset < 345:  # the nightly job stopped twice
            continue
        status = rng.choice(["ok", "ok", "ok", "incomplete", "failed"])
        for hop in HOPS:
            _run_at(catalog, hop, day, rng.choice([1, 8, 13]), status, (day - timedelta(days=29), day))
            _run_at(catalog, hop, day, 14, "ok", (day - timedelta(days=29), day), dry_run=True)
        _run_at(catalog, HOPS[0], day, 9, "ok", (day - timedelta(days=29), day), instrument="retired")
    day = first + timedelta(days=330)
    _run_at(catalog, HOPS[0], day, 15, "ok", (first + timedelta(days=305),) * 2)  # -d, in the second stop
    _run_at(catalog, HOPS[1], day, 15, "ok", (day - timedelta(days=44), day))  # --days 45 on the second hop
    return first + timedelta(days=999)


def _warnings(catalog: Catalog, config: Config, days: list[date]) -> list[list[str]]:
    return [missed_runs(catalog, config, ["sha"], day) for day in days]


def test_forgetting_old_runs_leaves_every_missed_runs_warning_as_it_was(tmp_path: Path) -> None:
    """The missed-runs check reads the whole history of completed runs: the first night a window run
    covered, and every night covered since.  After a prune its warnings and suggested --days are the same,
    on the day of the prune, on later days, and after later runs (one filling the old gap by hand)."""
    from obsflow.transfer.sync import prune_catalog

    pruned_config, kept_config = _two_hop_config(tmp_path, "pruned"), _two_hop_config(tmp_path, "kept")
    with Catalog(pruned_config.catalog_path) as pruned, Catalog(kept_config.catalog_path) as kept:
        first = date(2023, 1, 2)
        last = _three_years_of_runs(pruned, first)
        _three_years_of_runs(kept, first)
        days = [last, last + timedelta(days=1), last + timedelta(days=40), last + timedelta(days=700)]
        before = _warnings(pruned, pruned_config, days)
        # the second stop, older than the nights the catalog keeps: the whole history counts
        assert all(len(w) == 1 and "no completed sync covered the night 2023-10-27" in w[0] for w in before)
        assert "--days 742" in before[2][0] and date(2023, 10, 27) < last - timedelta(days=400)
        runs_before = len(pruned.runs(limit=None))
        forgot = prune_catalog(pruned, pruned_config, last)
        assert forgot.runs > runs_before * 0.5  # most of three years of runs went
        assert _warnings(pruned, pruned_config, days) == before
        back, handed = last + timedelta(days=51), first + timedelta(days=305)  # the night synced by hand before
        for catalog in (pruned, kept):  # the old gap synced by hand (but the night that was), then the nightly job
            for hop, nights in ((HOPS[0], (first + timedelta(days=290), handed - timedelta(days=1))),
                                (HOPS[0], (handed + timedelta(days=1), first + timedelta(days=350))),
                                (HOPS[1], (first + timedelta(days=290), first + timedelta(days=350)))):  # fmt: skip
                _run_at(catalog, hop, back - timedelta(days=1), 15, "ok", nights)
            for hop in HOPS:
                _run_at(catalog, hop, back, 13, "ok", (last - timedelta(days=5), back))
        later = [back, back + timedelta(days=39), back + timedelta(days=900)]
        after = _warnings(pruned, pruned_config, later)
        assert after == _warnings(kept, kept_config, later)
        assert after[0] == [] and f"the night {back}" in after[1][0] and "--days 40" in after[1][0]


def test_forgetting_old_runs_keeps_the_window_run_the_history_starts_with(tmp_path: Path) -> None:
    """The history starts at the first night a window run covered; nights chosen by hand fill holes but
    start none.  A hand-chosen range holding that run's nights does not make it redundant."""
    from obsflow.transfer.sync import prune_catalog

    config, start = _two_hop_config(tmp_path, "state"), date(2024, 1, 10)
    with Catalog(config.catalog_path) as catalog:
        _run_at(catalog, HOPS[0], start, 13, "ok", (start - timedelta(days=29), start))  # the nightly job, once
        _run_at(catalog, HOPS[0], start + timedelta(days=30), 13, "ok",  # `-d` with `--days 61`
                (start - timedelta(days=40), start + timedelta(days=20)))
        for day in window_dates(start + timedelta(days=70), 11):  # the nightly job again
            _run_at(catalog, HOPS[0], day, 13, "ok", (day - timedelta(days=29), day))
        today = start + timedelta(days=500)
        [before] = missed_runs(catalog, config, ["sha"], today)
        assert f"the night {start + timedelta(days=21)}" in before
        assert prune_catalog(catalog, config, today).runs == 9  # the nightly job's but its first and last
        assert missed_runs(catalog, config, ["sha"], today) == [before]


def test_a_real_sync_prunes_the_catalog_after_its_hops_and_a_dry_run_does_not(site: Site, caplog) -> None:
    import logging

    from obsflow.transfer.listing import FileStat

    old_night = site.today - timedelta(days=401)  # keep_catalog_days: 400 by default
    old = datetime.combine(old_night, datetime.min.time()).timestamp() + 13 * 3600
    with Catalog(site.config.catalog_path) as catalog:
        kept_night = site.today - timedelta(days=400)
        for host in ("instruments", "suth", "cape"):
            catalog.observe(host, "sha", {f"{old_night:%Y/%m%d}/SHA_old.fits": FileStat(10, old),
                                          f"{kept_night:%Y/%m%d}/SHA_kept.fits": FileStat(10, old)})
        for started in (old, old + 1):
            catalog.finish_run(catalog.start_run("instruments:suth", "sha", now=started), "failed", {})
            catalog.record_verification(started=started, ended=started, first_night="x", last_night="y",
                                        checksum=False, status="ok", counts={})  # fmt: skip
    caplog.set_level(logging.INFO, logger="obsflow.transfer.sync")
    assert run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", dry_run=True,
                                             today=site.today)).exit_code == 0  # fmt: skip
    with Catalog(site.config.catalog_path) as catalog:
        assert len(catalog.files("cape", "sha")) == 2 and len(catalog.runs(since=old - 1)) == 2
    assert "catalog: forgot" not in caplog.text
    assert run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", today=site.today)).exit_code == 0
    with Catalog(site.config.catalog_path) as catalog:
        assert [record.path.split("/")[-1] for record in catalog.files("cape", "sha")] == ["SHA_kept.fits"]
        assert [run.started for run in catalog.runs(limit=None) if run.started < old + 10] == []
        last = catalog.last_verification()
        assert last is not None and last.started == old + 1  # the last one is kept however old
        assert len(catalog.files("suth", "sha")) == 60 + 1  # the window's copies, and the kept old night's
    [line] = [line for line in caplog.messages if line.startswith("catalog: forgot")]
    assert line == (f"catalog: forgot 3 file rows, 2 runs and 1 verifications older than "
                    f"{site.today - timedelta(days=400)} (keep_catalog_days 400)")


def test_a_catch_up_longer_than_keep_catalog_days_keeps_what_it_copied_and_checked(
    tmp_path: Path, sshd, caplog
) -> None:
    """Found by review: ``--days`` past keep_catalog_days (the catch-up the missed-runs check suggests
    after a long stop) recorded the nights before the kept ones, then its own prune forgot them: their
    copied and verified marks were gone at once, and the next catch-up listed and hashed them all again."""
    import logging

    from obsflow.web.status import sync_status

    site = make_site(tmp_path, sshd, nights=100, frames=1, extra="keep_catalog_days = 92")
    oldest = site.today - timedelta(days=99)
    folder = f"{oldest:%Y/%m%d}"
    caplog.set_level(logging.INFO, logger="obsflow.transfer.sync")

    def old_rows() -> dict[str, list[tuple[object, ...]]]:
        with Catalog(site.config.catalog_path, read_only=True) as catalog:
            return {host: [(r.path, r.xxh128, r.first_seen, r.copied, r.verified)
                           for r in catalog.files(host, "sha", prefix=folder + "/")]
                    for host in ("instruments", "suth", "cape")}  # fmt: skip

    catch_up = SyncRequest(instrument="sha", days=100, today=site.today)
    first = run_sync(site.config, catch_up)
    assert first.exit_code == 0 and [len(o.copied) for o in first.outcomes] == [100, 100]
    rows = old_rows()
    assert all(len(rows[host]) == 1 for host in rows)
    assert all(copied and verified for host in ("suth", "cape") for _, _, _, copied, verified in rows[host])
    assert (f"the window reaches 7 nights past keep_catalog_days (92): the catalog keeps its nights back to "
            f"{oldest} as long as it keeps this run") in caplog.messages
    nightly = run_sync(site.config, SyncRequest(instrument="sha", today=site.today))
    assert nightly.exit_code == 0 and nightly.warnings == []  # the missed-runs check: nothing missed
    again = run_sync(site.config, catch_up)  # the catch-up run again: nothing copied, nothing re-recorded
    assert again.exit_code == 0 and [o.copied for o in again.outcomes] == [[], []]
    assert old_rows() == rows
    status = sync_status(site.config)  # the status page: last runs and the window's holdings as usual
    assert status["error"] is None and status["has_runs"]
    assert [entry["last_run"]["status"] for hop in status["hops"] for entry in hop["instruments"]
            if entry["instrument"] == "sha"] == ["ok", "ok"]  # fmt: skip
    [sha] = [held for held in status["holdings"] if held["instrument"] == "sha"]
    assert [sha["hosts"][host]["files"] for host in ("instruments", "suth", "cape")] == [30, 30, 30]


def _products_config(tmp_path: Path) -> Config:
    """The filler's products (undated, growing) from a local folder to two local archives."""
    for archive in ("suth", "cape"):
        (tmp_path / archive).mkdir(exist_ok=True)
    config, problems = parse_config(
        f'state_dir = "{tmp_path}"\nsettle_seconds = 1\n[instruments.gbt]\nsource = "{tmp_path / "products"}"\n'
        f'layout = "*"\npath = "gbt"\ngrows = true\n[archives.suth]\nlocation = "{tmp_path / "suth"}"\n'
        f'[archives.cape]\nlocation = "{tmp_path / "cape"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
        '[[hops]]\nfrom = "suth"\nto = "cape"\n'
    )  # fmt: skip
    assert problems == [] and config is not None
    return config


def test_an_idle_product_is_not_forgotten_by_every_run_and_still_replaces_its_copy_when_it_grows(
    tmp_path: Path, caplog
) -> None:
    """Found by review: the sync lists an undated tree whole and records every file it lists, so a
    prune that forgot an idle product's rows (last modified before the kept nights) saw them come back
    at the next run and forgot them again, every night (a write of every idle product on every host,
    and a "forgot" line, for ever); and the archive copy's "a sync made this copy" went with them, so
    once that product grew again the sync reported a conflict instead of replacing the copy."""
    import logging

    config = _products_config(tmp_path)
    product = tmp_path / "products" / "AGBT16B_001" / "AGBT16B_001.raw.vegas.A.fits"
    product.parent.mkdir(parents=True)
    product.write_bytes(b"x" * 2880)
    idle = time.time() - 500 * 86400  # last written 500 nights ago: older than keep_catalog_days (400)
    os.utime(product, (idle, idle))
    caplog.set_level(logging.INFO, logger="obsflow.transfer.sync")
    assert run_sync(config, SyncRequest(days=600)).exit_code == 0  # an archive's catch-up: copied to both
    caplog.clear()
    assert run_sync(config, SyncRequest()).exit_code == 0  # the next night: nothing new
    assert not [line for line in caplog.messages if line.startswith("catalog: forgot")]
    with open(product, "ab") as handle:  # the project observes again: its file grows
        handle.write(b"y" * 2880)
    os.utime(product, (time.time() - 600, time.time() - 600))
    report = run_sync(config, SyncRequest())
    assert [o.conflicts for o in report.outcomes] == [[], []]
    assert report.exit_code == 0
    for archive in ("suth", "cape"):
        assert (tmp_path / archive / "gbt" / "AGBT16B_001" / product.name).read_bytes() == product.read_bytes()


def test_the_last_hops_listings_are_freed_by_the_exit_not_before_the_report(tmp_path: Path) -> None:
    """Freeing a no-op's 10,000s of listed objects took 3-4 ms between the last hop and the report: the
    last hop's listings stay until the process exits; each hop's go when the next hop's replace them
    (memory stays one hop's worth)."""
    import weakref

    from obsflow.transfer import hop

    night = tmp_path / "sha" / f"{date.today():%Y}" / f"{date.today():%m%d}"
    night.mkdir(parents=True)
    (night / "SHA_1.fits").write_bytes(b"frame")
    old = time.time() - 86400
    os.utime(night / "SHA_1.fits", (old, old))
    (tmp_path / "suth").mkdir()
    (tmp_path / "cape").mkdir()
    listed: list[tuple[str, weakref.ref]] = []
    real_list_files = hop.list_files

    def list_files(where, *args, **kwargs):
        listing = real_list_files(where, *args, **kwargs)
        listed.append((str(where), weakref.ref(listing)))
        return listing

    config = _two_hop_config(tmp_path, "state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hop, "list_files", list_files)
        report = run_sync(config, SyncRequest())
    assert report.exit_code == 0 and [len(o.copied) for o in report.outcomes] == [1, 1]
    alive = [where for where, ref in listed if ref() is not None]
    assert len(listed) == 4 and alive == [str(tmp_path / "suth" / "sha"), str(tmp_path / "cape" / "sha")]
