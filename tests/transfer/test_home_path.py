"""A remote location written ``host:~/dir``: relative to the login's home, as ssh and rsync read it.

Over the loopback sshd, which logs in as the account running the tests; its folder lives in a
temp folder under that account's home, removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsflow.config import parse_location
from obsflow.transfer.listing import hash_files, is_folder, list_files
from obsflow.transfer.remote import Shell
from obsflow.transfer.sync import SyncRequest, run_sync
from obsflow.verify.check import plan_pairs, verify
from obsflow.verify.period import Period
from tests.transfer.conftest import make_site


@pytest.fixture
def in_home() -> Iterator[Path]:
    """A fresh folder directly in the home of the account the sshd logs in (this one)."""
    folder = Path(tempfile.mkdtemp(prefix="obsflow-test-", dir=Path.home()))
    yield folder
    shutil.rmtree(folder)


def test_listing_hashing_and_test_d_read_a_tilde_path_from_the_home(in_home: Path, sshd) -> None:
    night = in_home / "root" / "2016" / "0907"
    night.mkdir(parents=True)
    (night / "SHA_1.fits").write_bytes(b"frame")
    (in_home / "root" / ".obsflow-archive").write_text("")
    shell = Shell(tuple(sshd.ssh_options))
    where = parse_location(f"suth.test:~/{in_home.name}/root")
    marker = f"~/{in_home.name}/root/.obsflow-archive"
    listing = list_files(where, ["2016/0907"], ["*.fits"], shell, marker=marker)
    assert listing.root_exists and listing.marker_present
    assert dict(listing) == dict(list_files(parse_location(str(in_home / "root")), ["2016/0907"], ["*.fits"]))
    assert hash_files(where, ["2016/0907/SHA_1.fits"], shell) == hash_files(
        parse_location(str(in_home / "root")), ["2016/0907/SHA_1.fits"]
    )
    assert is_folder(where, shell)
    assert not is_folder(parse_location(f"suth.test:~/{in_home.name}/none"), shell)


def test_a_remote_archive_under_the_home_is_synced_and_verified(tmp_path: Path, sshd, in_home: Path) -> None:
    site = make_site(tmp_path, sshd, nights=1)
    (in_home / "cape").mkdir()
    text = site.config_path.read_text().replace(f"cape.test:{site.cape}", f"cape.test:~/{in_home.name}/cape")
    site.config_path.write_text(text)
    report = run_sync(site.config, SyncRequest(today=site.today))
    assert report.exit_code == 0, [o.failure for o in report.outcomes]
    to_cape = [o for o in report.outcomes if o.hop == "suth:cape"]
    assert [len(o.copied) for o in to_cape] == [2, 2, 2]
    assert len(list((in_home / "cape").rglob("*.fits"))) == 6
    period = Period(site.today, site.today)
    checked = verify(site.config, period, plan_pairs(site.config, period, hops=["suth:cape"]), checksum=True)
    assert checked.exit_code == 0 and checked.counts["matched"] == 6


def test_an_instrument_under_the_home_is_pulled(tmp_path: Path, sshd, in_home: Path) -> None:
    """``host:~/dir`` as a source: rsync 3.2.5+ escapes a leading ``~`` of a pulled path when it checks the
    sender's names (the remote then looks for a folder named ``~``: "change_dir ... failed", exit 12);
    with that check left to obsflow (``--trust-sender``), the remote shell reads it as the home."""
    site = make_site(tmp_path, sshd, nights=1)
    shutil.copytree(site.inst / "sha", in_home / "sha")
    text = site.config_path.read_text().replace(f":{site.inst / 'sha'}\"", f":~/{in_home.name}/sha\"")
    site.config_path.write_text(text)
    report = run_sync(site.config, SyncRequest(instrument="sha", hop="instruments:suth", today=site.today))
    (outcome,) = report.outcomes
    assert report.exit_code == 0, outcome.failure or outcome.errors
    assert len(outcome.copied) == 2 and outcome.source == f"sha.test:~/{in_home.name}/sha"
