"""Shared fixtures: real sample data, and real servers started once per run on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.sshd import SshServer, start_sshd

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "sdfits_samples"


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run's own cache folder: the syncs the tests start remember their ssh connections there
    (obsflow.transfer.early), not in the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="session")
def samples() -> Path:
    """The real GBT sample files in ../shared/data/sdfits_samples (fail, never skip, if missing)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH server on 127.0.0.1 (see tests/fixtures/sshd.py)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
