"""``obsflow demo``: the main job on an embedded default, a whole simulated night."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import click

EXAMPLES = """\b
Examples:
  obsflow demo                       # everything in ./demo-work, then serve the status page
  obsflow demo --workdir /tmp/night --no-serve
  obsflow demo --scans 8 --speed 50
"""


@click.command("demo", epilog=EXAMPLES)
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default="demo-work", show_default=True,
              help="Fresh folder for the night (a previous demo's is replaced).")
@click.option("--scans", type=click.IntRange(2, 40), default=4, show_default=True,
              help="Scans to observe, in OnOff pairs (an odd number is rounded up).")
@click.option("--speed", type=click.FloatRange(1, 1000), default=20.0, show_default=True,
              help="Telescope runs this many times faster than real time.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Status page port (default: any free port).")
@click.option("--local", "use_local", is_flag=True, help="Use local folders instead of a loopback ssh server.")
@click.option("--serve/--no-serve", default=None,
              help="Keep serving the status page until Enter/Ctrl-C (default: only on a terminal).")
def command(workdir: Path, scans: int, speed: float, port: int, use_local: bool, serve: bool | None) -> int:
    """Run a whole simulated night: telescope, online filler, two-hop sync, verification, status page.

    A simulated GBT writes an OnOff project while the online daemon fills it into
    SDFITS (+ GBTIDL index and flag files); three simulated instruments write CCD
    frames over 30 nights; the sync carries them and the SDFITS products to a site
    archive and on to a remote archive (over a loopback OpenSSH server); a few files then go missing
    and the verification names them.  Everything runs from a real obsflow.toml
    written into the work folder, so every step can be repeated by hand.
    """
    from obsflow.config import load_config
    from obsflow.simulate.night import run_night
    from obsflow.web.server import make_server

    started = time.monotonic()
    scans += scans % 2  # OnOff scans come in pairs
    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty()
    if serve:
        _check_port_free(port)  # now, not after the whole night

    def say(text: str) -> None:
        click.echo(text)

    result = run_night(workdir, say, scans=scans, speed=speed, use_ssh=not use_local)
    server = make_server(load_config(result.config), "127.0.0.1", port) if serve else None
    if server is not None:
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
    out = result.workdir
    me = _obsflow_command()
    click.echo("")
    click.echo(f"done in {time.monotonic() - started:.0f} s. What to look at:")
    click.echo(f"  config            {result.config}")
    click.echo(f"  SDFITS products   {out / 'sdfits' / 'AGBT26B_042_01'}   (GBTIDL/dysh read these)")
    click.echo(f"  archives          {out / 'archive' / 'suth'}  and  {out / 'archive' / 'cape'}")
    click.echo(f"  verify report     {result.report_html}  (exit {result.verify_exit}: the missing files are named)")
    if server is not None:
        click.echo(f"  status page       {server.url}")
    else:  # a URL printed here would be dead by the time anyone opens it
        click.echo(f"  status page       {me} serve -c {result.config}   (not served: --no-serve, or no terminal)")
    click.echo(f"  again by hand     {me} sync -c {result.config}; {me} verify -c {result.config}")
    click.echo(f"                    {me} serve -c {result.config}")
    if result.over_ssh:  # its hosts were the loopback sshd, which stopped with the night
        click.echo(f"                    (over ssh only while a demo runs: `{me} demo --local` writes a config for this)")
    if server is not None:
        try:
            click.echo("serving the status page: press Enter (or Ctrl-C) to stop")
            sys.stdin.readline()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()
    ok = result.filled_scans == scans and result.sync_exit == 0 and result.verify_exit == 1
    return 0 if ok else 1


def _check_port_free(port: int) -> None:
    """UsageError if the status page could not listen on ``port`` (0: any free port will do)."""
    import socket

    from obsflow.errors import UsageError

    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise UsageError(f"cannot serve the status page on port {port}: {err.strerror or err}", "--port") from err


def _obsflow_command() -> str:
    """How to run obsflow again as this process was run: ``obsflow`` only when PATH finds this one
    (after `make demo` it is .venv/bin/obsflow, which no PATH holds until the venv is activated)."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):  # python -m obsflow
        return f"{shlex.quote(sys.executable)} -m obsflow"
    on_path = shutil.which("obsflow")
    if on_path is not None and Path(on_path).resolve() == Path(argv0).resolve():
        return "obsflow"
    return shlex.quote(str(Path(argv0).absolute()))
