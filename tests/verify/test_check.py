"""verify() against real trees behind the loopback OpenSSH server: exactly the damaged files are named."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from obsflow.transfer.catalog import Catalog
from obsflow.transfer.listing import xxh128_file
from obsflow.verify.check import plan_pairs, verify
from obsflow.verify.compare import SizeDiff
from obsflow.verify.report import render_text, report_dict
from tests.verify.reading import parse_text
from tests.verify.scenario import BEFORE_PERIOD, PERIOD, build_world
from tests.verify.trees import alter, night_folder, truncate


def by_folder(report):
    return {(f.hop, f.instrument): f for f in report.folders}


def test_all_present_and_equal(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    config = world.config
    report = verify(config, PERIOD, plan_pairs(config, PERIOD), checksum=True)
    assert report.exit_code == 0, report.folders
    total = sum(len(paths) for paths in world.files.values())
    assert report.counts == {
        "missing": 0, "size_differs": 0, "hash_differs": 0, "not_checked": 0, "matched": 2 * total, "in_flight": 0,
        "refused": 0, "locked": 0, "locked_gone": 0, "grown": 0,
    }  # fmt: skip
    assert report.subject.startswith("OK: ")


def test_deleted_truncated_altered_files_on_each_hop(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    sha, shd = world.files["sha"], world.files["shd"]
    # Hop 1 (instruments -> suth), sha: one deleted, one truncated, one altered on suth.
    (world.suth("sha") / sha[0]).unlink()
    truncate(world.suth("sha") / sha[5])
    alter(world.suth("sha") / sha[9])
    # Hop 2 (suth -> cape), shd: one deleted, one truncated, one altered on cape.
    (world.cape("shd") / shd[1]).unlink()
    truncate(world.cape("shd") / shd[6])
    alter(world.cape("shd") / shd[11])
    # Not data: rsync temp files and partials beside the deleted file; an old night outside the period.
    folder = world.suth("sha") / night_folder(PERIOD.first.replace(day=5))
    (folder / f".{sha[0].rsplit('/', 1)[1]}.Ab12Cd").write_bytes(b"partial")
    (folder / ".rsync-partial").mkdir()
    (folder / ".rsync-partial" / sha[0].rsplit("/", 1)[1]).write_bytes(b"partial")
    for old in (world.suth("sha") / night_folder(BEFORE_PERIOD)).iterdir():
        old.unlink()
    # Still being written on the instrument: in flight, not missing.
    fresh = world.inst("shd") / night_folder(PERIOD.last) / "SHD_fresh.fits"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"x" * 2880)

    config = world.config
    report = verify(config, PERIOD, plan_pairs(config, PERIOD), checksum=True)
    found = by_folder(report)

    hop1_sha = found[("instruments:suth", "sha")]
    assert hop1_sha.missing == (sha[0],)
    assert hop1_sha.size_differs == (SizeDiff(sha[5], *_sizes(world.inst("sha") / sha[5], world.suth("sha") / sha[5])),)
    assert [d.path for d in hop1_sha.hash_differs] == [sha[9]]
    assert hop1_sha.hash_differs[0].xxh128_a == xxh128_file(world.inst("sha") / sha[9])
    assert hop1_sha.hash_differs[0].xxh128_b == xxh128_file(world.suth("sha") / sha[9])
    # The damage on suth shows on hop 2 as well (suth is A there), except the deleted file.
    hop2_sha = found[("suth:cape", "sha")]
    assert (hop2_sha.missing, [d.path for d in hop2_sha.size_differs]) == ((), [sha[5]])
    assert [d.path for d in hop2_sha.hash_differs] == [sha[9]]

    hop1_shd = found[("instruments:suth", "shd")]
    assert (hop1_shd.missing, hop1_shd.size_differs, hop1_shd.hash_differs) == ((), (), ())
    assert hop1_shd.in_flight == (f"{night_folder(PERIOD.last)}/SHD_fresh.fits",)
    hop2_shd = found[("suth:cape", "shd")]
    assert hop2_shd.missing == (shd[1],)
    assert [d.path for d in hop2_shd.size_differs] == [shd[6]]
    assert [d.path for d in hop2_shd.hash_differs] == [shd[11]]

    assert report.counts["missing"] == 2 and report.counts["not_checked"] == 0
    assert report.exit_code == 1
    assert report.subject.startswith("FAILED: 2 missing, 3 size differs, 3 checksum differs, 0 not checked")


def _sizes(a, b):
    return a.stat().st_size, b.stat().st_size


def test_without_checksum_contents_are_not_compared(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    alter(world.cape("sha") / world.files["sha"][2])
    config = world.config
    report = verify(config, PERIOD, plan_pairs(config, PERIOD, hops=["suth:cape"], instruments=["sha"]))
    (folder,) = report.folders
    assert (folder.hop, folder.instrument, folder.hash_checked) == ("suth:cape", "sha", False)
    assert folder.hash_differs == () and report.exit_code == 0


def test_a_size_only_run_is_kept_in_the_configs_catalog(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    (world.cape("sha") / world.files["sha"][0]).unlink()
    config = world.config
    report = verify(config, PERIOD, plan_pairs(config, PERIOD, hops=["suth:cape"], instruments=["sha"]))
    with Catalog(config.catalog_path) as catalog:
        run = catalog.last_verification()
    assert run is not None and (run.checksum, run.status, run.missing) == (False, "differences", 1)
    assert (run.first_night, run.last_night) == (PERIOD.first.isoformat(), PERIOD.last.isoformat())
    assert json.loads(run.report)["folders"][0]["missing"] == [world.files["sha"][0]]
    assert report.exit_code == 1


def test_unreachable_host_and_missing_archive_are_not_checked(sshd, tmp_path):
    world = build_world(tmp_path, sshd, extra=f'[archives.vault]\nlocation = "down.test:{tmp_path}/vault"\n')
    with open(world.config_path, "a") as handle:
        handle.write('[[hops]]\nfrom = "cape"\nto = "vault"\n')
    (tmp_path / "cape").rename(tmp_path / "cape-disk")  # the archive's disk not mounted: its folder gone
    config = world.config
    started = time.monotonic()
    report = verify(config, PERIOD, plan_pairs(config, PERIOD))
    assert time.monotonic() - started < 30
    found = by_folder(report)
    missing_cape = f"archive folder missing (disk not mounted?) (cape.test:{tmp_path}/cape)"
    for name in ("sha", "shd"):
        vault = found[("cape:vault", name)]
        assert not vault.is_checked and "down.test" in vault.error and "cannot reach host" in vault.error
        assert missing_cape in vault.error  # both of its problems are named
        assert vault.missing == ()
        assert found[("suth:cape", name)].error == missing_cape
        assert found[("instruments:suth", name)].status == "ok"
    assert report.counts["not_checked"] == 4
    assert report.exit_code == 2
    assert report.subject.startswith("FAILED: 0 missing, 0 size differs, 4 not checked")


def test_an_instruments_folder_not_yet_in_an_archive_is_all_missing_there(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    shutil.rmtree(world.cape("shd"))  # cape is there; nothing of shd copied to it yet
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["suth:cape"]))
    found = by_folder(report)
    assert found[("suth:cape", "shd")].is_checked
    assert sorted(found[("suth:cape", "shd")].missing) == sorted(world.files["shd"])
    assert found[("suth:cape", "sha")].status == "ok"
    assert report.exit_code == 1


def test_an_archive_without_its_required_marker_is_not_checked(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    text = world.config_path.read_text().replace('\nlocation = "', '\nrequire_marker = true\nlocation = "')
    world.config_path.write_text(text)
    (tmp_path / "suth" / ".obsflow-archive").write_text("")
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["suth:cape"], instruments=["sha"]))
    (folder,) = report.folders
    marker = tmp_path / "cape" / ".obsflow-archive"
    assert folder.error == f"archive marker file {marker} missing (disk not mounted?) (cape.test:{world.cape('sha')})"
    assert report.exit_code == 2
    marker.write_text("")
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["suth:cape"], instruments=["sha"]))
    assert report.exit_code == 0


def test_a_file_copied_or_rewritten_while_checking_is_not_an_alarm(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    sha = world.files["sha"]
    for path in (sha[3], sha[4], sha[7]):
        (world.suth("sha") / path).unlink()
    steps = []

    def meanwhile(step: str) -> None:
        steps.append(step)
        if step.startswith("looking again"):
            # The sync copies one file and the instrument rewrites another while verify runs.
            shutil.copy2(world.inst("sha") / sha[3], world.suth("sha") / sha[3])
            with open(world.inst("sha") / sha[4], "ab") as handle:
                handle.write(b"more")

    config = world.config
    pairs = plan_pairs(config, PERIOD, hops=["instruments:suth"], instruments=["sha"])
    report = verify(config, PERIOD, pairs, progress=meanwhile)
    (folder,) = report.folders
    assert any(step.startswith("looking again") for step in steps)
    assert folder.missing == (sha[7],)
    assert folder.in_flight == (sha[3], sha[4])
    assert report.exit_code == 1


def test_checksum_hashes_come_from_the_catalog_while_size_and_mtime_hold(sshd, tmp_path):
    world = build_world(tmp_path, sshd)
    config = world.config
    pairs = plan_pairs(config, PERIOD, hops=["suth:cape"], instruments=["sha"])
    path = world.files["sha"][2]
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert verify(config, PERIOD, pairs, checksum=True, catalog=catalog).exit_code == 0
        record = catalog.get("cape", "sha", path)
        assert record is not None and record.xxh128 == xxh128_file(world.cape("sha") / path)
        assert record.mtime == os.stat(world.cape("sha") / path).st_mtime
        assert record.verified is not None  # found equal to suth's copy
        run = catalog.last_verification()
        assert run is not None and (run.checksum, run.status, run.matched) == (True, "ok", len(world.files["sha"]))

        alter(world.cape("sha") / path, keep_mtime=True)  # bit rot: same size, same mtime
        assert verify(config, PERIOD, pairs, checksum=True, catalog=catalog).exit_code == 0  # trusted the catalog
        report = verify(config, PERIOD, pairs, checksum=True, catalog=catalog, rehash=True)
        assert [d.path for d in report.folders[0].hash_differs] == [path]
        rotted = catalog.get("cape", "sha", path)
        assert rotted is not None and rotted.xxh128 == xxh128_file(world.cape("sha") / path)
        assert rotted.verified is None  # no longer equal to the source
        assert json.loads(catalog.last_verification().report)["counts"]["hash_differs"] == 1

        alter(world.cape("sha") / world.files["sha"][3])  # an ordinary change moves the mtime: rehashed
        report = verify(config, PERIOD, pairs, checksum=True, catalog=catalog)
        assert [d.path for d in report.folders[0].hash_differs] == [path, world.files["sha"][3]]


def test_checksum_reads_only_the_periods_hashes_from_the_catalog(sshd, tmp_path, monkeypatch):
    """Years of nights in the catalog cost a --checksum run nothing: it reads the period's folders only."""
    world = build_world(tmp_path, sshd)
    config = world.config
    pairs = plan_pairs(config, PERIOD, hops=["suth:cape"], instruments=["sha"])
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert verify(config, PERIOD, pairs, checksum=True, catalog=catalog).exit_code == 0  # the period's hashes
        old = [(f"2019/{1 + n // 28:02d}{1 + n % 28:02d}/SHA_old.fits", 100, 1.5e9, "0" * 32) for n in range(300)]
        for host in ("suth", "cape"):
            catalog.record_hashes(host, "sha", old)
        read: list[str] = []
        stored = Catalog._stored

        def counted(self, *args):
            for row in stored(self, *args):
                read.append(row[0])
                yield row

        monkeypatch.setattr(Catalog, "_stored", counted)
        assert verify(config, PERIOD, pairs, checksum=True, catalog=catalog).exit_code == 0
    assert read, "the hashes came from the catalog"
    assert not [path for path in read if path.startswith("2019/")]


def test_unknown_hop_or_instrument_is_a_usage_error(sshd, tmp_path):
    from obsflow.errors import UsageError

    config = build_world(tmp_path, sshd, per_night=1).config
    with pytest.raises(UsageError, match="unknown hop 'suth:mars'"):
        plan_pairs(config, PERIOD, hops=["suth:mars"])
    with pytest.raises(UsageError, match="unknown instrument 'spupnic'"):
        plan_pairs(config, PERIOD, instruments=["spupnic"])


def test_a_dated_folder_linked_outside_the_root_is_refused_as_the_sync_refuses_it(sshd, tmp_path):
    world = build_world(tmp_path, sshd, per_night=1)
    night = night_folder(PERIOD.first.replace(day=5))
    elsewhere = tmp_path / "elsewhere"
    shutil.move(world.inst("sha") / night, elsewhere)  # the night's files now live outside the root ...
    os.symlink(elsewhere, world.inst("sha") / night)  # ... reached through a link the sync will not follow
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["instruments:suth"]))
    found = by_folder(report)
    sha = found[("instruments:suth", "sha")]
    assert [(r.path, r.reason) for r in sha.refused] == [(night, f"symlink to {elsewhere} (outside the root or absolute)")]
    assert sha.skipped == () and sha.status == "differences"
    assert found[("instruments:suth", "shd")].status == "ok"
    assert report.counts["refused"] == 1 and report.exit_code == 1
    assert report.subject.startswith("FAILED: 0 missing, 0 size differs, 0 not checked, 1 refused")
    section = parse_text(render_text(report))["sha: sha -> suth  (hop instruments:suth)"]
    assert section["ENTRIES ON SHA THAT THE SYNC REFUSES (NOT COPIED, FOR THE REASON GIVEN)"] == [
        f"{night}  (symlink to {elsewhere} (outside the root or absolute))"
    ]


def test_a_name_with_a_backslash_is_one_file_not_compared_under_checksum(sshd, tmp_path):
    world = build_world(tmp_path, sshd, per_night=1)
    night = night_folder(PERIOD.first.replace(day=5))
    odd = f"{night}/SHA_back\\slash.fits"
    for root in (world.inst("sha"), world.suth("sha")):
        (root / odd).write_bytes(b"x" * 2880)
        os.utime(root / odd, (time.time() - 86400,) * 2)
    alter(world.suth("sha") / world.files["sha"][0])  # the others are still compared
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["instruments:suth"]), checksum=True)
    sha = by_folder(report)[("instruments:suth", "sha")]
    assert sha.unhashed == (odd,) and sha.hash_error is None
    assert [d.path for d in sha.hash_differs] == [world.files["sha"][0]]
    assert by_folder(report)[("instruments:suth", "shd")].status == "ok"
    assert report.counts["not_checked"] == 1 and report.exit_code == 2


def test_a_folder_on_b_where_a_has_a_file_is_reported_missing_as_documented(sshd, tmp_path):
    world = build_world(tmp_path, sshd, per_night=1)
    path = world.files["sha"][0]
    (world.suth("sha") / path).unlink()
    (world.suth("sha") / path).mkdir()  # listings hold files, not folders
    report = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["instruments:suth"], instruments=["sha"]))
    (folder,) = report.folders
    assert (folder.missing, folder.size_differs) == ((path,), ())


def test_the_header_gives_each_instruments_own_settle_time(sshd, tmp_path):
    world = build_world(tmp_path, sshd, per_night=1)
    text = world.config_path.read_text().replace("[instruments.shd]\n", "[instruments.shd]\nsettle_seconds = 600\n")
    world.config_path.write_text(text)
    both = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["suth:cape"]))
    intro = render_text(both).splitlines()[2]
    assert intro == "files younger than their instrument's settle time (sha 60 s, shd 600 s), or changing while checked, are in flight, not alarms"
    assert report_dict(both)["settle_seconds_by_instrument"] == {"sha": 60, "shd": 600}
    shd = verify(world.config, PERIOD, plan_pairs(world.config, PERIOD, hops=["suth:cape"], instruments=["shd"]))
    assert render_text(shd).splitlines()[2].startswith("files younger than 600 s, or changing while checked")
    assert report_dict(shd)["settle_seconds"] == 600
