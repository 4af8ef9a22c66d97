"""``obsflow serve`` as users run it: the real command in a subprocess, and its errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from obsflow.cli import main
from tests.web.conftest import Site

OBSFLOW = Path(sys.executable).parent / "obsflow"


def test_serve_answers_on_loopback_and_stops_on_ctrl_c(site: Site) -> None:
    process = subprocess.Popen(
        [str(OBSFLOW), "serve", "--config", str(site.config.path), "--port", "0", "--refresh", "5"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("obsflow: status page at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/sync.json", timeout=30) as response:
            assert b'"has_runs": true' in response.read()
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b'content="5"' in response.read()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)  # a loaded 2-core machine can be slow to unwind
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0


def test_missing_config_is_a_one_line_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obsflow: error: config file not found") and err.count("\n") == 1


def test_a_port_in_use_is_a_one_line_error(site: Site, capsys) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert main(["serve", "--config", str(site.config.path), "--port", str(port)]) == 2
        assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert err.startswith(f"obsflow: error: cannot listen on 127.0.0.1:{port}")


def _with_web(site: Site, section: str) -> str:
    path = site.config.path
    assert path is not None
    path.write_text(path.read_text() + f"\n[web]\n{section}\n")
    return str(path)


def test_a_port_out_of_range_is_a_one_line_error(site: Site, capsys) -> None:  # type: ignore[no-untyped-def]
    config = _with_web(site, "port = 70000")
    assert main(["serve", "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("obsflow: error: config: web.port: must be at most 65535 (line ") and err.count("\n") == 1


def test_an_empty_host_is_refused_not_taken_for_every_address(  # type: ignore[no-untyped-def]
    site: Site, capsys
) -> None:
    assert main(["serve", "--config", _with_web(site, 'host = ""')]) == 2  # the config check refuses it
    err = capsys.readouterr().err
    assert err.startswith("obsflow: error: config: web.host: must not be empty") and err.count("\n") == 1
    site.config.path.write_text(site.config.path.read_text().replace('host = ""', 'host = "127.0.0.1"'))
    assert main(["serve", "--config", str(site.config.path), "--host", ""]) == 2  # and so does serve
    err = capsys.readouterr().err
    assert err.startswith("obsflow: error: no address to listen on") and err.count("\n") == 1


def _first_line(site: Site, *args: str) -> tuple[str, int]:
    """The first line ``obsflow serve`` prints, and its exit status after Ctrl-C."""
    argv = [str(OBSFLOW), "serve", "--config", str(site.config.path), "--port", "0", *args]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        if line.startswith("obsflow: status page at "):
            url = line.split(" at ", 1)[1].split()[0]
            with urllib.request.urlopen(url + "api/sync.json", timeout=30) as response:
                assert b'"has_runs": true' in response.read()
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)
        if process.stderr is not None:
            process.stderr.close()
    return line, code


def test_every_loopback_address_is_loopback_and_ipv6_is_served(site: Site) -> None:
    line, code = _first_line(site, "--host", "127.1")  # 127.0.0.0/8, however written: no warning
    assert line.startswith("obsflow: status page at http://127.0.0.1:") and code == 0, line
    line, code = _first_line(site, "--host", "::1")
    assert line.startswith("obsflow: status page at http://[::1]:") and code == 0, line
