"""The online filler's SDFITS products ride the same two hops as the instruments' frames.

Real parts: the telescope simulator's raw scans, filled by the real filler into its GBT layout
(``<PROJ>/<PROJ>.raw.vegas/...``, flag links, locks, status file); the loopback sshd serves the
products host and the remote archive.  The products are an undated tree (``layout = "*"``): the
window picks files by modification time, and a project the filler is writing is locked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import socket
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

from obsflow.cli import main
from obsflow.config import Config, load_config
from obsflow.lock import LockInfo, held, lock_path
from obsflow.online import raw
from obsflow.online.fill import fill_scan
from obsflow.online.journal import Journal, undo_for
from obsflow.online.layout import OutputLayout
from obsflow.simulate.telescope import TelescopeSpec, simulate_project
from obsflow.transfer.listing import SUPERSEDED_VERSION
from obsflow.transfer.sync import SyncRequest, run_sync
from obsflow.verify.check import plan_pairs, verify
from obsflow.verify.period import months_period
from tests.fixtures.sshd import DOWN_ALIAS

FRESH, LOCKED, OLD = "AGBT26A_001_01", "AGBT26A_002_01", "AGBT25B_003_01"


def _filled(raw_root: Path, out: OutputLayout, project: str, scans: int = 2) -> list[raw.Scan]:
    spec = TelescopeSpec(project=project, scans=scans, channels=1024, integrations=2, procedure="Track", seed=3)
    simulate_project(spec, raw_root)
    done = raw.read_project(raw_root / project)
    for scan in done[:1]:
        fill_scan(scan, out)
    return done


def _products(root: Path, project: str) -> dict[str, bytes]:
    tree = root / project
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file() and
            not p.is_symlink() and p.suffix in (".fits", ".index")}  # fmt: skip


def _config(tmp_path: Path, sshd, out: Path, settle: str, locks: str | None = None) -> Path:
    locks = locks or f"instruments.test:{out / 'locks'}"
    suth, cape = tmp_path / "suth", tmp_path / "cape"
    suth.mkdir()
    cape.mkdir()
    path = tmp_path / "obsflow.toml"
    options = ", ".join(f'"{o}"' for o in sshd.ssh_options)
    path.write_text(
        f'window_days = 30\nsettle_seconds = 120\nstate_dir = "{tmp_path / "state"}"\n'
        f'locks = ["{locks}"]\n[ssh]\noptions = [{options}]\n'
        f'[instruments.gbt]\nsource = "instruments.test:{out}"\nlayout = "*"\npath = "gbt/sdfits"\n'
        f'patterns = ["*.fits", "*.index"]\n{settle}\n'
        f'[archives.suth]\nlocation = "{suth}"\n[archives.cape]\nlocation = "cape.test:{cape}"\n'
        '[[hops]]\nfrom = "instruments"\nto = "suth"\n[[hops]]\nfrom = "suth"\nto = "cape"\n'
    )
    return path


def test_filled_products_reach_both_archives_locked_and_old_projects_do_not(tmp_path: Path, sshd) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    raw_root = tmp_path / "gbtdata"
    fresh = _filled(raw_root, out, FRESH)
    _filled(raw_root, out, LOCKED)
    _filled(raw_root, out, OLD)
    long_ago = time.time() - 70 * 86400  # before the sync's window and verify's two months
    for path in (out.root / OLD).rglob("*"):
        os.utime(path, (long_ago, long_ago), follow_symlinks=False)
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0"))
    source_before = _products(out.root, FRESH)
    assert len(source_before) == 3  # bank file, its index, the combined index

    with held(out.locks_dir, LOCKED, purpose="a fill in progress"):
        report = run_sync(config, SyncRequest())
    suth, cape = tmp_path / "suth" / "gbt/sdfits", tmp_path / "cape" / "gbt/sdfits"
    assert _products(suth, FRESH) == _products(cape, FRESH) == source_before
    first_hop = report.outcomes[0]
    assert sorted(first_hop.copied) == sorted(source_before)  # no flags, locks, logs or status file
    assert sorted(first_hop.locked) == sorted(_products(out.root, LOCKED))
    assert not (suth / LOCKED).exists() and not (suth / OLD).exists()  # locked; older than the window
    assert report.exit_code == 1  # the locked project is left for later, and said so

    again = run_sync(config, SyncRequest())
    assert [o.copied for o in again.outcomes] == [sorted(_products(out.root, LOCKED))] * 2
    assert again.exit_code == 0

    # verify: every product of the two months is on both archives; then one goes missing at cape.
    period = months_period(["this", "last"], date.today())
    assert [r.missing for r in verify(config, period, plan_pairs(config, period), record=False).folders] == [(), ()]
    gone = min(_products(out.root, FRESH))
    (cape / gone).unlink()
    report = verify(config, period, plan_pairs(config, period), record=False)
    assert [(r.hop, r.missing) for r in report.folders] == [("instruments:suth", ()), ("suth:cape", (gone,))]

    # The next scan grows the project's files: the archive's copies now differ and are kept as they are.
    fill_scan(fresh[1], out)
    later = run_sync(config, SyncRequest(hop="instruments:suth"))
    assert sorted(later.outcomes[0].conflicts) == sorted(source_before)
    assert _products(suth, FRESH) == source_before
    assert later.exit_code == 1


def test_a_fill_that_starts_during_the_run_locks_its_project_for_the_hops_after(tmp_path: Path, sshd) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0"))
    taken: list[object] = []
    with contextlib.ExitStack() as fills:

        def fill_starts(plan) -> None:  # the filler takes the project's lock while hop 1 copies
            if not taken:
                taken.append(fills.enter_context(held(out.locks_dir, FRESH, purpose="a fill started meanwhile")))

        report = run_sync(config, SyncRequest(), before_copy=fill_starts)
    first, second = report.outcomes
    assert sorted(first.copied) == sorted(_products(out.root, FRESH))  # planned before the lock was taken
    assert second.copied == [] and sorted(second.locked) == sorted(_products(out.root, FRESH))
    assert not (tmp_path / "cape" / "gbt/sdfits" / FRESH).exists()


def test_filler_locks_that_cannot_be_read_stop_the_hops_they_guard(tmp_path: Path, sshd, capsys) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    path = _config(tmp_path, sshd, out.root, "settle_seconds = 0", locks=f"{DOWN_ALIAS}:{out.root / 'locks'}")
    assert main(["sync", "-c", str(path), "--json"]) == 2
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [h["copied_files"] for h in hops] == [[], []]
    assert all(h["failure"].startswith("cannot read the filler's locks") for h in hops), hops
    assert not (tmp_path / "suth" / "gbt/sdfits" / FRESH).exists()


def test_products_written_within_the_settle_time_wait(tmp_path: Path, sshd) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    config = load_config(_config(tmp_path, sshd, out.root, ""))  # the config's 120 s
    report = run_sync(config, SyncRequest(hop="instruments:suth"))
    assert sorted(report.outcomes[0].in_flight) == sorted(_products(out.root, FRESH))
    assert report.outcomes[0].copied == [] and report.exit_code == 1


def test_one_date_takes_the_products_modified_that_day(tmp_path: Path, sshd) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    _filled(tmp_path / "gbtdata", out, LOCKED)
    three_days_ago = time.time() - 3 * 86400
    for path in (out.root / LOCKED).rglob("*"):
        os.utime(path, (three_days_ago, three_days_ago), follow_symlinks=False)
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0"))
    day = date.fromtimestamp(three_days_ago)
    report = run_sync(config, SyncRequest(date=day, hop="instruments:suth"))
    assert sorted(report.outcomes[0].copied) == sorted(_products(out.root, LOCKED))
    assert report.exit_code == 0


def test_a_grown_product_replaces_our_own_copy_and_the_older_copy_is_kept(tmp_path: Path, sshd, capsys) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    scans = _filled(tmp_path / "gbtdata", out, FRESH, scans=3)
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0\ngrows = true"))
    suth, cape = tmp_path / "suth" / "gbt/sdfits", tmp_path / "cape" / "gbt/sdfits"
    assert run_sync(config, SyncRequest()).exit_code == 0
    first = _products(out.root, FRESH)

    time.sleep(1.1)  # the next fill's mtimes are whole seconds later
    fill_scan(scans[1], out)
    second = _products(out.root, FRESH)
    dry = run_sync(config, SyncRequest(dry_run=True))
    assert [sorted(o.updated) for o in dry.outcomes] == [sorted(second), []]  # hop 2 cannot know yet
    assert _products(suth, FRESH) == first
    assert main(["sync", "-c", str(config.path), "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [sorted(h["updated_files"]) for h in hops] == [sorted(second)] * 2
    assert [sorted(h["copied_files"]) for h in hops] == [sorted(second)] * 2
    assert _products(suth, FRESH) == _products(cape, FRESH) == second
    # Over ssh only the growth crosses the wire: the archive's older copy is rsync's basis, though
    # the new copy is written beside it (in the staging folder) until its second look.
    old_bytes, new_bytes = sum(map(len, first.values())), sum(map(len, second.values()))
    assert hops[1]["sent_bytes"] < new_bytes - old_bytes // 2, (hops[1]["sent_bytes"], old_bytes, new_bytes)
    for archive in (suth, cape):  # the older copies, moved aside whole
        (kept,) = (archive / ".obsflow-superseded").iterdir()
        assert _products(kept, FRESH) == first
    period = months_period(["this", "last"], date.today())
    checked = verify(config, period, plan_pairs(config, period), checksum=True, record=False)
    counts = checked.counts
    assert counts["missing"] == counts["size_differs"] == counts["hash_differs"] == 0 and counts["matched"] == 6

    # A copy someone changed at the archive is not ours any more: the next growth is a conflict there.
    fits = next(p for p in second if p.endswith(".A.fits"))
    with open(suth / fits, "ab") as handle:
        handle.write(b"\0" * 2880)
    time.sleep(1.1)
    fill_scan(scans[2], out)
    report = run_sync(config, SyncRequest(hop="instruments:suth"))
    assert report.outcomes[0].conflicts == [fits] and fits not in report.outcomes[0].updated
    assert (suth / fits).read_bytes() == second[fits] + b"\0" * 2880
    assert report.exit_code == 1


def test_superseded_copies_older_than_keep_days_are_removed_at_both_archives(tmp_path: Path, sshd, capsys) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    keep = "settle_seconds = 0\ngrows = true\nkeep_superseded_days = 7"
    config = load_config(_config(tmp_path, sshd, out.root, keep))
    archives = [tmp_path / "suth" / "gbt/sdfits", tmp_path / "cape" / "gbt/sdfits"]
    now = time.time()
    old, recent = (time.strftime(SUPERSEDED_VERSION, time.gmtime(now - days * 86400)) for days in (10, 1))
    for archive in archives:
        for name in (old, recent, "kept-by-hand"):
            version = archive / ".obsflow-superseded" / name / FRESH
            version.mkdir(parents=True)
            (version / "x.fits").write_bytes(b"older")

    dry = run_sync(config, SyncRequest(dry_run=True))
    assert [o.pruned for o in dry.outcomes] == [[old], [old]]
    assert all((a / ".obsflow-superseded" / old).is_dir() for a in archives)
    assert main(["sync", "-c", str(config.path), "--json"]) == 0
    hops = json.loads(capsys.readouterr().out)["hops"]
    assert [h["pruned_superseded"] for h in hops] == [[old], [old]]
    for archive in archives:  # the second over ssh
        assert sorted(p.name for p in (archive / ".obsflow-superseded").iterdir()) == sorted([recent, "kept-by-hand"])
    assert [o.pruned for o in run_sync(config, SyncRequest()).outcomes] == [[], []]

    # A .obsflow-superseded that is a symlink is not the sync's folder: nothing in it goes, one error says why.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / old).mkdir(parents=True)
    for archive in archives:
        os.rename(archive / ".obsflow-superseded", archive / "moved")
        (archive / ".obsflow-superseded").symlink_to(elsewhere)
    report = run_sync(config, SyncRequest())
    assert [o.pruned for o in report.outcomes] == [[], []]
    assert all(len(o.errors) == 1 and "symlink" in o.errors[0] for o in report.outcomes), report.outcomes
    assert (elsewhere / old).is_dir() and report.exit_code == 1


def test_a_fill_cut_off_by_a_crash_keeps_its_project_locked_until_the_filler_rolls_it_back(
    tmp_path: Path, sshd, caplog
) -> None:
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    complete = _products(out.root, FRESH)
    # The filler died mid-fill: its journal, a half-written scan past NAXIS2, and its lock stay behind.
    fits_path = out.bank_fits(FRESH, "A")
    journal = Journal(out.journal_path(FRESH))
    journal.record(undo_for(fits_path, [(0, 2880)]))
    journal.save()
    with open(fits_path, "ab") as handle:
        handle.write(b"\1" * 28800)
    dead = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    lock = lock_path(out.locks_dir, FRESH)
    lock.write_text(json.dumps(asdict(LockInfo(dead.pid, socket.gethostname(), "sdfits", time.time(), "fill"))))
    for site, locks in (("ssh", f"instruments.test:{out.locks_dir}"), ("local", str(out.locks_dir))):
        (tmp_path / site).mkdir()
        config = load_config(_config(tmp_path / site, sshd, out.root, "settle_seconds = 0", locks=locks))
        caplog.clear()
        report = run_sync(config, SyncRequest(hop="instruments:suth"))
        assert sorted(report.outcomes[0].locked) == sorted(complete) and report.outcomes[0].copied == []
        assert "left by a filler that is gone" in caplog.text
    # The filler starts again: it rolls the fill back under the lock and clears the lock; now it is copied.
    assert out.recover_all() == [str(fits_path)]
    report = run_sync(config, SyncRequest(hop="instruments:suth"))
    assert sorted(report.outcomes[0].copied) == sorted(complete) and report.exit_code == 0
    assert _products(tmp_path / "local" / "suth" / "gbt/sdfits", FRESH) == complete


def test_a_product_copied_with_a_time_set_ahead_is_replaced_once_it_grows(tmp_path: Path) -> None:
    """A product whose time was set a year ahead (cp -p from a host with a wrong clock) is copied (see
    transfer.plan.CLOCK_AHEAD_S); the filler then appends to it and its time becomes today's, which is
    older than our copy's: 'newer' held the grown file for a conflict every night."""
    (tmp_path / "products").mkdir()
    product = tmp_path / "products" / "AGBT26A_001_01.raw.vegas.A.fits"
    product.write_bytes(b"rows 1")
    ahead = time.time() + 365 * 86400
    os.utime(product, (ahead, ahead))
    (tmp_path / "suth").mkdir()
    config_path = tmp_path / "obsflow.toml"
    config_path.write_text(
        f'state_dir = "{tmp_path / "state"}"\nsettle_seconds = 1\n[instruments.products]\n'
        f'source = "{tmp_path / "products"}"\nlayout = "*"\npath = "products"\ngrows = true\n'
        f'[archives.suth]\nlocation = "{tmp_path / "suth"}"\n[[hops]]\nfrom = "instruments"\nto = "suth"\n'
    )
    copy = tmp_path / "suth" / "products" / product.name
    assert run_sync(load_config(config_path), SyncRequest()).exit_code == 0
    assert copy.read_bytes() == b"rows 1"
    with open(product, "ab") as handle:
        handle.write(b", rows 2")
    old = time.time() - 600
    os.utime(product, (old, old))
    report = run_sync(load_config(config_path), SyncRequest())
    (outcome,) = report.outcomes
    assert (outcome.conflicts, outcome.updated) == ([], [product.name]) and report.exit_code == 0
    assert copy.read_bytes() == b"rows 1, rows 2"
    (version,) = (tmp_path / "suth" / "products" / ".obsflow-superseded").iterdir()
    assert (version / product.name).read_bytes() == b"rows 1"


def test_verify_says_locked_where_the_sync_does_and_alarms_only_for_a_filler_that_is_gone(tmp_path: Path,
                                                                                          sshd) -> None:  # fmt: skip
    """Found by interplay review: the sync leaves a locked project alone (a fill under way, or one a
    crash cut off), and verify called its files missing.  Now they are listed as locked, with the
    holder: no alarm while the filler holds the lock, a finding when that filler is gone."""
    from obsflow.verify.report import render_json, render_text

    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    products = sorted(_products(out.root, FRESH))
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0"))
    period = months_period(["this", "last"], date.today())

    def check():  # the first hop only: nothing was synced yet
        return verify(config, period, plan_pairs(config, period, hops=["instruments:suth"]), record=False)

    with held(out.locks_dir, FRESH, purpose="fill scan 2"):
        live = check()
    (folder,) = live.folders
    assert folder.missing == () and [item.path for item in folder.locked] == products
    assert live.exit_code == 0 and live.counts["locked"] == len(products)
    text = render_text(live)
    assert "THE FILLER HOLDS LOCKED" in text and f"(lock {FRESH}: pid {os.getpid()}" in text

    dead = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    lock = lock_path(out.locks_dir, FRESH)
    lock.write_text(json.dumps(asdict(LockInfo(dead.pid, socket.gethostname(), "sdfits", time.time(), "fill"))))
    gone = check()
    assert gone.exit_code == 1 and f"{len(products)} locked by a filler that is gone" in gone.subject
    assert "its filler is gone" in render_text(gone) and "restart the filler" in render_text(gone)
    (entry, *_) = json.loads(render_json(gone))["folders"][0]["locked"]
    assert entry["lock"] == FRESH and entry["filler_gone"] is True

    lock.unlink()
    free = check()
    assert list(free.folders[0].missing) == products and free.folders[0].locked == () and free.exit_code == 1


def _grown_since_their_sync(tmp_path: Path, sshd) -> tuple[Config, OutputLayout]:
    """Products copied by a sync (``grows = true``), then appended to by the filler: the config and output."""
    out = OutputLayout(tmp_path / "sdfits")
    scans = _filled(tmp_path / "gbtdata", out, FRESH, scans=2)
    config = load_config(_config(tmp_path, sshd, out.root, "settle_seconds = 0\ngrows = true"))
    assert run_sync(config, SyncRequest()).exit_code == 0
    time.sleep(1.1)  # the next fill's mtimes are whole seconds later
    fill_scan(scans[1], out)
    return config, out


def test_verify_calls_a_product_that_grew_since_its_copy_grown_not_a_size_difference(tmp_path: Path, sshd) -> None:
    """Noted by interplay review: with grows = true a product the filler appended to after the night's
    sync is replaced by the next sync, yet verify (09:00, the session still observing) called every
    such file an alarm.  It is listed as grown, not an alarm; without grows it stays a size difference."""
    config, out = _grown_since_their_sync(tmp_path, sshd)
    period = months_period(["this", "last"], date.today())
    report = verify(config, period, plan_pairs(config, period, hops=["instruments:suth"]), record=False)
    (folder,) = report.folders
    grew = sorted(p for p in _products(out.root, FRESH))
    assert list(folder.grown) == grew and folder.size_differs == () and report.exit_code == 0
    plain = dataclasses.replace(config, instruments={
        name: dataclasses.replace(inst, grows=False) for name, inst in config.instruments.items()})
    strict = verify(plain, period, plan_pairs(plain, period, hops=["instruments:suth"]), record=False)
    assert sorted(d.path for d in strict.folders[0].size_differs) == grew and strict.exit_code == 1


def test_a_grown_product_stays_listed_when_another_file_is_missing(tmp_path: Path, sshd) -> None:
    """The second look that confirms a missing file rebuilt the findings without the grown ones: a
    product that grew since its copy vanished from the report (neither grown nor matched) as soon
    as any other file of the instrument was missing."""
    config, out = _grown_since_their_sync(tmp_path, sshd)
    products = sorted(_products(out.root, FRESH))
    lost = products[0]
    (tmp_path / "suth" / "gbt" / "sdfits" / lost).unlink()
    period = months_period(["this", "last"], date.today())
    report = verify(config, period, plan_pairs(config, period, hops=["instruments:suth"]), record=False)
    (folder,) = report.folders
    assert list(folder.missing) == [lost] and report.exit_code == 1
    assert list(folder.grown) == products[1:] and report.counts["grown"] == len(products) - 1


def test_a_lock_file_with_odd_fields_is_a_lock_not_a_crash(tmp_path: Path, sshd, capsys) -> None:
    """Found by security review: a lock record that was JSON with the right keys but other types
    (``"started": "yesterday"``, a pid that is text or too big for kill()) passed the lock reader, and
    the sync and verify died with a TypeError traceback when they asked whether its filler was gone.
    Such a record is a lock all the same (as any file in the lock folder that is not obsflow's JSON):
    the project stays locked, and both commands finish."""
    out = OutputLayout(tmp_path / "sdfits")
    _filled(tmp_path / "gbtdata", out, FRESH)
    products = _products(out.root, FRESH)
    out.locks_dir.mkdir(parents=True, exist_ok=True)
    odd = [{"pid": "1", "host": "x", "user": "u", "started": "yesterday"},
           {"pid": 10**30, "host": socket.gethostname(), "user": "u", "started": time.time()},
           {"pid": 1, "host": ["x"], "user": "u", "started": time.time()}]  # fmt: skip
    for site, locks in (("local", str(out.locks_dir)), ("ssh", f"instruments.test:{out.locks_dir}")):
        for record in odd:
            lock_path(out.locks_dir, FRESH).write_text(json.dumps(record))
            (tmp_path / site).mkdir(exist_ok=True)
            config_path = tmp_path / site / "obsflow.toml"
            if not config_path.exists():
                _config(tmp_path / site, sshd, out.root, "settle_seconds = 0", locks=locks)
            code = main(["sync", "-c", str(config_path), "--hop", "instruments:suth"])
            err = capsys.readouterr().err
            assert code == 1 and "Traceback" not in err, (record, err)
            assert not (tmp_path / site / "suth" / "gbt/sdfits" / FRESH).exists()
            code = main(["verify", "-c", str(config_path), "--hop", "instruments:suth", "--json"])
            printed = capsys.readouterr()
            assert code == 0 and "Traceback" not in printed.err, (record, printed.err)
            locked = json.loads(printed.out)["folders"][0]["locked"]
            assert sorted(item["path"] for item in locked) == sorted(products), record
